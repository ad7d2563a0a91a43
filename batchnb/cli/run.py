"""``batchnb run FILE`` and ``batchnb resume JOB``: drive a job on a pool from the shell.

A job file is batchnb YAML/JSON (the Python API's names) or Azure Batch
REST JSON (a job, a task collection ``{"value": [...]}`` or a task list).
The pool comes from the file's ``pool:`` mapping, then the options here.
Running the same file again resumes the job: finished tasks are not run
again.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="batchnb"); register(p.add_subparsers())
>>> p.parse_args(["run", "job.yaml", "--pool-nodes", "2"]).pool_nodes
2
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from .. import spec as specs
from ..spec.codec import read_text
from ..errors import SpecError
from ..states import LIVE_TASK_STATES


def register(sub) -> None:
    run = sub.add_parser("run", help="run a job file (batchnb YAML/JSON or Azure Batch JSON) and wait for it",
                         description="Run a job file on the local pool (or the one it names) with progress; "
                                     "running it again resumes the job.")
    run.add_argument("file", help="job.yaml, job.json, or Azure Batch REST JSON")
    run.add_argument("--job-id", help="the job's id (default: the file's 'id', else the file name)")
    _pool_options(run)
    run.set_defaults(func=cmd_run)
    resume = sub.add_parser("resume", help="continue a job whose driving process stopped",
                            description="Re-attach to a job in the ledger and run what is left; tasks that "
                                        "succeeded are not run again.")
    resume.add_argument("job", help="the job id")
    _pool_options(resume)
    resume.set_defaults(func=cmd_resume)


def _pool_options(p) -> None:
    p.add_argument("--pool-nodes", type=int, help="dedicated local nodes (default: the file's pool, else one per core)")
    p.add_argument("--slots", type=int, help="task slots per node")
    p.add_argument("--address", help="run on this Dask scheduler instead (backend 'address')")
    p.add_argument("--json", action="store_true", help="print the result as JSON, no progress")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _is_azure(data) -> bool:
    if isinstance(data, list):
        return True
    return isinstance(data, dict) and ("value" in data or "commandLine" in data or "poolInfo" in data)


def read_job_file(path: str, job_id: str | None = None) -> specs.JobSpec:
    """A JobSpec from a batchnb job file or Azure Batch REST JSON.

    Whatever the file holds (binary, huge, nested past reason, wrong types),
    the only error is a :class:`~batchnb.SpecError` naming the field: the
    command prints it on one line and exits 2.
    """
    text = read_text(path)
    data = None
    if text.lstrip()[:1] in ("{", "["):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None     # loads() below says what is wrong with it
    if data is not None and _is_azure(data):
        out = specs.from_azure(data)
        if isinstance(out, specs.TaskSpec):
            out = [out]
        if isinstance(out, list):
            out = specs.JobSpec(job_id or _stem(path), tasks=tuple(out))
    else:
        out = specs.loads(text)
    if not isinstance(out, specs.JobSpec):
        raise SpecError("job file", path, "holds a pool, not a job with tasks")
    if job_id and job_id != out.id:
        out = dataclasses.replace(out, id=job_id)
    return out


def _stem(path: str) -> str:
    import re
    return re.sub(r"[^A-Za-z0-9_-]", "-", Path(path).stem)[:64] or "job"


def make_pool(options: dict | None, args):
    """A Pool from a job's ``pool`` mapping and the command's options."""
    import batchnb as bnb
    from ..engine.ledger import Ledger
    data = dict(options or {})
    pool = specs.from_dict(specs.PoolSpec, data)      # validates and names a bad field
    kwargs = {f.name: getattr(pool, f.name) for f in dataclasses.fields(pool)
              if f.name not in ("name", "backend", "options")}
    kwargs.update(pool.options or {})
    backend = pool.backend
    if args.pool_nodes is not None:
        kwargs["dedicated"] = args.pool_nodes
    if args.slots is not None:
        kwargs["task_slots_per_node"] = args.slots
    if args.address:
        backend, kwargs["address"] = "address", args.address
        kwargs.pop("dedicated", None)
    ledger = Ledger(args.ledger) if getattr(args, "ledger", None) else None
    return bnb.Pool(pool.name, backend, ledger=ledger, **kwargs)


def _finish(job, args) -> int:
    result = job.wait(quiet=args.quiet or args.json)
    if args.json:
        print(json.dumps({"job_id": result.job_id, "state": result.state, "reason": result.reason,
                          "ok": result.ok, "counts": result.counts, "failures": result.failures,
                          "wall_time": round(result.wall_time, 3)}, indent=2))
    else:
        print(result)
    return 0 if result.ok else 1


def cmd_run(args) -> int:
    spec = read_job_file(args.file, args.job_id)
    if not spec.tasks:
        raise SpecError("job file", args.file, "has no tasks")
    with make_pool(spec.pool, args) as pool:
        if not (args.quiet or args.json):
            print(f"job {spec.id}: {len(spec.tasks)} tasks on pool {pool.name!r} "
                  f"({len(pool.nodes())} nodes); ledger {pool.ledger.path}", file=sys.stderr)
        job = pool.job(spec)
        return _finish(job, args)


def cmd_resume(args) -> int:
    from ..engine.offline import job_row
    from ..engine.ledger import Ledger
    from ..engine.ledger import default_ledger
    import batchnb as bnb
    ledger = Ledger(args.ledger) if args.ledger else default_ledger()
    row = job_row(ledger, args.job)
    spec = specs.from_dict(specs.JobSpec, json.loads(row["spec"]))
    if row["state"] == "completed":
        print(f"job {row['id']} already completed ({row['reason']})", file=sys.stderr)
    holder = ledger.lease(row["id"])
    if holder is not None:
        raise bnb.LeaseHeld(f"job {row['id']!r} is being dispatched by a live process ({holder}); "
                            f"watch it with 'batchnb show {row['id']}'")
    with make_pool(spec.pool or {"name": row["pool"] or "local"}, args) as pool:
        job = bnb.Job.attach(row["id"], pool=pool)
        if not (args.quiet or args.json):
            counts = job.counts()
            left = sum(counts[s.value] for s in LIVE_TASK_STATES)
            print(f"job {row['id']}: {left} of {sum(counts.values())} tasks left; resuming on pool "
                  f"{pool.name!r} (pid {os.getpid()})", file=sys.stderr)
        return _finish(job, args)
