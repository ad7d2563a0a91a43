"""What a live view costs a job's throughput: the same job with and without views subscribed, in one run.

Cases (one line each: ``case: with views X/s, without Y/s, ratio R``):

- python-noop: ``job.map(noop, range(N))`` (tiny tasks, bundled: the most events per second);
- command-true: ``/bin/true`` command tasks.

Each case runs the job without a view and with one, alternating, ``--rounds``
times, and reports the best of each (the least disturbed by the machine),
and the CPU time the views' event callbacks took, as a share of the job's
wall time (steadier than the ratio on a busy machine).
"with views" is a JobView, a PoolView and a CostView subscribed to the pool's
events, as in a notebook that shows all three. Outside a kernel the widgets'
comm sends nothing, so this measures the kernel side (folding events, reading
the ledger for failures, serialising the state), not the browser's drawing.

Usage: ``python bench/widgets.py [--python N] [--commands N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time


def noop(x):
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", type=int, default=5000)
    ap.add_argument("--commands", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("BATCHNB_HOME", tempfile.mkdtemp(prefix="batchnb-bench-"))
    import batchnb as bnb
    from batchnb.ui.views import CostView, JobView, PoolView

    cpu = [0.0]
    for cls in (JobView, PoolView, CostView):
        def timed(self, events, _orig=cls._on_events):
            t0 = time.thread_time()
            try:
                _orig(self, events)
            finally:
                cpu[0] += time.thread_time() - t0
        cls._on_events = timed

    cores = os.cpu_count() or 1
    ids = itertools.count()
    with bnb.Pool("bench-widgets", dedicated=cores) as pool:
        print(f"# {cores} cores, {cores} local nodes x 1 slot", flush=True)

        def run(kind: str, n: int, views: bool) -> float:
            job = pool.job(f"{kind}-{next(ids)}")
            shown = [JobView(job), PoolView(pool), CostView(pool, job=job)] if views else []
            t0 = time.perf_counter()
            if kind == "python-noop":
                job.map(noop, range(n))
            else:
                job.add_tasks([{"id": f"t{i}", "command": "/bin/true"} for i in range(n)])
            job.wait(quiet=True)
            took = time.perf_counter() - t0
            for v in shown:
                v.flush()
                v.close()
            if views:
                # the view saw the whole job: otherwise the case measured nothing
                assert shown[0].done == n, (shown[0].done, n)
            return n / took

        run("python-noop", 200, False)          # warm the workers' imports
        for kind, n in (("python-noop", args.python), ("command-true", args.commands)):
            without, with_ = [], []
            cpu[0] = 0.0
            for _ in range(args.rounds):
                without.append(run(kind, n, False))
                with_.append(run(kind, n, True))
            a, b = max(with_), max(without)
            wall = sum(n / r for r in with_)
            print(f"{kind}: with views {a:,.0f} tasks/s, without {b:,.0f} tasks/s, ratio {a / b:.2f} "
                  f"(views' callbacks: {1000 * cpu[0]:.0f} ms CPU in {wall:.1f} s, {100 * cpu[0] / wall:.1f}%)",
                  flush=True)


if __name__ == "__main__":
    main()
