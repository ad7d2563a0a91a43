"""A detached pool against an in-kernel one, same machine, same run.

Cases (one line each: ``case: detached X, in-kernel Y, ratio R``; R is
detached / in-kernel for rates, in-kernel / detached for latencies, so above 1
is better for the detached pool either way; the target is R >= 0.8):

- first-task: from ``job.add_task`` of a one-task job on a warm pool to
  ``job.wait()`` returning (what a user waits for a quick answer);
- python-noop: ``job.map(noop, range(N))`` then ``job.wait()``;
- command-true: N ``/bin/true`` command tasks then ``job.wait()``.

Each pool is made, measured and closed before the other is made, so the two
never share the cores. Usage: ``python bench/detached.py [--python N]
[--commands N] [--first K]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

# This checkout's batchnb, not whatever an editable install elsewhere left on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def noop(x):
    return x


def measure(pool, tag: str, args) -> dict:
    out = {}
    latencies = []
    for i in range(args.first):
        job = pool.job(f"{tag}-first-{i}")
        t0 = time.perf_counter()
        job.add_task("t", "true")
        job.wait(quiet=True)
        latencies.append(time.perf_counter() - t0)
    out["first-task"] = statistics.median(latencies)
    job = pool.job(f"{tag}-noop")
    t0 = time.perf_counter()
    job.map(noop, range(args.python))
    result = job.wait(quiet=True)
    out["python-noop"] = args.python / (time.perf_counter() - t0)
    assert result.counts == {"succeeded": args.python}, result
    job = pool.job(f"{tag}-true")
    t0 = time.perf_counter()
    job.add_tasks([{"id": f"t{i}", "command": ["/bin/true"]} for i in range(args.commands)])
    result = job.wait(quiet=True)
    out["command-true"] = args.commands / (time.perf_counter() - t0)
    assert result.counts == {"succeeded": args.commands}, result
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", type=int, default=3000)
    ap.add_argument("--commands", type=int, default=600)
    ap.add_argument("--first", type=int, default=5, help="one-task jobs timed for first-task (median)")
    args = ap.parse_args()
    os.environ.setdefault("BATCHNB_HOME", tempfile.mkdtemp(prefix="batchnb-bench-"))
    import batchnb as bnb
    cores = os.cpu_count() or 1
    print(f"# {cores} cores, {cores} local nodes x 1 slot; home {os.environ['BATCHNB_HOME']}", flush=True)
    with bnb.Pool("bench-kernel", dedicated=cores) as pool:
        inkernel = measure(pool, "kernel", args)
    pool = bnb.Pool("bench-detached", dedicated=cores, detached=True)
    try:
        detached = measure(pool, "detached", args)
    finally:
        pool.close()
    t = "first-task"
    print(f"{t}: detached {detached[t] * 1000:,.0f} ms, in-kernel {inkernel[t] * 1000:,.0f} ms, "
          f"ratio {inkernel[t] / detached[t]:.2f}", flush=True)
    for case in ("python-noop", "command-true"):
        print(f"{case}: detached {detached[case]:,.0f} tasks/s, in-kernel {inkernel[case]:,.0f} tasks/s, "
              f"ratio {detached[case] / inkernel[case]:.2f}", flush=True)


if __name__ == "__main__":
    main()
