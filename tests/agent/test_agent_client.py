"""A detached pool's client: what works in-kernel works through its agent.

One agent serves the module's tests (each uses its own job ids); it is
stopped at the end, by pid if closing it failed.
"""

from __future__ import annotations

import asyncio
import os
import threading

import psutil
import pytest

import batchnb as bnb
from batchnb.engine.events import JobStateChanged, TaskStateChanged

from detached_agents import detached_pool
from waiting import wait_for


@pytest.fixture(scope="module")
def detached(tmp_path_factory):
    home = tmp_path_factory.mktemp("detached") / "home"
    with detached_pool(home, "client-tests", dedicated=2, task_slots_per_node=2) as pool:
        yield pool


def test_jobs_run_in_the_agent_and_the_client_hears_their_events(detached):
    seen: list = []
    sub = detached.bus.subscribe(seen.extend)
    try:
        job = detached.job("heard")
        t = job.add_task("t1", "echo from the agent")
        squares = job.map(pow, range(4), [2] * 4)
        result = job.wait(timeout=120, quiet=True)
        # The client's reads go to the agent's ledger; its events come by their own poll, a moment later.
        wait_for(lambda: {e.task_id for e in seen if isinstance(e, TaskStateChanged) and e.state == "succeeded"}
                 >= {"t1", *(s.task_id for s in squares)}, 30, "the succeeded events of the job's tasks")
    finally:
        sub.close()
    assert result.counts == {"succeeded": 5} and result.ok
    assert t.stdout() == "from the agent\n" and [s.result() for s in squares] == [0, 1, 4, 9]
    assert job.state == bnb.JobState.ACTIVE
    assert {e.task_id for e in seen if isinstance(e, TaskStateChanged) and e.state == "succeeded"} \
        == {"t1", *(s.task_id for s in squares)}
    assert [(n.id, n.slots) for n in detached.nodes()] == [("dedicated-0", 2), ("dedicated-1", 2)]
    assert isinstance(detached.cost(), bnb.Cost) and isinstance(job.cost(), bnb.Cost)


def test_await_attach_and_a_second_client_see_the_same_job(detached):
    job = detached.job("awaited", on_all_tasks_complete="terminate")
    job.add_tasks([{"id": f"t{i}", "command": "sleep 0.2"} for i in range(4)])
    other = bnb.Pool.connect(detached.address)           # by address, as by name
    try:
        watched = bnb.Job.attach("awaited")              # read-only, from the ledger
        result = asyncio.run(_await(job))
        assert result.state == "completed" and result.counts == {"succeeded": 4}
        assert watched.wait(timeout=30, quiet=True).counts == {"succeeded": 4}
        assert other.job("awaited").counts() == job.counts()
        assert "awaited" in [j["id"] for j in bnb.jobs() if j["pool"] == "client-tests"]
    finally:
        other.disconnect()
    assert detached.job("awaited").counts()["succeeded"] == 4      # the pool outlives the other client


async def _await(job):
    return await job


def test_errors_come_back_as_the_in_kernel_pool_raises_them(detached):
    job = detached.job("checked")
    job.add_task("a", "echo A")
    with pytest.raises(bnb.SpecError, match="different spec") as err:
        job.add_task("a", "echo B")
    assert err.value.field == "task id" and err.value.value == "a"
    with pytest.raises(bnb.SpecError, match="unknown|not in") as err:
        job.add_task("b", "echo B", depends_on=["nope"])
    with pytest.raises(bnb.SpecError) as err:
        detached.job("checked", max_task_retries=5)       # exists with other options
    assert err.value.field == "job"


