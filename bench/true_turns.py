"""``/bin/true`` commands through batchnb and ``xargs -P<cores>``, in turns, job after job.

Each batchnb job of N ``/bin/true`` command tasks (one pool of <cores> nodes x 1
slot, warmed up by a no-op map) is followed at once by ``seq N | xargs -P<cores> -n 1
/bin/true``, and each pair gives a ratio; the line gives them all and their median,
against issue 17's target of 0.8. The pool stays up between its jobs, so ``xargs``
runs beside it idle: its Dask processes take about 5% of a 2-core machine then (the
driver's event loop about 26 ms a second, each node about 32), which slows ``xargs``
and flatters the ratio by about as much. ``bench/peers.py``'s rounds run ``xargs``
with no pool up, and time batchnb's job in a pool a few seconds old.

Usage: ``python bench/true_turns.py [--n 1000] [--jobs 10]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _peers import load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CORES = os.cpu_count() or 1


def noop(x):
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="commands per job")
    ap.add_argument("--jobs", type=int, default=10, help="batchnb jobs, each followed by an xargs run")
    args = ap.parse_args()
    os.environ.setdefault("BATCHNB_HOME", tempfile.mkdtemp(prefix="batchnb-true-turns-"))
    import batchnb as bnb
    ratios, ours, theirs = [], [], []
    with bnb.Pool("true-turns", dedicated=CORES) as pool:
        warm = pool.job("warm")
        warm.map(noop, range(1000))
        assert warm.wait(quiet=True).ok
        for k in range(args.jobs):
            job = pool.job(f"true-{k}")
            t0 = time.perf_counter()
            job.add_tasks([{"id": f"t{i}", "command": ["/bin/true"]} for i in range(args.n)])
            assert job.wait(quiet=True).ok
            t1 = time.perf_counter()
            subprocess.run(f"seq {args.n} | xargs -P {CORES} -n 1 /bin/true", shell=True, check=True)
            t2 = time.perf_counter()
            ours.append(args.n / (t1 - t0))
            theirs.append(args.n / (t2 - t1))
            ratios.append(ours[-1] / theirs[-1])
    med = statistics.median(ratios)
    print(f"command-true in turns (n={args.n}, {args.jobs} jobs): batchnb median {statistics.median(ours):,.0f} "
          f"tasks/s, xargs -P{CORES} median {statistics.median(theirs):,.0f} tasks/s; batchnb/xargs per job "
          f"{' '.join(f'{r:.2f}' for r in ratios)}; median {med:.3f}x (target >=0.8x, "
          f"{'met' if med >= 0.8 else 'MISSED'}); {load()}", flush=True)


if __name__ == "__main__":
    main()
