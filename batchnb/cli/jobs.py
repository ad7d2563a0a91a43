"""``batchnb jobs | tasks | logs | show | terminate | prune``: the ledger from the shell.

These read (or end) jobs without starting a pool, so they answer at once,
even while another process drives the job.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="batchnb"); register(p.add_subparsers())
>>> p.parse_args(["logs", "j", "t", "--stderr"]).stderr
True
"""

from __future__ import annotations

import json
import sys
import time

from ..errors import SpecError
from ..states import TASK_STATE_ORDER, UNSUCCESSFUL_TASK_STATES, JobState

FINAL_BAD = tuple(s.value for s in TASK_STATE_ORDER if s in UNSUCCESSFUL_TASK_STATES)


def register(sub) -> None:
    p = sub.add_parser("jobs", help="list the jobs in the ledger")
    p.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)
    p = sub.add_parser("tasks", help="list a job's tasks")
    p.add_argument("job")
    p.add_argument("--state", choices=[s.value for s in TASK_STATE_ORDER], help="only tasks in this state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)
    p = sub.add_parser("logs", help="print a task's stdout (or stderr)")
    p.add_argument("job")
    p.add_argument("task")
    p.add_argument("--stderr", action="store_true", help="stderr.txt instead of stdout.txt")
    p.add_argument("--attempt", type=int, help="this attempt (default: the last)")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("show", help="a job's summary; exit 1 if some task failed")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("terminate", help="end a job: kill its running tasks, cancel the rest")
    p.add_argument("job")
    p.add_argument("--reason", default="terminated")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a live driver to end it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_terminate)
    p = sub.add_parser("prune", help="remove finished jobs (folders, results, ledger rows)")
    p.add_argument("--older-than", default="7d", help="finished more than this long ago (default 7d)")
    p.add_argument("--dry-run", action="store_true", help="only say which jobs would go")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune)


def _ledger(args):
    from ..engine.ledger import Ledger
    # Not the pool's default_ledger(): importing the pool would load Dask for a listing.
    return Ledger(getattr(args, "ledger", None))


def _ledger_path(args):
    """Where the ledger is, found without creating the home folder (as default_path() would)."""
    import os
    from pathlib import Path
    from .. import _config
    given = getattr(args, "ledger", None) or _config.get("ledger")
    if given:
        return Path(given).expanduser()
    return Path(os.environ.get("BATCHNB_HOME") or _config.get("home")).expanduser() / "ledger.sqlite"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _table(rows: list[list], headers: list[str]) -> str:
    cells = [headers] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _counts_text(counts: dict) -> str:
    order = tuple(s.value for s in (*TASK_STATE_ORDER[3:], *TASK_STATE_ORDER[2::-1]))
    return " ".join(f"{s}={counts[s]}" for s in order if counts.get(s)) or "no tasks"


def cmd_jobs(args) -> int:
    from ..engine.offline import jobs
    # Listing reads: a home with no ledger yet has no jobs, and gets no ledger file from a listing.
    found = jobs(_ledger(args)) if _ledger_path(args).exists() else []
    rows = [j for j in found if args.state is None or j["state"] == args.state]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no jobs in the ledger")
        return 0
    print(_table([[j["id"], j["state"], j["pool"], sum(j["counts"].values()), _counts_text(j["counts"]),
                   _when(j["created"]), j["reason"] or ""] for j in rows],
                 ["JOB", "STATE", "POOL", "TASKS", "COUNTS", "CREATED", "REASON"]))
    return 0


def cmd_tasks(args) -> int:
    from ..engine.offline import job_row
    from ..task import task_info
    ledger = _ledger(args)
    row = job_row(ledger, args.job)
    rows = ledger.tasks(row["id"], states=(args.state,) if args.state else None)
    infos = [task_info(r) for r in rows]
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
    else:
        print(_table([[i.id, i.state, i.exit_code, i.attempts, i.requeues, i.node,
                       (i.failure or i.command)[:60]] for i in infos],
                     ["TASK", "STATE", "EXIT", "ATTEMPTS", "REQUEUES", "NODE", "COMMAND / FAILURE"]))
    return 0


def cmd_logs(args) -> int:
    from ..engine.offline import job_row
    from ..job import Job
    ledger = _ledger(args)
    row = job_row(ledger, args.job)
    job = Job.attach(row["id"], ledger=ledger)
    if ledger.task(row["id"], args.task) is None:
        raise SpecError("task id", args.task, f"not in job {row['id']!r}")
    task = job.task(args.task)
    if args.attempt is not None:
        attempts = {a["n"]: a for a in task.attempts}
        if args.attempt not in attempts:
            raise SpecError("--attempt", args.attempt, f"task {args.task!r} has attempts {sorted(attempts)}")
        text = _attempt_log(attempts[args.attempt], "stderr" if args.stderr else "stdout")
    else:
        text = task.stderr() if args.stderr else task.stdout()
    sys.stdout.write(text)
    return 0


def _attempt_log(attempt: dict, name: str) -> str:
    from pathlib import Path
    if attempt["task_dir"]:
        try:
            return (Path(attempt["task_dir"]) / f"{name}.txt").read_text(errors="replace")
        except OSError:
            pass
    return attempt[f"{name}_tail"] or ""


def cmd_show(args) -> int:
    from ..engine.offline import summary
    s = summary(args.job, _ledger(args))
    bad = sum(s["counts"].get(k, 0) for k in FINAL_BAD)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        fact = ", all tasks complete" if s["all_tasks_complete"] and s["state"] != "completed" else ""
        print(f"job {s['id']} on pool {s['pool']}: {s['state']}{fact}" + (f", {s['reason']}" if s["reason"] else ""))
        print(f"  tasks: {s['total']} ({_counts_text(s['counts'])})")
        print(f"  created {_when(s['created'])}, ended {_when(s['ended'])}, wall time {s['wall_time']:.1f}s")
        if s["dispatched_by"]:
            print(f"  dispatched by {s['dispatched_by']}")
        for f in s["failures"][:20]:
            code = f" exit {f['exit_code']}" if f["exit_code"] is not None else ""
            print(f"  {f['task_id']}: {f['state']}{code}" + (f" - {f['message']}" if f["message"] else ""))
    return 1 if bad or s["reason"] not in (None, "all_tasks_complete") else 0


def cmd_terminate(args) -> int:
    from ..engine.offline import terminate_job
    s = terminate_job(args.job, _ledger(args), reason=args.reason, timeout=args.timeout)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"job {s['id']}: {s['state']} ({s['reason']}); {_counts_text(s['counts'])}")
    return 0


def cmd_prune(args) -> int:
    from ..engine.offline import prune
    removed = prune(args.older_than, _ledger(args), dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"removed": removed, "dry_run": args.dry_run}))
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} job(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0
