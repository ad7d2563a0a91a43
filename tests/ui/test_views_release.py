"""Issue 11 point 7: closing a pool releases its threads, widgets' hold on it and its processes."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import batchnb as bnb
from batchnb.ui.views import CostView, JobView, PoolView
from pools import temporary_pool


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.is_alive()}


def test_twenty_pools_with_open_views_leave_no_thread_or_pool_behind():
    before = _threads()
    pools, views = [], []
    for i in range(20):
        with temporary_pool(f"views-{i}", dedicated=1 if i % 5 == 0 else 0) as pool:
            job = pool.job("j")
            if i % 5 == 0:
                job.add_task("t", "true")
                job.wait(timeout=60, quiet=True)
            # Open views that nobody closes: as a notebook leaves them when the pool is closed.
            views += [JobView(job), PoolView(pool), CostView(pool, job=job)]
            pools.append(weakref.ref(pool))
            del job
        del pool
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        gc.collect()
        leaked = {n for n in _threads() - before if n.startswith("batchnb")}
        alive = [p for p in pools if p() is not None]
        if not leaked and not alive:
            break
        time.sleep(0.2)
    assert leaked == set(), leaked
    assert alive == [], f"{len(alive)} closed pools are still held"
    # The views stay, showing the state they last had, and no longer hold their pools.
    assert all(v.pool is None for v in views if isinstance(v, (PoolView, CostView)))
    assert views[0].counts["succeeded"] == 1
    for v in views:
        v.close()


def test_subscribing_to_a_closed_pools_bus_delivers_nothing_and_starts_no_thread():
    with temporary_pool("closed-bus", dedicated=0) as pool:
        bus = pool.bus
    before = _threads()
    sub = bus.subscribe(lambda events: None, interval=0.1)
    assert sub.closed and _threads() == before
    assert isinstance(bnb.Pool, type)
