"""Monitoring end to end: a real Prometheus scrapes a pool; alerts fire at a webhook and resolve."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

import batchnb as bnb
from pools import temporary_pool
from services.prometheus import prometheus_server  # noqa: F401 - the session fixture
from waiting import wait_for


@pytest.fixture
def webhook():
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""
    got: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_prometheus_sees_the_ledgers_task_counts(prometheus_server):
    with temporary_pool("mon-prom", dedicated=2) as pool:
        prometheus_server.scrape(pool.metrics_url)
        job = pool.job("scraped", max_task_retries=1)
        job.add_tasks([bnb.TaskSpec(f"ok{i}", "echo ok") for i in range(5)]
                      + [bnb.TaskSpec(f"bad{i}", "exit 3") for i in range(2)])
        job.wait(timeout=120)
        ledger_counts = {s: n for s, n in pool.ledger.task_counts("scraped").items() if n}
        assert ledger_counts == {"succeeded": 5, "failed": 2}

        def scraped():
            rows = prometheus_server.query('sum by (state) (batchnb_tasks{pool="mon-prom",job="scraped"})')
            counts = {r["metric"]["state"]: int(float(r["value"][1])) for r in rows}
            return {s: n for s, n in counts.items() if n} == ledger_counts and counts
        wait_for(scraped, 60, "Prometheus to hold the job's final task counts")
        # two failed tasks retried once each: two retries, and 9 attempts timed
        retries = prometheus_server.query('batchnb_task_retries_total{pool="mon-prom"}')
        assert float(retries[0]["value"][1]) == 2
        runs = prometheus_server.query('batchnb_task_seconds_count{pool="mon-prom"}')
        assert float(runs[0]["value"][1]) == 9
        nodes = prometheus_server.query('sum(batchnb_nodes{pool="mon-prom",group="dedicated"})')
        assert float(nodes[0]["value"][1]) == 2


def test_failure_rate_alert_posts_to_a_webhook_then_resolves(webhook):
    url, got = webhook
    with temporary_pool("mon-fail", dedicated=2) as pool:
        pool.alert("fails", bnb.alerts.failure_rate(above=0.2, window="60s"), action=url)
        job = pool.job("flaky")
        job.add_tasks([bnb.TaskSpec(f"bad{i}", "exit 1") for i in range(3)])
        wait_for(lambda: got, 60, "the webhook to hear the alert fire")
        assert got[0]["alert"] == "fails" and got[0]["state"] == "firing" and got[0]["pool"] == "mon-fail"
        assert "3 of 3 attempts failed" in got[0]["detail"]
        assert pool.alerts()[0]["state"] == "firing"
        # the rate falls below 20% as successes come in (the failures are still in the window)
        job.add_tasks([bnb.TaskSpec(f"ok{i}", "true") for i in range(15)])
        wait_for(lambda: len(got) >= 2, 60, "the webhook to hear the alert resolve")
        assert got[1]["state"] == "resolved" and len(got) == 2
        assert pool.alerts()[0]["state"] == "ok"
        kinds = [(e["kind"], e["state"]) for e in pool.ledger.alert_events("mon-fail")]
        assert kinds == [("alert_rule", None), ("alert", "firing"), ("alert", "resolved")]


def test_no_progress_alert_fires_on_a_job_whose_only_task_sleeps():
    fired: list[dict] = []
    with temporary_pool("mon-stuck", dedicated=1) as pool:
        pool.alert("stuck", bnb.alerts.no_progress(for_="2s", job="sleepy"), action=fired.append)
        job = pool.job("sleepy")
        job.add_task("nap", "sleep 60")
        wait_for(lambda: fired, 30, "the no-progress alert to fire")
        assert fired[0]["state"] == "firing" and "sleepy" in fired[0]["detail"]
        job.terminate()


def test_rules_survive_a_new_pool_on_the_same_ledger(tmp_path):
    from batchnb.engine.ledger import Ledger
    led = Ledger(tmp_path / "ledger.sqlite")
    with bnb.Pool("mon-resume", dedicated=1, ledger=led) as pool:
        pool.alert("spend", bnb.alerts.budget_used(above=0.5), action="log")
    with bnb.Pool("mon-resume", dedicated=1, ledger=led) as pool:
        assert [(a["name"], a["rule"], a["action"], a["state"]) for a in pool.alerts()] == \
            [("spend", "budget_used(above=0.5)", "log", "ok")]


def test_a_log_action_and_bad_input(caplog):
    with temporary_pool("mon-log", dedicated=1) as pool:
        with pytest.raises(bnb.SpecError) as err:
            pool.alert("x", bnb.alerts.node_unusable(), action=42)
        assert err.value.field == "action"
        with pytest.raises(bnb.SpecError) as err:
            pool.alert("x", "failure_rate", action="log")
        assert err.value.field == "rule"
        with caplog.at_level("WARNING", logger="batchnb.alerts"):
            pool.alert("fails", bnb.alerts.failure_rate(above=0.0), action="log")
            pool.job("once").add_task("bad", "exit 2")
            wait_for(lambda: any("alert fails firing on pool mon-log" in r.getMessage() for r in caplog.records),
                     60, "the alert's log record")


def test_logs_outlive_a_preempted_spot_node(tmp_path):
    import shutil

    import dask
    logs = tmp_path / "logs"
    full = "".join(f"{i}\n" for i in range(1, 3001))      # well past the tail the ledger keeps
    # a preempted local spot node never comes back within this test
    with dask.config.set({"batchnb.preempt-return-after": "1h"}), \
            temporary_pool("mon-logs", dedicated=0, spot=1, logs_url=logs.as_uri() + "/{pool}/") as pool:
        job = pool.job("kept")
        ok = job.add_task("ok", "seq 1 3000; echo on-stderr >&2")
        bad = job.add_task("bad", "seq 1 3000; exit 3")
        job.wait(timeout=120)
        wait_for(lambda: len(pool.ledger.job_events("kept", ("logs",))) == 2, 60, "both attempts' logs uploaded")
        assert (logs / "mon-logs" / "kept" / "ok" / "1" / "stdout.txt").read_text() == full
        [spot] = [n.id for n in pool.nodes() if n.group == "spot"]
        pool.preempt(spot)
        wait_for(lambda: [n.state for n in pool.nodes()] in ([], ["preempted"]), 60, "the spot node gone")
        for t in (ok, bad):
            shutil.rmtree(t.attempts[-1]["task_dir"])
        assert ok.stdout() == full and ok.stderr() == "on-stderr\n"
        assert bad.stdout() == full and bad.attempts[-1]["exit_code"] == 3


def test_a_bad_logs_url_is_refused_before_any_node_starts():
    with pytest.raises(bnb.SpecError) as err:
        bnb.Pool("mon-badlogs", dedicated=1, logs_url="/no/protocol")
    assert err.value.field == "logs_url"


def test_queue_wait_alert_fires_while_tasks_wait_for_a_slot_and_resolves_when_they_end():
    changes: list[dict] = []
    with temporary_pool("mon-queue", dedicated=1) as pool:
        pool.alert("queued", bnb.alerts.queue_wait(above="1s"), action=changes.append)
        job = pool.job("queued")
        job.add_tasks([bnb.TaskSpec(f"nap{i}", "sleep 2") for i in range(3)])
        wait_for(lambda: changes, 30, "the queue-wait alert to fire")
        assert changes[0]["state"] == "firing" and "job queued" in changes[0]["detail"]
        job.wait(timeout=60)
        wait_for(lambda: len(changes) >= 2, 30, "the queue-wait alert to resolve")
        assert changes[1]["state"] == "resolved"
