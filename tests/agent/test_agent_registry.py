"""The registry of detached pools: one record per agent, one agent per name, stale records pruned."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import batchnb as bnb
from batchnb.agent import registry


def test_a_name_is_claimed_once_and_its_record_is_private(home):
    own = registry.claim("render")
    path = registry.path_of("render")
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    with pytest.raises(bnb.SpecError, match="runs already") as err:
        registry.claim("Render")                     # names are case-folded, as job ids are
    assert err.value.field == "pool name"
    # Claimed but not serving yet: not listed.
    assert bnb.pools() == []
    tls = path.with_suffix(".tls")
    tls.mkdir(mode=0o700)
    registry.publish({**own, "address": "tls://127.0.0.1:1", "tls": {"owner": str(tls / "owner")},
                      "backend": "local"})
    shown = bnb.pools()
    assert [(p["name"], p["pid"], p["address"]) for p in shown] == [("render", os.getpid(), "tls://127.0.0.1:1")]
    assert "tls" not in shown[0]
    assert registry.find("tls://127.0.0.1:1")["tls"] == {"owner": str(tls / "owner")}
    registry.remove("render")
    assert not path.exists() and not tls.exists()       # the pool's certificates end with its agent


def test_a_dead_agents_record_is_pruned_and_its_name_can_be_claimed_again(home):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    path = registry.path_of("crashed")
    path.write_text(json.dumps({"name": "crashed", "pid": pid, "address": "tcp://127.0.0.1:9", "started": 0}))
    assert bnb.pools() == []
    assert not path.exists()
    path.write_text(json.dumps({"name": "crashed", "pid": pid, "address": None, "started": 0}))
    assert registry.claim("crashed")["pid"] == os.getpid()


def test_connecting_to_a_pool_that_does_not_run_names_it(home):
    with pytest.raises(bnb.SpecError, match="no detached pool of this name") as err:
        bnb.Pool.connect("nowhere")
    assert err.value.field == "pool" and err.value.value == "nowhere"
    with pytest.raises(bnb.SpecError):
        bnb.Pool.connect("")
