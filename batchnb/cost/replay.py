"""Cost after the fact: the meter's inputs rebuilt from the ledger.

The ledger holds everything the live meter was fed: the ``nodes`` table is
each node's timeline (billed from its first billed state to ``preempted``/
``offline``), ``attempts`` say which node each attempt ran on, how many of its slots it
held (``slots``; 1/n of one slot for each of n bundled tasks) and from when
(dispatch) to when (end), and an ``events`` row of kind ``pool``, state
``priced`` says what each pool priced with (vm size, region, hourly prices,
slots per node, tags). Replaying them through a :class:`CostMeter` gives the
same amounts as the live meter, to within the few milliseconds between an
attempt's end on the worker and the dispatcher collecting it.

``ledger`` is a :class:`batchnb.engine.ledger.Ledger`, used only through its
public query methods (this layer sits below the engine and does not import it).

>>> import batchnb as bnb
>>> with bnb.Pool("doc", dedicated=1, vm_size="Standard_D4s_v5") as pool:
...     job = pool.job("sweep")
...     t = job.add_task("t1", "sleep 0.2")
...     live = job.wait(quiet=True).cost
>>> replayed = cost_from_ledger(bnb.current_ledger(), job_id="sweep")     # any time later, from any process
>>> round(replayed.total / live.total, 2), list(replayed.frame().task_id)
(1.0, ['t1'])
>>> on_d8 = cost_from_ledger(bnb.current_ledger(), job_id="sweep", vm_size="Standard_D8s_v5")
>>> round(on_d8.total / replayed.total, 3)         # what if it had run on D8s_v5, at twice the price?
2.0
"""

from __future__ import annotations

import json
import time

from .meter import Cost, CostMeter, PriceTable
from ..errors import SpecError
from ..states import BILLED_NODE_STATES, NodeState, group_of

_BILLED = {s.value for s in BILLED_NODE_STATES}
_RELEASED = {NodeState.PREEMPTED.value, NodeState.OFFLINE.value}
# Order of simultaneous events: a node is up before a task starts on it; tasks end before it goes.
_NEW_POOL, _NODE_UP, _START, _END, _NODE_DOWN = range(5)


def priced_pools(ledger) -> list[str]:
    """Names of the pools that recorded their prices in ``ledger``, oldest first."""
    names: dict[str, None] = {}
    for r in ledger.priced_pool_events():
        names[json.loads(r["data"])["pool"]] = None
    return list(names)


def _priced(ledger, pool: str) -> list[tuple[float, dict]]:
    out = []
    for r in sorted(ledger.priced_pool_events(), key=lambda r: r["time"]):
        data = json.loads(r["data"])
        if data.get("pool") == pool:
            out.append((r["time"], data))
    return out


def _attempts(ledger, job_id: str | None, pool: str) -> list[dict]:
    """Attempts with the slots they held and when the dispatcher saw them end.

    An attempt's ``end`` is its end on the worker; the live meter counts its
    slots until the dispatcher collected it, which is when the task's next
    state was recorded (the first ``events`` row of that attempt other than
    ``running``). That time is used where it exists, so that both agree.
    """
    by = {"job_id": job_id} if job_id is not None else {"pool": pool}
    rows = ledger.metered_attempts(**by)
    seen = ledger.attempt_collected_times(**by)
    collected = {(r["job_id"].lower(), r["task_id"].lower(), r["n"]): r["t"] for r in seen}
    out = []
    for a in rows:
        t = collected.get((a["job_id"].lower(), a["task_id"].lower(), a["n"]))
        if a["end"] is not None and t is not None and t >= a["end"]:
            a["end"] = t
        out.append(a)
    return out


