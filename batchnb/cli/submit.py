"""``batchnb submit job.yaml --pool NAME`` and ``batchnb wait JOB``: jobs on detached pools.

``submit`` hands a job file (batchnb YAML/JSON or Azure Batch REST JSON) to
a running detached pool and returns at once, printing the job's id; the
pool's agent runs it with no shell attached. ``wait`` waits for a job and
exits as ``batchnb run`` does: 0 when every task succeeded, 1 when some did
not, 2 for bad input.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="batchnb"); register(p.add_subparsers())
>>> a = p.parse_args(["submit", "job.yaml", "--pool", "render"])
>>> a.file, a.pool
('job.yaml', 'render')
"""

from __future__ import annotations

import sys

from ..errors import SpecError


def register(sub) -> None:
    p = sub.add_parser("submit", help="hand a job file to a detached pool; print the job id and return")
    p.add_argument("file", help="job.yaml, job.json, or Azure Batch REST JSON")
    p.add_argument("--pool", help="the detached pool (default: the file's pool: name, if one runs)")
    p.add_argument("--job-id", help="the job's id (default: the file's 'id', else the file name)")
    p.set_defaults(func=cmd_submit)
    p = sub.add_parser("wait", help="wait for a job; exit 0 if every task succeeded, 1 if not")
    p.add_argument("job", help="the job id")
    p.add_argument("--pool", help="the detached pool that runs it (default: watch the ledger)")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON, no progress")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_wait)


def cmd_submit(args) -> int:
    import batchnb as bnb
    from .run import read_job_file
    spec = read_job_file(args.file, args.job_id)
    if not spec.tasks:
        raise SpecError("job file", args.file, "has no tasks")
    name = args.pool or (spec.pool or {}).get("name")
    if not name:
        raise SpecError("--pool", None, "name the detached pool to run the job on ('batchnb pool list' "
                        "shows them)")
    pool = bnb.Pool.connect(name)
    try:
        job = pool.job(spec)
        print(job.id)
        print(f"job {job.id}: {len(spec.tasks)} tasks submitted to pool {pool.name!r}; "
              f"'batchnb wait {job.id}' waits for it", file=sys.stderr)
    finally:
        pool.disconnect()
    return 0


def cmd_wait(args) -> int:
    import batchnb as bnb
    from ..engine.ledger import Ledger
    if args.pool:
        pool = bnb.Pool.connect(args.pool)
        try:
            return _finish(pool.job(args.job), args)
        finally:
            pool.disconnect()
    ledger = Ledger(args.ledger) if args.ledger else None
    return _finish(bnb.Job.attach(args.job, ledger=ledger), args)


def _finish(job, args) -> int:
    from .run import _finish as report
    if args.timeout is not None:        # WaitTimeout: exit 1, the job goes on
        job.wait(timeout=args.timeout, quiet=args.quiet or args.json)
    return report(job, args)
