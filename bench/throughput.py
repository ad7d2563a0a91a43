"""Throughput of batchnb against raw Dask and ``xargs -P`` on the same machine, in one run.

Cases (one line each: ``case: batchnb X/s, baseline Y/s, ratio R``):

- python-noop: ``job.map(noop, range(N))`` vs ``client.map(noop, range(N))``
  on the same LocalCluster (the pool's own client);
- command-true: ``/bin/true`` command tasks vs ``xargs -P <cores> -n1 /bin/true``
  and vs raw Dask tasks that run ``subprocess.run(["/bin/true"])``;
- bulk-add: adding N tasks to a job (recorded in the ledger) vs submitting N
  futures to Dask, with the driver's memory per task for both.

Usage: ``python bench/throughput.py [--python N] [--commands N] [--bulk N]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import psutil


def noop(x):
    return x


def run_true(_):
    return subprocess.run(["/bin/true"]).returncode


def line(case: str, ours: float, base: float, base_name: str, unit: str = "tasks/s") -> None:
    print(f"{case}: batchnb {ours:,.0f} {unit}, {base_name} {base:,.0f} {unit}, ratio {ours / base:.2f}", flush=True)


def rate(n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", type=int, default=3000)
    ap.add_argument("--commands", type=int, default=600)
    ap.add_argument("--bulk", type=int, default=20000)
    args = ap.parse_args()
    os.environ.setdefault("BATCHNB_HOME", tempfile.mkdtemp(prefix="batchnb-bench-"))
    import batchnb as bnb
    cores = os.cpu_count() or 1
    with bnb.Pool("bench", dedicated=cores) as pool:
        client = pool.client
        print(f"# {cores} cores, {cores} local nodes x 1 slot; dask {__import__('dask').__version__}", flush=True)

        def dask_map(fn, n):
            futures = client.map(fn, range(n), pure=False)
            client.gather(futures)
            del futures

        def batchnb_map(fn, n, name):
            job = pool.job(name)
            job.map(fn, range(n))
            assert job.wait(quiet=True).ok

        def batchnb_commands(n, name):
            job = pool.job(name)
            job.add_tasks([bnb.TaskSpec(f"t{i}", ["/bin/true"]) for i in range(n)])
            assert job.wait(quiet=True).ok

        dask_map(noop, 200)                         # warm both paths
        batchnb_map(noop, 200, "warm")
        n = args.python
        base = rate(n, lambda: dask_map(noop, n))
        ours = rate(n, lambda: batchnb_map(noop, n, "python-noop"))
        line(f"python-noop (n={n})", ours, base, "dask client.map")

        n = args.commands
        xargs = rate(n, lambda: subprocess.run(
            f"seq {n} | xargs -P {cores} -n 1 sh -c /bin/true", shell=True, check=True))
        raw = rate(n, lambda: dask_map(run_true, n))
        ours = rate(n, lambda: batchnb_commands(n, "command-true"))
        line(f"command-true (n={n})", ours, xargs, f"xargs -P{cores}")
        line(f"command-true (n={n})", ours, raw, "dask subprocess.run")

        n = args.bulk
        proc = psutil.Process()
        rss0 = proc.memory_info().rss
        job = pool.job("bulk-add")
        specs = [bnb.TaskSpec(f"t{i}", ["/bin/true"], depends_on=["gate"]) for i in range(n)]
        job.add_task("gate", "sleep 3600")          # holds everything pending: we measure adding only
        ours = rate(n, lambda: job.add_tasks(specs))
        ours_mem = (proc.memory_info().rss - rss0) / n
        job.terminate()
        rss1 = proc.memory_info().rss
        t0 = time.perf_counter()
        # A gate that never runs (pinned to a worker that does not exist) holds the futures
        # pending without taking a worker thread, as batchnb's pending gate task does.
        gate = client.submit(noop, 0, workers=["tcp://127.0.0.1:1"], allow_other_workers=False, pure=False)
        futures = [client.submit(noop, gate, i, pure=False) for i in range(n)]
        base = n / (time.perf_counter() - t0)
        base_mem = (proc.memory_info().rss - rss1) / n
        client.cancel([gate] + futures)
        line(f"bulk-add (n={n})", ours, base, "dask submit")
        print(f"bulk-add memory: batchnb {ours_mem / 1024:.1f} kB/task in the driver, "
              f"dask {base_mem / 1024:.1f} kB/future (client side)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
