"""Nodes under faults, on real local pools: spot preemption under load, start tasks, unusable nodes.

(Named apart from tests/test_nodes.py, the node table's unit tests: pytest
needs distinct module names without packages.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import dask
import pytest

import batchnb as bnb
from waiting import wait_for
from batchnb.extensions.chaos import ChaosExtension
from batchnb.extensions.nodehealth import NodeHealthExtension
from batchnb.extensions.starttask import StartTaskExtension
from batchnb.engine.events import NodeStateChanged
from batchnb.engine.ledger import Ledger


@pytest.fixture
def fast_nodes():
    with dask.config.set({"batchnb.preempt-return-after": 0.5, "batchnb.autoscale-sample": 0.5}):
        yield


class NodeEvents:
    """Every NodeStateChanged of a pool, as (time, node, state)."""

    def __init__(self, pool):
        self.seen: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        self.sub = pool.bus.subscribe(self._on, kinds=(NodeStateChanged,))

    def _on(self, events):
        with self._lock:
            self.seen.extend((e.time, e.node_id, e.state) for e in events)

    def states(self, node_id):
        with self._lock:
            return [s for _, n, s in self.seen if n == node_id]

    def first(self, node_id, state):
        with self._lock:
            return next((t for t, n, s in self.seen if n == node_id and s == state), None)


def nap(i):
    time.sleep(0.04)
    return i


def test_200_tasks_survive_repeated_spot_preemption(tmp_path, fast_nodes):
    with bnb.Pool("chaos", dedicated=1, spot=2, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        events = NodeEvents(pool)
        job = pool.job("spotty", max_task_retries=0)
        tasks = job.map(nap, range(200))
        victim = wait_for(lambda: next((n.id for n in pool.nodes() if n.group == "spot" and n.running), None),
                          30, "a spot node running a task")
        pool.preempt(victim)
        # pool.nodes() shows it preempted at once ...
        assert {n.id: n.state for n in pool.nodes()}[victim] == "preempted"
        with pool.chaos(preempt_rate=40, seed=7):
            result = job.wait(timeout=90)
            # ... and it comes back as a node of the pool.
            wait_for(lambda: {n.id: n.state for n in pool.nodes()}.get(victim) in ("idle", "running"), 20,
                     f"{victim} to come back")
        chaos = pool.extension(ChaosExtension).preemptions
    assert result.counts.get("succeeded") == 200 and result.ok, result
    assert [t.result() for t in tasks[:3]] == [0, 1, 2]
    infos = job.tasks()
    requeued = [t for t in infos if t.requeues > 0]
    assert requeued, "no task was requeued"
    assert all(t.state == "succeeded" for t in infos)
    t = job.task(requeued[0].id)
    states = [a["state"] for a in t.attempts]
    assert "requeued" in states and states[-1] == "succeeded"
    assert t.requeue_count == states.count("requeued")
    assert len(chaos) + 1 >= 2, "the run saw only one preemption"
    states = events.states(victim)
    back = states[states.index("preempted") + 1:]
    assert "idle" in back or "running" in back, states


START = ('sleep 0.3; [ "${AZ_BATCH_NODE_ID#spot}" = "$AZ_BATCH_NODE_ID" ] || { echo no spot here >&2; exit 3; }; '
         'touch "$AZ_BATCH_NODE_SHARED_DIR/ready"')


def test_failing_start_task_marks_node_and_job_completes_elsewhere(tmp_path, fast_nodes):
    st = bnb.StartTask(START, max_retries=1)
    with bnb.Pool("st", dedicated=1, spot=1, start_task=st, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        # every task checks that its node's start task had finished before it ran
        job = pool.job("after-start", max_task_retries=0)
        for i in range(6):
            job.add_task(f"t{i}", 'test -f "$AZ_BATCH_NODE_SHARED_DIR/ready"')
        result = job.wait(timeout=60)
        states = wait_for(lambda: (s := {n.id: n.state for n in pool.nodes()}).get("spot-0") == "start_task_failed"
                          and s, 20, "spot-0 start_task_failed")
        results = pool.extension(StartTaskExtension).results
    assert result.ok and result.counts["succeeded"] == 6
    assert {t.node for t in job.tasks()} == {"dedicated-0"}
    assert states["dedicated-0"] in ("idle", "running")
    assert results["dedicated-0"].succeeded and results["dedicated-0"].attempts == 1
    bad = results["spot-0"]
    assert (bad.exit_code, bad.attempts) == (3, 2) and "no spot here" in bad.stderr_tail
    startup = Path(bad.task_dir)
    assert startup.name == "startup" and (startup / "stderr.txt").exists()


def break_this_node():
    """Make the batchnb runner of this worker process fail: a broken node, not a broken task."""
    import batchnb.node.runner

    def broken(*args, **kwargs):
        raise OSError("disk full")
    batchnb.node.runner._run = broken


def test_node_with_consecutive_crashes_becomes_unusable_and_is_replaced(tmp_path, fast_nodes):
    with bnb.Pool("sick", dedicated=2, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        events = NodeEvents(pool)
        address = next(a for a, w in pool.client.scheduler_info(n_workers=-1)["workers"].items()
                       if w["name"] == "dedicated-1")
        pool.client.run(break_this_node, workers=[address])
        job = pool.job("crashy", max_task_retries=6)
        job.map(nap, range(20))
        result = job.wait(timeout=60)
        assert result.ok and result.counts["succeeded"] == 20
        assert pool.extension(NodeHealthExtension).replaced == [("dedicated-1", "dedicated-2")]
        wait_for(lambda: {n.id: n.state for n in pool.nodes()}.get("dedicated-2") in ("idle", "running"), 20,
                 "the replacement node")
        wait_for(lambda: "dedicated-1" not in {n.id for n in pool.nodes()}, 20, "dedicated-1 to leave")
    unusable_at = events.first("dedicated-1", "unusable")
    assert unusable_at is not None
    attempts = [a for t in job.tasks() for a in job.task(t.id).attempts]
    crashed = [a for a in attempts if a["node"] == "dedicated-1"]
    assert len(crashed) >= 3 and all(a["category"] == "crash" for a in crashed)
    assert not [a for a in crashed if a["dispatched"] > unusable_at], "dedicated-1 got tasks after it was unusable"


def test_chaos_option_of_the_pool_preempts_busy_spot_nodes(tmp_path, fast_nodes):
    with bnb.Pool("chaos2", dedicated=1, spot=1, ledger=Ledger(tmp_path / "l.sqlite"),
                  chaos={"preempt_rate": 600, "seed": 3, "max_preemptions": 2}) as pool:
        events = NodeEvents(pool)
        job = pool.job("under-fire", max_task_retries=0)
        job.map(nap, range(60))
        result = job.wait(timeout=60)
        preemptions = pool.extension(ChaosExtension).preemptions
    assert result.ok and result.counts["succeeded"] == 60
    assert [n for _, n in preemptions] == ["spot-0", "spot-0"]
    assert events.states("spot-0").count("preempted") == 2


def test_start_task_that_does_not_block_the_node(tmp_path, fast_nodes):
    st = bnb.StartTask("sleep 1; exit 2", wait_for_success=False)
    with bnb.Pool("nowait", dedicated=1, start_task=st, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        job = pool.job("early", max_task_retries=0)
        job.add_task("t", "echo early")
        assert job.wait(timeout=30).ok                  # ran while the start task still ran
        ext = pool.extension(StartTaskExtension)
        result = wait_for(lambda: ext.results.get("dedicated-0"), 20, "the start task's result")
        assert result.exit_code == 2 and not result.succeeded
        assert {n.id: n.state for n in pool.nodes()} == {"dedicated-0": "idle"}
    assert job.task("t").attempts[0]["end"] < result.end


def test_app_package_on_every_node_for_the_start_task(tmp_path, fast_nodes):
    import zipfile
    with zipfile.ZipFile(tmp_path / "tool.zip", "w") as zf:
        zf.writestr("tool.sh", 'echo "tool on $AZ_BATCH_NODE_ID" > "$AZ_BATCH_NODE_SHARED_DIR/tool.txt"')
    st = bnb.StartTask('sh "$AZ_BATCH_APP_PACKAGE_tool_1/tool.sh"')
    with bnb.Pool("apps", dedicated=2, start_task=st, ledger=Ledger(tmp_path / "l.sqlite"),
                  app_packages=[bnb.AppPackage("tool", "1", (tmp_path / "tool.zip").as_uri())]) as pool:
        job = pool.job("uses-tool", max_task_retries=0)
        tasks = [job.add_task(f"t{i}", 'cat "$AZ_BATCH_NODE_SHARED_DIR/tool.txt"') for i in range(4)]
        uses = job.add_task("package-dir", 'test -f "$AZ_BATCH_APP_PACKAGE_tool_1/tool.sh" && echo found')
        assert job.wait(timeout=60).ok
        node_root = Path(pool._node_root)
    # Each task found its own node's start-task output (which node takes which task is timing).
    assert all(t.stdout().strip() == f"tool on {t.attempts[-1]['node']}" for t in tasks)
    for node in ("dedicated-0", "dedicated-1"):     # and the start task ran on every node
        assert (node_root / node / "shared" / "tool.txt").read_text().strip() == f"tool on {node}"
    assert uses.stdout().strip() == "found"  # tasks see the package too, as in Azure


def test_scheduled_events_notice_on_a_local_pool_requeues_and_the_node_returns(tmp_path, fast_nodes):
    """The eviction-notice path of any backend: a tiny scheduled-events endpoint on 127.0.0.1."""
    import http.server
    import json

    from batchnb.extensions.spotnotice import SpotNoticeExtension
    from batchnb.node.spotnotice import ScheduledEventsPlugin
    doc = {"DocumentIncarnation": 0, "Events": []}

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metadata/scheduledevents"
    try:
        with bnb.Pool("notice", dedicated=1, spot=1, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
            pool.client.register_plugin(ScheduledEventsPlugin(url, vm_name_template="{node_id}", poll_interval=0.1,
                                                              grace=0.3))
            job = pool.job("noticed", max_task_retries=0)
            for i in range(2):
                job.add_task(f"t{i}", "sleep 1.5")
            on_spot = wait_for(lambda: next((t.id for t in job.tasks() if t.node == "spot-0"), None), 20,
                               "a task on spot-0")
            doc["Events"] = [{"EventId": "e1", "EventType": "Preempt", "Resources": ["spot-0"],
                              "EventStatus": "Scheduled", "NotBefore": "Wed, 25 Nov 2026 08:00:00 GMT"}]
            notices = wait_for(lambda: pool.extension(SpotNoticeExtension).notices, 10, "the notice")
            doc["Events"] = []                        # the evicted machine's events go with it
            assert {n.id: n.state for n in pool.nodes()}["spot-0"] == "preempted"
            assert job.wait(timeout=30).ok
            wait_for(lambda: {n.id: n.state for n in pool.nodes()}.get("spot-0") == "idle", 20, "spot-0 back")
    finally:
        server.shutdown()
    assert notices[0]["event_id"] == "e1" and notices[0]["node_id"] == "spot-0"
    assert [a["state"] for a in job.task(on_spot).attempts] == ["requeued", "succeeded"]
    assert job.task(on_spot).requeue_count == 1


def gone(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_start_task_process_does_not_outlive_the_pool(tmp_path, fast_nodes):
    # The start task runs in a session of its own: only the runner's kill_all ends it with the pool.
    st = bnb.StartTask('echo $$ > "$AZ_BATCH_NODE_SHARED_DIR/start.pid"; exec sleep 300', wait_for_success=False)
    with bnb.Pool("lingering", dedicated=1, start_task=st, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        pidfile = Path(pool._node_root) / "dedicated-0" / "shared" / "start.pid"
        pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "the start task to run"))
        assert not gone(pid)
    try:
        wait_for(lambda: gone(pid), 10, "the start task's process to be killed by pool.close()")
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


class HeldPackage:
    """An app package served on 127.0.0.1 and held back until ``release()``: unpacking takes as long as a test needs."""

    def __init__(self, files: dict):
        import http.server
        import io
        import zipfile
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, text in files.items():
                zf.writestr(name, text)
        body, self.asked, self.released = buf.getvalue(), threading.Event(), threading.Event()
        held = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                held.asked.set()
                held.released.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def do_GET(self):
                self.do_HEAD()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tool.zip"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.released.set()
        self.server.shutdown()


def test_app_packages_hold_the_node_even_without_wait_for_success(tmp_path, fast_nodes):
    package = HeldPackage({"tool.sh": "echo tool"})
    st = bnb.StartTask("true", wait_for_success=False)
    try:
        with bnb.Pool("held", dedicated=1, start_task=st, ledger=Ledger(tmp_path / "l.sqlite"),
                      app_packages=[bnb.AppPackage("tool", "1", package.url)]) as pool:
            job = pool.job("needs-tool", max_task_retries=0)
            job.add_task("t", 'test -f "$AZ_BATCH_APP_PACKAGE_tool_1/tool.sh"')
            assert package.asked.wait(20), "the node never fetched its package"
            # The package is being fetched: the node takes no task yet.
            assert {n.id: n.state for n in pool.nodes()} == {"dedicated-0": "starting"}
            package.released.set()
            assert job.wait(timeout=30).ok
            wait_for(lambda: pool.extension(StartTaskExtension).results.get("dedicated-0"), 20, "the start task")
    finally:
        package.close()


def test_a_bad_app_package_fails_the_node_even_without_wait_for_success(tmp_path, fast_nodes):
    (tmp_path / "junk.zip").write_text("not an archive")
    st = bnb.StartTask("true", wait_for_success=False)
    with bnb.Pool("junk", dedicated=1, start_task=st, ledger=Ledger(tmp_path / "l.sqlite"),
                  app_packages=[bnb.AppPackage("junk", "1", (tmp_path / "junk.zip").as_uri())]) as pool:
        wait_for(lambda: {n.id: n.state for n in pool.nodes()}.get("dedicated-0") == "start_task_failed", 20,
                 "dedicated-0 start_task_failed")
        result = pool.extension(StartTaskExtension).results["dedicated-0"]
    assert result.category == "preprocessing" and "not a zip or tar archive" in result.message


def test_chaos_max_preemptions_holds_with_several_busy_nodes_and_counts_per_context(tmp_path, fast_nodes):
    with bnb.Pool("capped", dedicated=0, spot=3, ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        ext = pool.extension(ChaosExtension)
        job = pool.job("capped", max_task_retries=0)

        def all_busy(round_):
            for i in range(3):
                job.add_task(f"{round_}-{i}", "sleep 1.5")
            wait_for(lambda: sum(n.state == "running" for n in pool.nodes()) == 3, 20, "3 busy spot nodes")
        all_busy("a")
        # p = 1 per busy node per tick: without the per-node check one tick would preempt all three
        with pool.chaos(preempt_rate=1e6, max_preemptions=1, seed=1):
            wait_for(lambda: ext.preemptions, 10, "a preemption")
            assert job.wait(timeout=30).ok
        assert len(ext.preemptions) == 1
        all_busy("b")
        with pool.chaos(preempt_rate=1e6, max_preemptions=1, seed=1):     # a new context counts afresh
            wait_for(lambda: len(ext.preemptions) == 2, 10, "a preemption in the second context")
            assert job.wait(timeout=30).ok
        assert len(ext.preemptions) == 2
