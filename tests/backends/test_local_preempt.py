"""Only spot nodes are preempted, on a local pool as on Azure (issue 12, point 6).

Azure evicts spot VMs only; a local pool that preempted a dedicated node
would let a notebook rely on something the cloud then refuses.
"""

from __future__ import annotations

import pytest

from batchnb.errors import BackendError, SpecError

from pools import temporary_pool


@pytest.fixture(scope="module")
def mixed():
    with temporary_pool("preempt-groups", dedicated=1, spot=1) as pool:
        yield pool


def states(pool):
    return {n.id: n.state for n in pool.nodes()}


def test_preempting_a_dedicated_node_is_refused_naming_the_node_and_its_group(mixed):
    with pytest.raises(SpecError, match="dedicated node") as err:
        mixed.preempt("dedicated-0")
    assert err.value.field == "node_id" and err.value.value == "dedicated-0"
    assert "spot nodes only" in str(err.value)
    assert states(mixed)["dedicated-0"] == "idle"
    # The backend itself refuses too: nothing below the pool kills a dedicated worker.
    with pytest.raises(BackendError, match="'dedicated-0' is a dedicated node"):
        mixed._backend.preempt("dedicated-0")
    assert states(mixed)["dedicated-0"] == "idle"


def test_chaos_on_dedicated_nodes_is_refused_by_the_local_backend(mixed):
    with pytest.raises(SpecError, match="cannot preempt 'dedicated' nodes; it preempts: spot") as err:
        mixed.chaos(preempt_rate=1, groups=("spot", "dedicated"))
    assert err.value.field == "chaos.groups"


def test_a_pool_with_chaos_on_dedicated_nodes_is_refused_before_it_starts(tmp_path):
    import batchnb as bnb
    with pytest.raises(SpecError, match="chaos.groups"):
        bnb.Pool("no-chaos", dedicated=1, ledger=str(tmp_path / "l.sqlite"),
                 chaos={"preempt_rate": 1, "groups": "dedicated"})
