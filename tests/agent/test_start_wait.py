"""How long a detached pool's creator waits for its agent to serve (issue 13, point 1, Azure).

An Azure agent waits for its scheduler VM up to ``start_timeout`` and then deletes it; a
creator that gave up sooner would kill the agent with that VM made and not deleted.
"""

from __future__ import annotations

import dask

from batchnb.agent.client import _start_wait


def test_an_azure_agent_is_waited_for_as_long_as_it_waits_for_its_scheduler_vm():
    with dask.config.set({"batchnb.agent-start-timeout": "120s"}):
        assert _start_wait("local", {}) == 120
        assert _start_wait("slurm", {"start_timeout": 600}) == 120
        assert _start_wait("azure", {}) == 900 + 330            # the backend's default start_timeout
        assert _start_wait("azure", {"start_timeout": 60}) == 60 + 330
        # A bad start_timeout is the agent's to refuse (a SpecError naming it, at once): no longer wait.
        assert _start_wait("azure", {"start_timeout": "soon"}) == 120
    with dask.config.set({"batchnb.agent-start-timeout": "2h"}):
        assert _start_wait("azure", {"start_timeout": 60}) == 7200
