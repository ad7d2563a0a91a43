"""Cost you can trust (issue 12, point 6): nodes are billed from the moment they are asked
for, a budget the pool cannot meter is refused at once.

Real local pools whose workers take ``slow_boot.BOOT_SECONDS`` to join (a preload
that sleeps, as a VM's allocation and boot take time), priced at 3600 $/h: one
dollar per node-second, so amounts read as seconds.
"""

from __future__ import annotations

import json
import time

import dask
import distributed  # noqa: F401 - its config defaults load before a dask.config.set of "distributed.*"
import pytest

import batchnb as bnb
import batchnb._config  # noqa: F401 - its defaults are in dask.config before a dask.config.set of ours
from batchnb.cost import cost_from_ledger
from batchnb.errors import SpecError

from pools import temporary_pool
from slow_boot import BOOT_SECONDS
from waiting import wait_for

PRICES = {"Standard_X": {"dedicated": 3600.0, "spot": 3600.0}}
SLOW_BOOT = {"distributed.worker.preload": ["slow_boot"]}


def test_initial_nodes_are_billed_from_their_request_not_from_when_they_join():
    asked = time.time()
    with dask.config.set(SLOW_BOOT), temporary_pool("boot", dedicated=1, vm_size="Standard_X",
                                                    price_table=PRICES) as pool:
        now = time.time()
        billed = pool.cost(now).node_seconds["dedicated"]
        history = pool.ledger.node_history("boot")
        states = [r["state"] for r in history]
        assert states[:2] == ["starting", "idle"], history
        requested, joined = history[0]["time"], history[1]["time"]
        assert asked <= requested and joined - requested >= BOOT_SECONDS
        # From the request, through the boot, not from the join (BOOT_SECONDS later).
        assert billed == pytest.approx(now - requested, abs=0.01)
        assert pool.cost(now).total == pytest.approx(billed)
    replayed = cost_from_ledger(pool.ledger, pool="boot")
    assert replayed.node_seconds["dedicated"] >= BOOT_SECONDS + (now - joined)


def test_a_spot_node_coming_back_is_billed_and_shown_starting_from_its_request():
    with dask.config.set({"batchnb.preempt-return-after": 0.2, "batchnb.cost-sample": 0.2}), \
            temporary_pool("back", dedicated=0, spot=1, vm_size="Standard_X", price_table=PRICES) as pool:
        with dask.config.set(SLOW_BOOT):
            pool.preempt("spot-0")
            preempted = time.time()
            # Asked for again 0.2 s later; its worker takes BOOT_SECONDS more to join, and meanwhile
            # the node shows `starting` and is billed, as Azure bills a VM being allocated.
            wait_for(lambda: {n.id: n.state for n in pool.nodes()}["spot-0"] == "starting", 10,
                     "spot-0 starting again")
            asked_again = time.time()
            assert asked_again - preempted < BOOT_SECONDS
            assert pool.cost().rate_per_hour == pytest.approx(3600.0)
            wait_for(lambda: {n.id: n.state for n in pool.nodes()}["spot-0"] == "idle", 30, "spot-0 back")
        history = [(r["state"], r["time"]) for r in pool.ledger.node_history("back") if r["node_id"] == "spot-0"]
        states = [s for s, _ in history]
        gone = states.index("preempted")
        assert states[gone + 1] == "starting", history
        down, again = history[gone][1], history[gone + 1][1]
        assert 0.15 <= again - down < 1.0        # billed from the request, not from the join
        now = time.time()
        first = history[0][1]
        expected = (down - first) + (now - again)
        assert pool.cost(now).node_seconds["spot"] == pytest.approx(expected, abs=0.05)


def test_a_budget_on_a_pool_without_prices_is_refused_at_once():
    with temporary_pool("free", dedicated=0) as pool:
        with pytest.raises(SpecError, match="has no prices") as err:
            pool.job("capped", budget=5.0)
        assert err.value.field == "budget" and err.value.value == 5.0
        assert "vm_size" in str(err.value)
        assert pool.ledger.job("capped") is None            # nothing was made
        with pytest.raises(SpecError, match="has no prices"):
            pool.job(bnb.JobSpec("capped2", budget=1.0))
        assert pool.job("free-job")._run.spec.budget is None      # no budget: no prices needed
    # A vm_size the shipped table knows prices the pool, and its budgets with it.
    with temporary_pool("shipped", dedicated=0, vm_size="Standard_D4s_v5") as pool:
        assert pool.job("capped", budget=5.0)._run.spec.budget == 5.0


def test_re_attaching_a_budgeted_job_on_a_pool_without_prices_is_refused(tmp_path):
    from batchnb.engine.ledger import Ledger
    ledger = Ledger(tmp_path / "l.sqlite")
    with bnb.Pool("priced", dedicated=0, vm_size="Standard_X", price_table=PRICES, ledger=ledger) as pool:
        pool.job("capped", budget=5.0)
    assert json.loads(ledger.job("capped")["spec"])["budget"] == 5.0
    with bnb.Pool("unpriced", dedicated=0, ledger=ledger) as pool:
        with pytest.raises(SpecError, match="has no prices"):
            pool.job("capped")
