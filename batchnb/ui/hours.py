"""Node-hours from the ledger's node history, and a job's prep and release runs per node:
small folds of ledger rows that the view models show.

>>> prep_lines([], [])
[]
"""

from __future__ import annotations

from typing import Iterable

from ..states import BILLED_NODE_STATES, NODE_GROUPS

BILLED = frozenset(s.value for s in BILLED_NODE_STATES)


def _natural(node_id: str):
    head, _, tail = node_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (node_id, 0)


def node_hours(history: Iterable[dict], now: float, since: float = 0.0) -> dict:
    """Billed node-hours per group from the ledger's node history (rows of node, group, state, time).

    A node bills while in a billed state (starting, idle, running, ...), as the cloud does.
    Only time after ``since`` counts: the ledger keeps nodes of earlier pools of the same name.

    >>> rows = [{"node_id": "d-0", "grp": "dedicated", "state": "idle", "time": 0.0},
    ...         {"node_id": "d-0", "grp": "dedicated", "state": "offline", "time": 1800.0}]
    >>> node_hours(rows, now=3600.0)
    {'node_hours': {'dedicated': 0.5, 'spot': 0.0}, 'nodes_up': {'dedicated': 0, 'spot': 0}}
    """
    by_node: dict[str, list] = {}
    for row in history:
        by_node.setdefault(row["node_id"], []).append(row)
    hours = dict.fromkeys(NODE_GROUPS, 0.0)
    up = dict.fromkeys(NODE_GROUPS, 0)
    for rows in by_node.values():
        rows.sort(key=lambda r: r["time"])
        group = rows[-1].get("grp") or rows[-1].get("group") or "dedicated"
        for a, b in zip(rows, rows[1:] + [None]):
            if a["state"] in BILLED:
                end = now if b is None else b["time"]
                hours[group] = hours.get(group, 0.0) + max(0.0, end - max(a["time"], since)) / 3600
        if rows[-1]["state"] in BILLED and rows[-1]["time"] >= since:
            up[group] = up.get(group, 0) + 1
    return {"node_hours": hours, "nodes_up": up}


def prep_lines(preps, releases) -> list[dict]:
    """A line per node: the state of its last preparation run and of its release run ("" if none)."""
    lines: dict[str, dict] = {}
    for r in preps:
        lines[r.node_id] = {"node": r.node_id, "prep": r.state, "release": "", "exit_code": r.exit_code}
    for r in releases:
        lines.setdefault(r.node_id, {"node": r.node_id, "prep": "", "exit_code": None})["release"] = r.state
    return sorted(lines.values(), key=lambda x: _natural(x["node"]))
