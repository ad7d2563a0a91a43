"""The ledger's timeline query: per-node lanes of attempts, aggregated in SQL when dense."""

from __future__ import annotations

import json
import time

from batchnb.engine.ledger import Batch

OUTCOMES = ("succeeded", "succeeded", "succeeded", "failed", "requeued")


def _fill(ledger, job_id: str, n: int, nodes: int = 8) -> None:
    ledger.create_job(job_id, {"id": job_id}, pool="local", now=0.0)
    ledger.add_tasks(job_id, [(f"t{i}", i, "{}", "succeeded") for i in range(n)], now=0.0)
    batch = Batch()
    for i in range(n):
        start = 1000.0 + i * 0.01
        batch.attempt(job_id, f"t{i}", 1, node=f"dedicated-{i % nodes}", state=OUTCOMES[i % len(OUTCOMES)],
                      dispatched=start, start=start, end=start + 0.05)
    batch.attempt(job_id, "t0", 2, node="spot-0", state="requeued", dispatched=1001.0, start=1001.0, end=1001.5)
    batch.event(1001.5, "node", None, None, "preempted")
    ledger.commit(batch)
    with ledger._tx() as con:      # the node's history row that says it was preempted then
        con.execute("INSERT INTO nodes(pool, node_id, grp, state, time) VALUES ('local', 'spot-0', 'spot', "
                    "'preempted', 1001.5)")


def test_a_timeline_of_100000_attempts_is_bins_of_bounded_size(ledger):
    _fill(ledger, "big", 100_000)
    began = time.monotonic()
    tl = ledger.timeline("big", bins=400)
    took = time.monotonic() - began
    assert "bins" in tl and "bars" not in tl and tl["count"] == 100_001
    assert tl["lanes"] == [f"dedicated-{i}" for i in range(8)] + ["spot-0"]
    payload = len(json.dumps(tl))
    # 9 lanes x 400 bins x the outcomes (4 here): bounded whatever the job's size.
    assert len(tl["bins"]) <= 9 * 400 * 4 and payload < 250_000, payload
    by_outcome: dict = {}
    for _, b, outcome, count in tl["bins"]:
        assert 0 <= b < 400
        name = tl["outcomes"][outcome]
        by_outcome[name] = by_outcome.get(name, 0) + count
    assert by_outcome == {"succeeded": 60_000, "failed": 20_000, "requeued": 20_000, "preempted": 1}
    assert took < 10, took
    # Zoomed in on 0.5 s, a window holds few attempts: bars, with their task ids.
    zoom = ledger.timeline("big", since=1500.0, until=1500.5)
    assert "bars" in zoom and 40 <= zoom["count"] <= 60
    lane, task, n, start, end, outcome = zoom["bars"][0]
    assert zoom["lanes"][lane].startswith("dedicated-") and task.startswith("t") and n == 1 and end > start


def test_a_small_timeline_is_bars_with_preempted_told_from_requeued(ledger):
    _fill(ledger, "small", 10, nodes=2)
    tl = ledger.timeline("small")
    assert "bars" in tl and len(tl["bars"]) == 11 and tl["t0"] == 1000.0
    spot = [b for b in tl["bars"] if tl["lanes"][b[0]] == "spot-0"]
    assert [(b[1], b[2], b[5]) for b in spot] == [("t0", 2, "preempted")]
    assert [b[5] for b in tl["bars"] if b[1] == "t4"] == ["requeued"]
