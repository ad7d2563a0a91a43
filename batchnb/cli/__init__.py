"""The ``batchnb`` command.

::

    batchnb run job.yaml [--pool-nodes N] [--json]   # run a job file (or Azure Batch JSON) on the local pool
    batchnb jobs | tasks JOB | logs JOB TASK [--stderr] | show JOB
    batchnb resume JOB | terminate JOB | prune --older-than 7d | demo
    batchnb ledger check | backup DEST | salvage DEST
    batchnb pool start NAME [--dedicated N] | pool list | pool stop NAME   # detached pools
    batchnb submit job.yaml --pool NAME | wait JOB [--pool NAME]
    batchnb audit [--pool NAME | --ledger PATH] [--job J] [--since 2h] [--json]   # who did what

Exit codes a scheduler can act on: 0 all tasks succeeded, 1 some did not
(or the job is dispatched elsewhere), 2 bad input (a bad file, an unknown
job or task). ``--json`` prints one JSON document for scripts.

Verbs live in modules that expose ``register(subparsers)``: ours, and
those in :data:`VERB_MODULES`, added when they can be imported, so a
feature can bring its own verb.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import BatchError, LeaseHeld, LedgerError, SpecError

#: Modules of other features that add verbs, each with ``register(subparsers)``.
VERB_MODULES = ["batchnb.cli.cost"]
_OWN_VERBS = ["batchnb.cli.run", "batchnb.cli.jobs", "batchnb.cli.ledger", "batchnb.cli.pool", "batchnb.cli.submit",
              "batchnb.cli.audit"]


def _demo(args) -> int:
    from .demo import run
    return run(dedicated=args.nodes, quiet=args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchnb", description="Azure Batch's model on Dask, from the shell.",
                                     epilog="exit codes: 0 all tasks succeeded, 1 some did not, 2 bad input")
    parser.add_argument("--ledger", default=None, help="the ledger file (default: $BATCHNB_HOME/ledger.sqlite)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for name in _OWN_VERBS:
        importlib.import_module(name).register(sub)
    demo = sub.add_parser("demo", help="run a real demo job on the local pool")
    demo.add_argument("--nodes", type=int, default=None, help="local nodes (default: one per core)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:       # the module is there but something it needs is not: say so
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`batchnb jobs | head -1`): what it read is all it wanted.
        _quiet_stdout()
        return 0
    except SpecError as exc:
        print(f"batchnb: {exc}", file=sys.stderr)
        return 2
    except LeaseHeld as exc:
        print(f"batchnb: {exc}", file=sys.stderr)
        return 1
    except LedgerError as exc:          # a ledger that cannot be read or trusted is bad input
        print(f"batchnb: {exc}", file=sys.stderr)
        return 2
    except BatchError as exc:
        print(f"batchnb: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("batchnb: interrupted; the job is in the ledger: 'batchnb resume JOB' continues it", file=sys.stderr)
        return 130


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of a closed pipe says nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
