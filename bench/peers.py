"""batchnb against its peers on the same machine, in one run (issue 17, point 6).

One line per case, each peer's figure and the ratios the issue targets:

- python-noop: N no-op Python tasks; batchnb/dask >= 10x, batchnb/ray >= 3x;
- command-true: N ``/bin/true`` command tasks; batchnb/xargs -P<cores> >= 0.8x;
- chain: a dependent chain of N tiny Python tasks, steps/s; batchnb/dask >= 4x;
- driver-rss: the driver's peak RSS while N no-op tasks are mapped and run,
  each framework in a fresh process (peak RSS is a process's lifetime figure); < 1 GB.

Each framework gets the machine alone, one after the other: batchnb (a local
pool of <cores> nodes x 1 slot), raw Dask (a LocalCluster of <cores> worker
processes x 1 thread), Ray (num_cpus=<cores>) and Parsl (ThreadPoolExecutor of
<cores> threads) when importable (``pip install -e ".[bench]"``), and
``xargs -P<cores>`` for commands. Usage: ``python bench/peers.py [--python N]
[--commands N] [--chain N] [--rss N] [--repeat R] [--only batchnb,dask,...]``; each
timed figure is the median of R runs (3 by default).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

import itertools

import _peers
from _peers import case_line, load, peak_rss_mb, rate, ratio

# This checkout's batchnb, not whatever an editable install elsewhere left on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CORES = os.cpu_count() or 1
PEERS = ("batchnb", "dask", "ray", "parsl")


def noop(x):
    return x


def step(x):
    return x + 1


def run_true(_=None):
    return subprocess.run(["/bin/true"]).returncode


def run_batchnb(args, rss: int = 0) -> dict:
    os.environ.setdefault("BATCHNB_HOME", tempfile.mkdtemp(prefix="batchnb-peers-"))
    import batchnb as bnb
    out = {}
    runs = itertools.count()       # each run its own job: a name used again would add no task
    with bnb.Pool("peers", dedicated=CORES) as pool:
        def mapped(n, name):
            job = pool.job(f"{name}-{next(runs)}")
            job.map(noop, range(n))
            assert job.wait(quiet=True).ok

        if rss:
            mapped(rss, "rss")
            return {"rss": peak_rss_mb()}
        mapped(100, "warm")

        def commands(n):
            job = pool.job(f"true-{next(runs)}")
            job.add_tasks([{"id": f"t{i}", "command": ["/bin/true"]} for i in range(n)])
            assert job.wait(quiet=True).ok

        def chain(n):
            job = pool.job(f"chain-{next(runs)}")
            t = job.submit(step, 0)
            for _ in range(n - 1):
                t = job.submit(step, t)
            assert job.wait(quiet=True).ok and t.result() == n

        out["noop"] = rate(args.python, lambda: mapped(args.python, "noop"))
        out["true"] = rate(args.commands, lambda: commands(args.commands))
        out["chain"] = rate(args.chain, lambda: chain(args.chain))
    return out


def run_dask(args, rss: int = 0) -> dict:
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=CORES, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        def mapped(fn, n):
            client.gather(client.map(fn, range(n), pure=False))

        if rss:
            mapped(noop, rss)
            return {"rss": peak_rss_mb()}
        mapped(noop, 100)

        def chain(n):
            f = client.submit(step, 0, pure=False)
            for _ in range(n - 1):
                f = client.submit(step, f, pure=False)
            assert f.result() == n

        return {"noop": rate(args.python, lambda: mapped(noop, args.python)),
                "true": rate(args.commands, lambda: mapped(run_true, args.commands)),
                "chain": rate(args.chain, lambda: chain(args.chain))}


def run_ray(args, rss: int = 0) -> dict:
    import ray
    ray.init(num_cpus=CORES, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR")
    try:
        r_noop, r_step, r_true = ray.remote(noop), ray.remote(step), ray.remote(run_true)

        def mapped(fn, n):
            ray.get([fn.remote(i) for i in range(n)])

        if rss:
            mapped(r_noop, rss)
            return {"rss": peak_rss_mb()}
        mapped(r_noop, 100)

        def chain(n):
            f = r_step.remote(0)
            for _ in range(n - 1):
                f = r_step.remote(f)
            assert ray.get(f) == n

        return {"noop": rate(args.python, lambda: mapped(r_noop, args.python)),
                "true": rate(args.commands, lambda: mapped(r_true, args.commands)),
                "chain": rate(args.chain, lambda: chain(args.chain))}
    finally:
        ray.shutdown()


def run_parsl(args, rss: int = 0) -> dict:
    import parsl
    from parsl.app.app import bash_app, python_app
    from parsl.config import Config
    from parsl.executors.threads import ThreadPoolExecutor
    dfk = parsl.load(Config(executors=[ThreadPoolExecutor(max_threads=CORES)],
                            run_dir=tempfile.mkdtemp(prefix="parsl-peers-")))
    try:
        p_noop, p_step = python_app(noop), python_app(step)

        @bash_app
        def p_true():
            return "/bin/true"

        def mapped(n):
            [f.result() for f in [p_noop(i) for i in range(n)]]

        if rss:
            mapped(rss)
            return {"rss": peak_rss_mb()}
        mapped(100)

        def chain(n):
            f = p_step(0)
            for _ in range(n - 1):
                f = p_step(f)
            assert f.result() == n

        return {"noop": rate(args.python, lambda: mapped(args.python)),
                "true": rate(args.commands, lambda: [f.result() for f in [p_true() for _ in range(args.commands)]]),
                "chain": rate(args.chain, lambda: chain(args.chain))}
    finally:
        dfk.cleanup()
        parsl.clear()


RUNNERS = {"batchnb": run_batchnb, "dask": run_dask, "ray": run_ray, "parsl": run_parsl}


def installed(name: str) -> bool:
    return name in ("batchnb", "dask") or importlib.util.find_spec(name) is not None


def attempt(name: str, fn):
    """fn()'s figures, None when the peer is not installed, or why it failed (e.g. Ray's
    raylet timing out at start on a loaded machine): one peer failing keeps the others' lines."""
    if not installed(name):
        return None
    try:
        return fn()
    except Exception as e:
        print(f"# {name} failed: {e!r}", file=sys.stderr, flush=True)
        return f"failed ({type(e).__name__})"


