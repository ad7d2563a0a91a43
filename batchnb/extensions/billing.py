"""What the cost meter bills besides attempts: when a node's bill starts, the scheduler VM, budgets.

Helpers of :mod:`batchnb.extensions.cost`, kept apart so that the extension
reads as its hooks. The rules are the cloud's:

- A node is billed from the moment it is asked for (Azure bills a VM from
  its allocation, through ``starting`` and its start task), not from when
  its worker joins: the backend says when it asked (``Backend.requested_at``),
  and a spot node that comes back after a preemption is billed again from
  the request that brought it back.
- A pool whose Dask scheduler runs on a VM of its own (``Backend.scheduler_vm_size``,
  the Azure backend) pays for that VM for the pool's whole life, at its
  size's dedicated price: ``pool.cost().by_group["scheduler"]``.
- A budget needs prices: on a pool that meters at 0 it could never be
  reached, so ``pool.job(..., budget=...)`` is refused at once.

>>> import batchnb as bnb
>>> with bnb.Pool("doc", dedicated=0) as pool:              # no vm_size: nothing is priced
...     pool.job("capped", budget=5.0)
Traceback (most recent call last):
...
batchnb.SpecError: budget: 5.0 is invalid: pool 'doc' has no prices ...
"""

from __future__ import annotations

import json
import logging

from ..errors import SpecError
from ..states import NodeState

log = logging.getLogger("batchnb.cost")


def _asked(backend, node_id: str) -> float | None:
    asked = getattr(backend, "requested_at", None)
    try:
        return asked(node_id) if asked is not None else None
    except Exception:  # noqa: BLE001 - a third-party backend's bug must not stop billing
        return None


def billed_since(backend, node_id: str, now: float, released_at: float | None) -> float:
    """When ``node_id``'s bill starts, given that it is seen billed at ``now``.

    The backend's request time when it knows one that is not older than the
    node's last release (that request was billed already), else ``now``.
    """
    at = _asked(backend, node_id)
    if at is None or at > now or (released_at is not None and at < released_at):
        return now
    return at


def reconcile_nodes(disp, backend, billed: dict[str, str], released: dict[str, float]) -> None:
    """On the dispatcher's thread, with each cost sample: nodes whose request changed while
    no worker of theirs was there to show it."""
    requested = backend.requested()
    for node_id in list(billed):
        # Asked for and given up before its worker joined (a quick scale down): it stays
        # `starting` in the dispatcher's table, but the backend no longer lists it.
        node = disp.nodes.nodes.get(node_id)
        if node is not None and node.address is None and node.state == NodeState.STARTING \
                and node_id not in requested:
            disp.set_node_state(node_id, NodeState.OFFLINE, "released before it joined")
    for node_id, since in list(released.items()):
        # A preempted node asked for again (a spot node coming back) is billed, and shown
        # `starting`, from that request on, not from when its worker joins.
        node = disp.nodes.nodes.get(node_id)
        if node is None or node.state != NodeState.PREEMPTED or node.address is not None \
                or node_id not in requested or (_asked(backend, node_id) or since) <= since:
            continue
        node.infra_failures = 0     # a new machine with a clean record, as NodeTable.up does after a preemption
        disp.set_node_state(node_id, NodeState.STARTING, "asked for again after its preemption")


def bill_scheduler(meter, engine, t: float) -> dict | None:
    """Start billing the pool's scheduler VM (if its backend has one); what it is priced with."""
    size_of = getattr(engine.backend, "scheduler_vm_size", None)
    size = size_of() if size_of is not None else None
    if size is None:
        return None
    table = engine.price_table or meter.prices
    price = 0.0
    try:
        if table is None:
            from ..cost.prices import PriceTable
            table = PriceTable.load()
        price = table.price(size, "dedicated", engine.spec.region)
    except SpecError as exc:
        log.warning("batchnb: the scheduler VM of pool %r is metered at 0: %s", engine.name, exc)
    started = getattr(engine.backend, "started_at", None) or t
    meter.scheduler_requested(min(started, t), price)
    return {"vm_size": size, "price": price, "since": min(started, t)}


def check_budget(ext, job_id, options: dict) -> None:
    """Refuse a budget the pool cannot meter: SpecError at ``pool.job(...)``, before the job exists.

    ``ext`` is the pool's cost extension (None: no metering, nothing to check).
    The budget is the one given, the JobSpec's, or (``pool.job(id)`` re-attaching)
    the one the job was made with.
    """
    if ext is None:
        return
    if "budget" in options:
        budget = options["budget"]
    elif hasattr(job_id, "budget"):
        budget = job_id.budget
    else:
        row = ext.engine.ledger.job(job_id) if isinstance(job_id, str) else None
        budget = json.loads(row["spec"]).get("budget") if row is not None and row.get("spec") else None
    if budget is None or ext.meter.vm_size is not None:
        return
    spec = ext.engine.spec
    why = ("it has no vm_size" if spec.vm_size is None
           else f"its vm_size {spec.vm_size!r} has no price in the shipped table")
    raise SpecError("budget", budget, f"pool {ext.engine.name!r} has no prices ({why}), so its jobs cost 0 "
                    "and a budget would never stop one; give the pool a vm_size= (priced from the shipped "
                    "table) or a price_table=")
