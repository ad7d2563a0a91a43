"""``batchnb cost``: what jobs and pools cost, rebuilt from the ledger.

::

    batchnb cost                      # every pool: total, idle, each job's share
    batchnb cost sweep                # one job: its tasks' shares (the costliest first)
    batchnb cost --by cost_center     # totals per value of a tag (idle apart)
    batchnb cost sweep --json         # machine-readable, every row
    batchnb cost --vm-size D8s_v5     # the same node timeline priced on another size

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="batchnb"); register(parser.add_subparsers(dest="command"))
>>> parser.parse_args(["cost", "sweep", "--by", "team"]).by
'team'
"""

from __future__ import annotations

import argparse
import json
import sys

from ..cost.value import IDLE


def register(subparsers) -> None:
    """Add the ``cost`` verb to the ``batchnb`` command's subparsers."""
    p = subparsers.add_parser("cost", help="what jobs and pools cost (from the ledger)",
                              description="What jobs and pools cost: node time x price, each task's and job's "
                                          "share, idle time apart; rebuilt from the ledger.")
    p.add_argument("job", nargs="?", help="a job id (default: every pool in the ledger)")
    p.add_argument("--by", metavar="TAG", help="group the amounts by the value of this tag")
    p.add_argument("--json", action="store_true", help="print JSON (every row)")
    p.add_argument("--pool", help="only this pool")
    p.add_argument("--vm-size", dest="vm_size", help="price the same node timeline as this VM size")
    p.add_argument("--region", help="the region of --vm-size's price")
    p.add_argument("--prices", help="a price file (JSON or YAML) to price with")
    p.add_argument("--limit", type=int, default=20, help="rows shown in text output (default 20; 0: all)")
    p.add_argument("--ledger", default=argparse.SUPPRESS, help="the ledger file (default: <home>/ledger.sqlite)")
    p.set_defaults(func=run)


def _ledger(args):
    from ..engine.ledger import Ledger
    from ..engine.ledger import default_ledger
    path = getattr(args, "ledger", None)
    return Ledger(path) if path else default_ledger()


def run(args, out=None) -> int:
    """Print the report; 0 on success (bad input raises SpecError: exit code 2)."""
    from ..cost.replay import cost_from_ledger, priced_pools
    from ..cost.meter import PriceTable
    out = out or sys.stdout
    ledger = _ledger(args)
    prices = PriceTable.load(args.prices) if args.prices else None
    opts = {"prices": prices, "vm_size": args.vm_size, "region": args.region}
    if args.job:
        costs = [cost_from_ledger(ledger, job_id=args.job, **opts)]
    else:
        names = [args.pool] if args.pool else priced_pools(ledger)
        costs = [cost_from_ledger(ledger, pool=name, **opts) for name in names]
        pools = names
    if args.json:
        if args.job:
            doc = _doc(costs[0], args.by)
        else:
            doc = {"currency": costs[0].currency if costs else "USD", "total": sum(c.total for c in costs),
                   "pools": [{"pool": name, **_doc(c, args.by)} for name, c in zip(pools, costs)]}
            if args.by:
                doc["by_tag"] = _by_tag(costs, args.by)
        json.dump(doc, out, indent=1, default=str)
        out.write("\n")
        return 0
    if args.job:
        _print_job(costs[0], args, out)
    elif not costs:
        out.write(f"no pool recorded its prices in {ledger.path}\n")
    else:
        for name, c in zip(pools, costs):
            _print_pool(name, c, args, out)
        if args.by and len(costs) > 1:
            out.write(f"\nall pools by {args.by}:\n")
            _print_groups(_by_tag(costs, args.by), costs[0].currency, out)
    return 0


def _doc(c, by: str | None) -> dict:
    doc = {"job_id": c.job_id, "total": c.total, "currency": c.currency, "by_group": c.by_group,
           "node_seconds": c.node_seconds, "busy": c.busy, "idle": c.idle, "tags": c.tags, "rows": list(c.rows)}
    if c.job_id is None:
        doc.pop("job_id")
    if by:
        doc["by_tag"] = {str(k): v for k, v in c.by_tag(by).items()}
    return doc


def _by_tag(costs, key: str) -> dict:
    out: dict = {}
    for c in costs:
        for k, v in c.by_tag(key).items():
            out[str(k)] = out.get(str(k), 0.0) + v
    return out


def _money(x: float, currency: str) -> str:
    return f"{x:.6g} {currency}"


def _print_groups(groups: dict, currency: str, out) -> None:
    width = max([len(str(k)) for k in groups] + [5])
    for k, v in sorted(groups.items(), key=lambda kv: (kv[0] == IDLE, -kv[1])):
        out.write(f"  {str(k):<{width}}  {_money(v, currency)}\n")


def _table(rows: list, columns: list, limit: int, out) -> None:
    rows = sorted(rows, key=lambda r: -r["cost"])
    shown = rows if limit <= 0 else rows[:limit]
    cells = [[_cell(r.get(c)) for c in columns] for r in shown]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    out.write("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)) + "\n")
    for row in cells:
        out.write("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)) + "\n")
    if len(shown) < len(rows):
        out.write(f"  ... {len(rows) - len(shown)} more (--limit 0 shows all, --json gives every row)\n")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


def _tag_columns(c) -> list:
    fixed = {"job_id", "task_id", "tasks", "attempts", "seconds", "slot_seconds", "node_seconds",
             "dedicated", "spot", "cost"}
    return sorted({k for r in c.rows for k in r} - fixed)


def _print_job(c, args, out) -> None:
    cur = c.currency
    out.write(f"job {c.job_id}: {_money(c.total, cur)} (dedicated {_money(c.by_group['dedicated'], cur)}, "
              f"spot {_money(c.by_group['spot'], cur)}), {len(c.rows)} tasks\n")
    if c.tags:
        out.write("tags: " + ", ".join(f"{k}={v}" for k, v in sorted(c.tags.items())) + "\n")
    if args.by:
        out.write(f"by {args.by}:\n")
        _print_groups(c.by_tag(args.by), cur, out)
        return
    if c.rows:
        _table(list(c.rows), ["task_id", "attempts", "seconds", "node_seconds", "cost"], args.limit, out)


def _print_pool(name: str, c, args, out) -> None:
    cur = c.currency
    out.write(f"pool {name}: {_money(c.total, cur)} (dedicated {_money(c.by_group['dedicated'], cur)}, "
              f"spot {_money(c.by_group['spot'], cur)}); held by tasks {_money(c.busy, cur)}, "
              f"idle {_money(c.idle, cur)}; {sum(c.node_seconds.values()) / 3600:.4g} node-hours\n")
    if args.by:
        _print_groups(c.by_tag(args.by), cur, out)
    elif c.rows:
        _table(list(c.rows), ["job_id", "tasks", "attempts", "node_seconds", "cost", *_tag_columns(c)],
               args.limit, out)