def test_terminate_from_the_client_ends_the_job_in_the_agent(detached):
    job = detached.job("ended")
    job.add_task("long", "sleep 300")
    wait_for(lambda: job.task("long").state == bnb.TaskState.RUNNING, 60, "the task to run")
    heard: list = []
    sub = detached.bus.subscribe(heard.extend, job_id="ended")
    job.terminate()
    wait_for(lambda: any(isinstance(e, JobStateChanged) and e.state == "completed" for e in heard), 30,
             "the client to hear that the job completed")
    sub.close()
    assert job.task("long").state == bnb.TaskState.CANCELLED and job.state == bnb.JobState.COMPLETED


def test_a_caller_without_the_pools_credentials_is_refused(detached):
    from distributed.security import Security
    from batchnb.agent.link import AgentLink
    assert detached.address.startswith("tls://")
    link = AgentLink(detached._record, Security.temporary())      # a certificate of another CA
    try:
        with pytest.raises(bnb.PermissionDenied, match="do not trust each other's certificates"):
            link.call("hello", pid=os.getpid())
    finally:
        link.close(say_bye=False)


def test_bad_options_and_a_taken_name_fail_at_once_naming_the_field(detached):
    with pytest.raises(bnb.SpecError) as err:
        bnb.Pool("bad", dedicated=-1, detached=True)
    assert err.value.field == "dedicated" and err.value.value == -1
    with pytest.raises(bnb.SpecError, match="did you mean 'dedicated'"):
        bnb.Pool("bad", dedicatd=1, detached=True)
    with pytest.raises(bnb.SpecError, match="runs already"):
        bnb.Pool("client-tests", dedicated=1, detached=True)
    # An Azure pool detaches (its agent makes the VMs); a bad option is refused by the agent, before
    # any Azure call, and raised here naming it; what cannot travel to the agent is named too.
    with pytest.raises(bnb.SpecError, match="eviction_policy") as err:
        bnb.Pool("remote", backend="azure", eviction_policy="Never", detached=True)
    assert (err.value.field, err.value.value) == ("eviction_policy", "Never")
    with pytest.raises(bnb.SpecError, match="cannot be sent to the pool's agent") as err:
        bnb.Pool("remote", backend="azure", azure_sdk=threading.Lock(), detached=True)
    assert err.value.field == "azure_sdk"
    # Other backends are made in the agent: what goes wrong there is raised here, and the name is free again.
    with pytest.raises(bnb.BackendError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        bnb.Pool("remote", "address", address="tcp://127.0.0.1:9", timeout=2, detached=True)
    assert [p["name"] for p in bnb.pools()] == ["client-tests"]


def test_a_disconnected_client_says_so_and_the_pool_goes_on(detached):
    other = bnb.Pool.connect("client-tests")
    other.disconnect()
    with pytest.raises(bnb.BatchError, match="disconnected"):
        other.job("after")
    assert "disconnected" in repr(other)
    assert [p["name"] for p in bnb.pools()] == ["client-tests"]


def test_metrics_and_alerts_are_served_by_the_agent(detached):
    import urllib.request
    url = detached.metrics_url
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert f'pool="{detached.name}"' in text and "batchnb_nodes" in text
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    listening = {c.laddr.port for c in psutil.Process(detached._record["pid"]).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert port in listening            # the agent serves them, where the engine runs
    detached.alert("stuck", bnb.alerts.no_progress(for_="10m"), action="log")
    assert [(a["name"], a["state"]) for a in detached.alerts()] == [("stuck", "ok")]


def _arrays_and_refs(pool, job_id: str) -> tuple[int, int]:
    """The job's rows in the agent's task_arrays, and its tasks rows that only point into one."""
    import sqlite3
    con = sqlite3.connect(f"file:{pool._record['ledger']}?mode=ro", uri=True)
    try:
        arrays = con.execute("SELECT COUNT(*) FROM task_arrays WHERE job_id = ?", (job_id,)).fetchone()[0]
        refs = con.execute("SELECT COUNT(*) FROM tasks WHERE job_id = ? AND spec LIKE '{\"array\":%'",
                           (job_id,)).fetchone()[0]
        return arrays, refs
    finally:
        con.close()


def test_a_detached_map_and_sweep_are_task_arrays_in_the_agent(detached):
    from batchnb.engine.arrays import CHUNK
    job = detached.job("arrays")
    over_range = job.map(abs, range(-3000, 0))                        # sent whole: one array
    n = CHUNK + 500
    over_values = job.map(pow, range(n), [2] * n)                     # rows sent a chunk at a time
    first = job.submit(abs, -7)
    over_handles = job.map(pow, [first, 3], [2, 2])                   # a task's result: task by task
    frames = job.sweep("echo frame {0}", range(40), id="frame-{0}")
    result = job.wait(timeout=600, quiet=True)
    assert result.ok and result.counts == {"succeeded": 3000 + n + 1 + 2 + 40}
    assert len(over_range) == 3000 and over_range[0].result() == 3000 and over_range[-1].result() == 1
    assert len(over_values) == n and over_values[n - 1].result() == (n - 1) ** 2
    assert over_values[CHUNK].task_id == f"pow-{CHUNK}" and over_values[CHUNK].result() == CHUNK ** 2
    assert [t.result() for t in over_handles] == [49, 9]
    assert [f.task_id for f in frames[:2]] == ["frame-0", "frame-1"] and frames[39].stdout() == "frame 39\n"
    # One array for the range, one per chunk of values, one for the sweep; the two tasks over a
    # handle are plain specs; every other task row only points into its array.
    assert _arrays_and_refs(detached, "arrays") == (1 + 2 + 1, 3000 + n + 40)


def test_an_extensions_methods_are_asked_their_kind_once_per_link(detached):
    """A detached job.cost() is a call to the cost extension in the agent: whether job_cost is a
    method is asked once, not before every call (plain values are asked each time). Only this
    thread's calls are counted: the pool's event pump polls the agent from its own thread."""
    import threading
    from batchnb.agent.link import AgentLink
    job = detached.job("kinds")
    job.add_task("a", "true")
    assert job.wait(timeout=120, quiet=True).ok
    first = job.cost()
    asked = []
    original = AgentLink.call

    here = threading.get_ident()

    def counting(self, op, **kwargs):
        if threading.get_ident() == here:
            asked.append((op, kwargs.get("path"), kwargs.get("args") is not None))
        return original(self, op, **kwargs)
    AgentLink.call = counting
    try:
        again = job.cost()
    finally:
        AgentLink.call = original
    assert again.total == first.total and again.rows == first.rows
    assert asked == [("extension_get", "job_cost", True)], asked


def test_a_detached_wait_and_result_are_one_call_each(detached):
    """Job.wait asks the agent for the job's whole progress (done, release tasks, blocked preparation,
    its JobResult) in one call, not a dozen ledger reads; Task.result of a failed task is refused by
    the agent in the same call that would bring its value."""
    import threading
    from batchnb.agent.link import AgentLink

    def boom():
        raise ValueError("no")
    job = detached.job("one-call")
    job.add_task("a", "true")
    bad = job.submit(boom)
    assert job.wait(timeout=120, quiet=True).counts == {"succeeded": 1, "failed": 1}
    asked, here, original = [], threading.get_ident(), AgentLink.call

    def counting(self, op, **kwargs):
        if threading.get_ident() == here:
            asked.append(op)
        return original(self, op, **kwargs)
    AgentLink.call = counting
    try:
        result = job.wait(timeout=60, quiet=True)
        waited, asked[:] = list(asked), []
        with pytest.raises(bnb.TaskFailed, match="ValueError"):
            bad.result(timeout=60)
    finally:
        AgentLink.call = original
    assert waited == ["job_progress"] and result.counts == {"succeeded": 1, "failed": 1}
    assert result.failures[0]["task_id"] == bad.task_id and result.all_tasks_complete
    assert asked == ["ledger_read", "task_output"], asked      # its state, then its refused result
