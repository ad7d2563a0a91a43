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
``xargs -P<cores>`` for commands, right after batchnb.

The run is R rounds (``--repeat``, 3 by default); in each round every framework
runs each case once, in a fresh process of its own. A figure is the median of
its R rounds, and a ratio the median of its R per-round ratios (each printed),
so that both sides of a ratio are measured seconds (xargs) or a minute apart, not many:
this machine's speed drifts (the same 1,000 ``/bin/true`` job here ran at 1,152
and at 1,630 tasks/s minutes apart), and a whole run of one framework followed
by a whole run of the next (as this script did before) put that drift into the
ratios. Usage: ``python bench/peers.py [--python N] [--commands N] [--chain N]
[--rss N] [--repeat R] [--only batchnb,dask,...]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import itertools
import shutil
import statistics

from _peers import case_line, load, peak_rss_mb, rate, ratio, round_ratio

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
    if "BATCHNB_HOME" not in os.environ:     # this process's own ledger, removed as it ends
        os.environ["BATCHNB_HOME"] = home = tempfile.mkdtemp(prefix="batchnb-peers-")
        import atexit
        atexit.register(shutil.rmtree, home, True)
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
        def commands(n):
            job = pool.job(f"true-{next(runs)}")
            job.add_tasks([{"id": f"t{i}", "command": ["/bin/true"]} for i in range(n)])
            assert job.wait(quiet=True).ok

        # Warmed up as the peers are, with each kind of task: a pool's first job of a kind learns
        # how long its tasks take before it bundles them (bench/first_task.py times a first task).
        mapped(100, "warm")
        commands(50)

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


def child(name: str, *argv: str) -> str | None:
    """The last line a fresh ``peers.py`` process for ``name`` printed; None when ``name`` is not
    installed, or why it failed (e.g. Ray's raylet timing out at start on a loaded machine): one
    peer failing keeps the others' lines."""
    if not installed(name):
        return None
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"# {name} failed:\n{out.stderr[-2000:]}", file=sys.stderr, flush=True)
        return f"failed (exit {out.returncode})"
    return out.stdout.strip().splitlines()[-1]


def one_round(name: str, args) -> dict | str | None:
    """``name``'s figures of one round, each case run once in a fresh process."""
    line = child(name, "--child", name, "--python", str(args.python), "--commands", str(args.commands),
                 "--chain", str(args.chain))
    return json.loads(line) if line is not None and not line.startswith("failed (") else line


def rss_of(name: str, n: int) -> float | str | None:
    """Peak RSS (MB) of a fresh driver process that maps and runs n no-op tasks through ``name``."""
    line = child(name, "--rss-child", name, "--rss", str(n))
    return float(line) if line is not None and not line.startswith("failed (") else line


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", type=int, default=1000)
    ap.add_argument("--commands", type=int, default=200)
    ap.add_argument("--chain", type=int, default=100)
    ap.add_argument("--rss", type=int, default=5000)
    ap.add_argument("--only", default=",".join(PEERS), help="comma-separated frameworks to run")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; a figure is the median of its rounds")
    ap.add_argument("--child", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--rss-child", choices=PEERS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        print(RUNNERS[args.rss_child](args, rss=args.rss)["rss"], flush=True)
        return
    if args.child:      # one round of one framework, in this fresh process: its figures as JSON
        print(json.dumps(RUNNERS[args.child](args)), flush=True)
        return
    rounds = max(1, args.repeat)
    chosen = [p for p in args.only.split(",") if p]
    print(f"# {CORES} cores; batchnb: local pool of {CORES} nodes x 1 slot; dask: LocalCluster {CORES} "
          f"processes x 1 thread; ray num_cpus={CORES}; parsl ThreadPoolExecutor({CORES}); {rounds} rounds, "
          f"each framework in a fresh process per round, xargs right after batchnb; a figure is the median "
          f"of its rounds, a ratio the median of its per-round ratios; {load()} at start", flush=True)
    xargs_name = f"xargs -P{CORES}"
    got: dict[str, list] = {p: [] for p in chosen + [xargs_name]}
    for r in range(rounds):
        for p in chosen:
            got[p].append(one_round(p, args))
            if p == "batchnb" or (p == chosen[0] and "batchnb" not in chosen):
                got[xargs_name].append({"true": rate(args.commands, lambda: subprocess.run(
                    f"seq {args.commands} | xargs -P {CORES} -n 1 /bin/true", shell=True, check=True))})
        print(f"# round {r + 1} of {rounds} done; {load()}", file=sys.stderr, flush=True)

    def per_round(p: str, k: str) -> list:
        """``p``'s figure for case ``k`` in each round (None where it did not run)."""
        return [v[k] if isinstance(v, dict) else None for v in got.get(p, [])]

    def fig(p: str, k: str):
        """The median of ``p``'s rounds for ``k``; None (not installed) or why it failed if none ran."""
        ran = [x for x in per_round(p, k) if x is not None]
        if ran:
            return statistics.median(ran)
        return next((v for v in got.get(p, []) if isinstance(v, str)), None)

    def vs(peer: str, k: str, target: float, name: str) -> str:
        return round_ratio(per_round("batchnb", k), per_round(peer, k), target, name)

    print(case_line(f"python-noop (n={args.python})", {p: fig(p, "noop") for p in chosen}, "tasks/s",
                    [vs("dask", "noop", 10, "batchnb/dask"), vs("ray", "noop", 3, "batchnb/ray")]), flush=True)
    print(case_line(f"command-true (n={args.commands})", {p: fig(p, "true") for p in chosen + [xargs_name]},
                    "tasks/s", [vs(xargs_name, "true", 0.8, "batchnb/xargs")]), flush=True)
    print(case_line(f"chain (n={args.chain})", {p: fig(p, "chain") for p in chosen}, "steps/s",
                    [vs("dask", "chain", 4, "chain batchnb/dask"), vs("ray", "chain", 1, "chain batchnb/ray")]),
          flush=True)
    rss = {p: rss_of(p, args.rss) for p in chosen}
    print(case_line(f"driver-rss (n={args.rss})", rss, "MB",
                    [ratio(rss.get("batchnb"), 1024, 1, "batchnb/1GB", lower_is_better=True)]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