def rss_of(name: str, n: int) -> float:
    """Peak RSS (MB) of a fresh driver process that maps and runs n no-op tasks through ``name``."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", name, "--rss", str(n)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", type=int, default=1000)
    ap.add_argument("--commands", type=int, default=200)
    ap.add_argument("--chain", type=int, default=100)
    ap.add_argument("--rss", type=int, default=5000)
    ap.add_argument("--only", default=",".join(PEERS), help="comma-separated frameworks to run")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each timed case; its figure is their median")
    ap.add_argument("--rss-child", choices=PEERS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    _peers.REPEAT[0] = max(1, args.repeat)
    if args.rss_child:
        print(RUNNERS[args.rss_child](args, rss=args.rss)["rss"], flush=True)
        return
    chosen = [p for p in args.only.split(",") if p]
    print(f"# {CORES} cores; batchnb: local pool of {CORES} nodes x 1 slot; dask: LocalCluster {CORES} "
          f"processes x 1 thread; ray num_cpus={CORES}; parsl ThreadPoolExecutor({CORES}); median of "
          f"{_peers.REPEAT[0]} runs per figure; {load()} at start",
          flush=True)
    got = {p: attempt(p, lambda: RUNNERS[p](args)) for p in chosen}

    def fig(p, k):
        v = got.get(p)
        return v[k] if isinstance(v, dict) else v
    xargs = rate(args.commands, lambda: subprocess.run(
        f"seq {args.commands} | xargs -P {CORES} -n 1 /bin/true", shell=True, check=True))
    print(case_line(f"python-noop (n={args.python})", {p: fig(p, "noop") for p in chosen}, "tasks/s",
                    [ratio(fig("batchnb", "noop"), fig("dask", "noop"), 10, "batchnb/dask"),
                     ratio(fig("batchnb", "noop"), fig("ray", "noop"), 3, "batchnb/ray")]), flush=True)
    print(case_line(f"command-true (n={args.commands})",
                    {**{p: fig(p, "true") for p in chosen}, f"xargs -P{CORES}": xargs}, "tasks/s",
                    [ratio(fig("batchnb", "true"), xargs, 0.8, "batchnb/xargs")]), flush=True)
    print(case_line(f"chain (n={args.chain})", {p: fig(p, "chain") for p in chosen}, "steps/s",
                    [ratio(fig("batchnb", "chain"), fig("dask", "chain"), 4, "chain batchnb/dask"),
                     ratio(fig("batchnb", "chain"), fig("ray", "chain"), 1, "chain batchnb/ray")]), flush=True)
    rss = {p: attempt(p, lambda: rss_of(p, args.rss)) for p in chosen}
    print(case_line(f"driver-rss (n={args.rss})", rss, "MB",
                    [ratio(rss.get("batchnb"), 1024, 1, "batchnb/1GB", lower_is_better=True)]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
