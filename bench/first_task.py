"""Time to first task on a new pool: from nothing to a first task's start and its result.

Each run is a fresh Python process (``import batchnb`` counts, as in a new
notebook kernel): the clock starts just before the process is started, and
stops when the first task starts (the time it records itself) and when its
result is back in the driver. Cases, median of ``--runs`` runs each:

- batchnb in-kernel: ``bnb.Pool("p", dedicated=2)`` (the default local backend),
  then one command task (``date +%s.%N``) or one Python task (``job.submit``);
- batchnb detached (``detached=True``, its agent a process of its own), unless
  ``--no-detached``;
- raw Dask: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
  then ``client.submit`` of the same work.

One line per case: ``first-task-python: batchnb X ms (started S ms), detached
D ms, raw Dask Y ms, ratio R``, where R is raw Dask / batchnb (above 1: batchnb
is quicker); the target (issue 17, point 5) is batchnb <= 1,500 ms. Runs take
turns (batchnb, detached, Dask, ...), so load that comes and goes falls on all.

The children write bytecode caches to a temporary folder (a machine with
``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile every batchnb module on
each run, which no installed package does); one warm-up run of each is not
counted. Usage::

    python bench/first_task.py [--runs 5] [--no-detached]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _now() -> float:
    return time.time()


def child(case: str, kind: str) -> dict:
    """One run, in a fresh process: returns the task's own start time and its result's arrival."""
    if case == "dask":
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            if kind == "command":
                out = client.submit(subprocess.run, ["date", "+%s.%N"], capture_output=True, text=True).result()
                started = float(out.stdout)
            else:
                started = client.submit(_now, pure=False).result()
            return {"started": started, "result": time.time()}
    import batchnb as bnb
    pool = bnb.Pool("first", dedicated=2, detached=(case == "detached"))
    try:
        job = pool.job("first")
        if kind == "command":
            task = job.add_task("t", "date +%s.%N")
            job.wait(quiet=True)
            done = time.time()
            started = float(task.stdout())
        else:
            task = job.submit(_now)
            started = task.result()
            done = time.time()
        return {"started": started, "result": done}
    finally:
        pool.close()


def run_once(case: str, kind: str, cache: str) -> dict:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": cache, "BATCHNB_HOME": tempfile.mkdtemp(prefix="bnb-first-"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.time()
    out = subprocess.run([sys.executable, __file__, "--child", case, kind], env=env, capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{case} {kind} run failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"started": got["started"] - t0, "result": got["result"] - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-detached", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)), flush=True)
        return
    cases = ["batchnb"] + ([] if args.no_detached else ["detached"]) + ["dask"]
    cache = tempfile.mkdtemp(prefix="bnb-first-pyc-")
    print(f"# {os.cpu_count()} cores; median of {args.runs} fresh processes per case; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    for kind in ("command", "python"):
        times: dict[str, list[dict]] = {c: [] for c in cases}
        for case in cases:
            run_once(case, kind, cache)         # warm-up: bytecode caches, page cache
        for _ in range(args.runs):
            for case in cases:
                times[case].append(run_once(case, kind, cache))

        def med(case: str, what: str = "result") -> float:
            return statistics.median(t[what] for t in times[case]) * 1000
        detached = "" if args.no_detached else f"detached {med('detached'):,.0f} ms, "
        print(f"first-task-{kind}: batchnb {med('batchnb'):,.0f} ms (started {med('batchnb', 'started'):,.0f} ms), "
              f"{detached}raw Dask {med('dask'):,.0f} ms, ratio {med('dask') / med('batchnb'):.2f} "
              f"(target: batchnb <= 1,500 ms)", flush=True)


if __name__ == "__main__":
    main()
