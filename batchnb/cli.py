"""The ``batchnb`` command.

Exit codes a scheduler can act on: 0 all tasks succeeded, 1 some did not,
2 bad input.
"""

from __future__ import annotations

import argparse
import sys

from .errors import BatchError, SpecError


def _demo(args) -> int:
    from ._demo import run
    return run(dedicated=args.nodes, quiet=args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchnb", description="Azure Batch's model on Dask, from the shell.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a real demo job on the local pool")
    demo.add_argument("--nodes", type=int, default=None, help="local nodes (default: one per core)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        print(f"batchnb: {exc}", file=sys.stderr)
        return 2
    except BatchError as exc:
        print(f"batchnb: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
