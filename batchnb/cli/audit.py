"""``batchnb audit``: who did what to pools, jobs and schedules, one line per record.

Reads the ledger's append-only audit log (:mod:`batchnb.engine.audit`):
the default ledger, or ``--ledger PATH``. ``--pool NAME`` keeps that pool's
records; when a detached pool of that name runs, they are asked of its
agent (so a pool's roles decide who may read them). ``--since`` takes a
duration back from now (``30m``, ``2h``, ``1d``), an ISO date or time
(UTC), or seconds since the epoch.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="batchnb"); register(p.add_subparsers())
>>> a = p.parse_args(["audit", "--job", "j1", "--since", "2h", "--json"])
>>> a.job, a.since, a.json
('j1', '2h', True)
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("audit", help="the audit log: time, identity, action, target, outcome")
    p.add_argument("--pool", help="only this pool's records (asked of its agent when it runs detached)")
    p.add_argument("--ledger", dest="audit_ledger", metavar="PATH",
                   help="the ledger file (default: $BATCHNB_HOME/ledger.sqlite)")
    p.add_argument("--job", help="only the records of this job")
    p.add_argument("--identity", help="only what this identity did")
    p.add_argument("--since", help="only records since: 30m, 2h, 1d, an ISO date/time (UTC), or epoch seconds")
    p.add_argument("--json", action="store_true", help="one JSON list of records")
    p.set_defaults(func=cmd_audit)


def _since(value: str | None):
    # Epoch seconds typed on a command line arrive as text.
    try:
        return float(value) if value is not None else None
    except ValueError:
        return value


def cmd_audit(args) -> int:
    from ..engine import audit
    since = audit.since_time(_since(args.since))     # a bad value: SpecError (exit 2) before any lookup
    records = _from_agent(args, since)
    if records is None:
        from ..engine.ledger import Ledger
        ledger = Ledger(args.audit_ledger or getattr(args, "ledger", None))
        records = audit.read(ledger, since, args.job, args.identity, pool=args.pool)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
    else:
        for r in records:
            print(r)
    return 0


def _from_agent(args, since):
    """The records of the running detached pool ``--pool`` names, through its agent; None if none runs
    (or a ledger was named: then the file is what is asked about)."""
    if not args.pool or args.audit_ledger or getattr(args, "ledger", None):
        return None
    from ..agent.registry import pools
    if not any((r.get("name") or "").lower() == args.pool.lower() for r in pools()):
        return None
    import batchnb as bnb
    pool = bnb.Pool.connect(args.pool)
    try:
        return pool.audit(since=since, job=args.job, identity=args.identity)
    finally:
        pool.disconnect()
