"""``batchnb pool start | list | stop``: detached pools from the shell.

``pool start`` starts a pool's agent in the background and returns once it
serves (its nodes are up); the pool runs until ``pool stop``, or until it
has had no job and no client for ``batchnb.agent-idle-timeout``.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="batchnb"); register(p.add_subparsers())
>>> a = p.parse_args(["pool", "start", "render", "--dedicated", "2"])
>>> a.name, a.dedicated, a.backend
('render', 2, 'local')
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import SpecError


def register(sub) -> None:
    pool = sub.add_parser("pool", help="start, list or stop detached pools (they outlive the shell)")
    verbs = pool.add_subparsers(dest="pool_command", required=True, metavar="VERB")
    p = verbs.add_parser("start", help="start a detached pool and return once it serves")
    p.add_argument("name", help="the pool's name (bnb.Pool.connect and --pool take it)")
    p.add_argument("--dedicated", type=int, help="dedicated nodes (default: one per core)")
    p.add_argument("--spot", type=int, help="spot nodes")
    p.add_argument("--slots", type=int, help="task slots per node")
    p.add_argument("--backend", default="local", help="where nodes come from (only 'local' is detached for now)")
    p.add_argument("--autoscale", metavar="FILE", help="a file holding an Azure autoscale formula")
    p.add_argument("--json", action="store_true", help="print the pool's record as JSON")
    p.set_defaults(func=cmd_start)
    p = verbs.add_parser("list", help="the detached pools running on this machine")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = verbs.add_parser("stop", help="stop a detached pool: its jobs stop, its nodes and agent end")
    p.add_argument("name", help="the pool's name or its agent's address")
    p.set_defaults(func=cmd_stop)


def cmd_start(args) -> int:
    import batchnb as bnb
    from ..agent.registry import SHOWN
    kwargs: dict = {}
    for option, keyword in (("dedicated", "dedicated"), ("spot", "spot"), ("slots", "task_slots_per_node")):
        if getattr(args, option) is not None:
            kwargs[keyword] = getattr(args, option)
    if args.autoscale:
        try:
            kwargs["autoscale"] = Path(args.autoscale).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError("--autoscale", args.autoscale, f"cannot read the formula file ({exc})") from None
    if args.backend != "local":
        raise SpecError("--backend", args.backend, "only local pools can be detached for now")
    if args.ledger:
        kwargs["ledger"] = args.ledger
    pool = bnb.Pool(args.name, args.backend, detached=True, **kwargs)
    record = {k: v for k, v in pool._record.items() if k in SHOWN}
    pool.disconnect()
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"pool {record['name']}: agent pid {record['pid']} at {record['address']}; "
              f"log {record['log']}")
    return 0


def cmd_list(args) -> int:
    import batchnb as bnb
    pools = bnb.pools()
    if args.json:
        print(json.dumps(pools, indent=2))
        return 0
    if not pools:
        print("no detached pool runs on this machine", file=sys.stderr)
        return 0
    print(f"{'NAME':20} {'PID':>7}  {'STARTED':19}  {'BACKEND':8} ADDRESS")
    for p in pools:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p["started"]))
        pid = "-" if p["pid"] is None else p["pid"]     # none: its agent runs beside a remote scheduler
        print(f"{p['name']:20} {pid:>7}  {started:19}  {p['backend'] or '':8} {p['address']}")
    return 0


def cmd_stop(args) -> int:
    import batchnb as bnb
    pool = bnb.Pool.connect(args.name)
    pool.close()
    print(f"pool {pool.name} stopped")
    return 0