def cost_from_ledger(ledger, *, job_id: str | None = None, pool: str | None = None,
                     prices: PriceTable | None = None, vm_size: str | None = None, region: str | None = None,
                     until: float | None = None) -> Cost:
    """The :class:`Cost` of a job or of a pool, rebuilt from the ledger.

    Parameters
    ----------
    job_id, pool
        Name exactly one: a job (its tasks' shares) or a pool (its nodes'
        time, with each job's share and the idle rest).
    prices, vm_size, region
        Price the same timeline otherwise ("what would it have cost on
        D8s_v5?"); by default the prices the pool recorded when it started.
    until
        Count up to this time. By default: a finished job's end; for what is
        still open, now when a live process holds one of the pool's jobs,
        else the last time the ledger saw activity (a pool whose process died
        without closing is billed up to then: a lower bound).
    """
    if (job_id is None) == (pool is None):
        raise SpecError("job_id", job_id, "name a job (job_id=...) or a pool (pool=...), not both or neither")
    job_row = None
    if job_id is not None:
        job_row = ledger.job(job_id)
        if job_row is None:
            raise SpecError("job id", job_id, f"not in the ledger {ledger.path}")
        job_id, pool = job_row["id"], job_row["pool"]
    if vm_size is not None and prices is None:
        prices = PriceTable.load()
    priced = _priced(ledger, pool)
    nodes = ledger.node_history(pool)
    attempts = _attempts(ledger, job_id, pool)
    jobs = [job_row] if job_row is not None else ledger.jobs(pool=pool)
    if job_row is None and not (priced or nodes or jobs):
        known = ", ".join(priced_pools(ledger)) or "none"
        raise SpecError("pool", pool, f"not in the ledger {ledger.path} (pools with prices: {known})")
    end = until if until is not None else _default_end(jobs, nodes, attempts, job_row)

    timeline: list[tuple] = [(t, _NEW_POOL, data) for t, data in priced]
    for r in nodes:
        kind = _NODE_UP if r["state"] in _BILLED else _NODE_DOWN if r["state"] in _RELEASED else None
        if kind is not None:
            timeline.append((r["time"], kind, (r["node_id"], r["grp"] or group_of(r["node_id"]))))
    # An attempt holds from dispatch to when the dispatcher collected it the slots recorded at
    # dispatch (``attempts.slots``: 1/n of one slot for each of n tasks that rode in one Dask task).
    # Rows of ledgers older than that column are guessed at: attempts of one node and one dispatch
    # time rode together, each holding 1/n of the slot until the last one ended (an underestimate
    # where one dispatcher turn sent separate Dask tasks to one node of several slots).
    riders: dict[tuple, list] = {}
    for a in attempts:
        if a["held"] is None:
            riders.setdefault((a["node"], a["dispatched"]), []).append(end if a["end"] is None else a["end"])
    for a in attempts:
        start = a["dispatched"] if a["dispatched"] is not None else a["start"]
        if start is None or a["node"] is None:
            continue
        if a["held"] is not None:
            slots, stop = float(a["held"]), end if a["end"] is None else a["end"]
        else:
            ends = riders[(a["node"], a["dispatched"])]
            slots, stop = (int(a["slots"]) if len(ends) == 1 else 1.0 / len(ends)), max(ends)
        key = (a["job_id"], a["task_id"], a["node"])
        timeline.append((start, _START, (key, slots)))
        timeline.append((stop, _END, key))
    timeline = [e for e in timeline if e[0] <= end]
    timeline.sort(key=lambda e: (e[0], e[1]))

    first = priced[0][1] if priced else {}
    meter = CostMeter(None, None, tags=first.get("tags") or {})
    if prices is not None:
        meter.currency = prices.currency
    elif first.get("currency"):
        meter.currency = first["currency"]
    for row in jobs:
        meter.set_tags(row["id"], json.loads(row["tags"] or "{}"))
    state = {"data": first, "billed": set(), "last": None}
    for t, kind, payload in timeline:
        if kind == _NEW_POOL:
            # A new pool of the same name: nodes the previous one never released stopped with it.
            for node_id in list(state["billed"]):
                meter.node_released(node_id, state["last"] if state["last"] is not None else t)
            meter.scheduler_released(state["last"] if state["last"] is not None else t)
            state["billed"].clear()
            state["data"] = payload
            sched = payload.get("scheduler")     # a scheduler VM of its own, billed for the pool's life
            if job_id is None and sched:
                _scheduler(meter, sched, t, prices, region or payload.get("region"))
        elif kind == _NODE_UP and payload[0] not in state["billed"]:
            _request(meter, state, payload[0], payload[1], t, prices, vm_size, region)
        elif kind == _NODE_DOWN and payload[0] in state["billed"]:
            state["billed"].discard(payload[0])
            meter.node_released(payload[0], t)
        elif kind == _START:
            (job, task, node), slots = payload
            if node not in state["billed"]:
                _request(meter, state, node, group_of(node), t, prices, vm_size, region)
            try:
                meter.task_started(job, task, node, slots, t)
            except SpecError:
                continue   # inconsistent rows (e.g. a node id shared by two live pools): not attributed
        elif kind == _END:
            meter.task_ended(*payload, t)
        state["last"] = t
    return meter.cost(now=end, job_id=job_id)      # the last pool's scheduler VM: billed up to `end`


def _scheduler(meter: CostMeter, sched: dict, t: float, prices, region) -> None:
    price = sched.get("price") or 0.0
    if prices is not None and sched.get("vm_size"):
        try:
            price = prices.price(sched["vm_size"], "dedicated", region)
        except SpecError:
            pass    # a table without that size keeps the recorded price
    meter.scheduler_requested(min(t, sched.get("since") or t), float(price))


def _request(meter: CostMeter, state: dict, node_id: str, group: str, t: float, prices, vm_size, region) -> None:
    data = state["data"]
    size = vm_size or data.get("vm_size")
    if prices is not None and size is not None:
        price = prices.price(size, group, region or data.get("region"))
    else:
        price = (data.get("prices") or {}).get(group) or 0.0
    meter.node_requested(node_id, group, t, slots=int(data.get("slots") or 1), price_per_hour=float(price))
    state["billed"].add(node_id)


def _default_end(jobs: list, nodes: list, attempts: list, job_row) -> float:
    now = time.time()
    if job_row is not None and job_row["ended"] is not None:
        return job_row["ended"]
    if any((j.get("lease_expires") or 0) > now for j in jobs):
        return now
    times = [r["time"] for r in nodes]
    times += [t for a in attempts for t in (a["dispatched"], a["end"]) if t is not None]
    times += [j["ended"] for j in jobs if j.get("ended")]
    return max(times) if times else now
