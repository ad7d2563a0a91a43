"""``batchnb ledger check | backup DEST | salvage DEST``: look after the ledger file itself.

``check`` runs SQLite's integrity check and reads the schema version (exit 0
sound, 1 damaged); ``backup`` copies a ledger that a pool may be writing with
SQLite's online backup API; ``salvage`` copies every row that can still be
read into a new ledger and says how many rows of each table it kept and lost.
The ledger is ``--ledger PATH`` (before the verb) or the default one.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="batchnb"); register(p.add_subparsers())
>>> p.parse_args(["ledger", "salvage", "new.sqlite"]).dest
'new.sqlite'
"""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("ledger", help="check, back up or salvage the ledger file")
    verbs = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    c = verbs.add_parser("check", help="integrity check and schema version; exit 1 if damaged")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)
    b = verbs.add_parser("backup", help="copy the ledger online (a pool may be writing it) to DEST")
    b.add_argument("dest")
    b.set_defaults(func=cmd_backup)
    s = verbs.add_parser("salvage", help="copy every readable row into a new ledger DEST")
    s.add_argument("dest")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_salvage)


def _path(args) -> Path:
    from ..engine.ledger import default_path
    return Path(args.ledger).expanduser() if getattr(args, "ledger", None) else default_path()


def cmd_check(args) -> int:
    from ..engine.ledger_repair import check
    out = check(_path(args))
    if args.json:
        print(json.dumps(out))
    elif out["ok"]:
        counts = ", ".join(f"{t} {n}" for t, n in out["tables"].items() if n is not None)
        print(f"{out['path']}: ok (schema version {out['version']}; rows: {counts})")
    else:
        print(f"{out['path']}: DAMAGED")
        for problem in out["problems"]:
            print(f"  {problem}")
        print(f"  'batchnb --ledger {out['path']} ledger salvage NEW.sqlite' copies what can be read into a new ledger")
    return 0 if out["ok"] else 1


def cmd_backup(args) -> int:
    from ..engine.ledger_repair import backup
    print(f"backed up {_path(args)} to {backup(_path(args), args.dest)}")
    return 0


def cmd_salvage(args) -> int:
    from ..engine.ledger_repair import salvage
    report = salvage(_path(args), args.dest)
    if args.json:
        print(json.dumps({"dest": args.dest, "tables": report}))
        return 0
    print(f"salvaged {_path(args)} into {args.dest}:")
    for table, n in report.items():
        print(f"  {table}: kept {n['kept']}, lost {n['lost']}")
    lost = sum(n["lost"] for n in report.values())
    print("nothing was lost" if not lost else f"{lost} row(s) could not be read (at least); "
          f"use the new ledger with --ledger {args.dest} (or dask config 'batchnb.ledger')")
    return 0
