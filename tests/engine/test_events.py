"""The event bus: immediate and throttled subscribers, filters, robustness."""

from __future__ import annotations

import threading
import time

from batchnb.engine.events import EventBus, JobStateChanged, TaskStateChanged


def ev(i, job="j"):
    return TaskStateChanged(job, f"t{i}", "running", "active", float(i))


def test_immediate_delivery_and_filters():
    bus = EventBus()
    everything, only_j, only_jobs = [], [], []
    bus.subscribe(everything.extend)
    bus.subscribe(only_j.extend, job_id="j")
    bus.subscribe(only_jobs.extend, kinds=(JobStateChanged,))
    bus.publish_many([ev(1), ev(2, job="k"), JobStateChanged("j", "completed", 3.0)])
    assert len(everything) == 3
    assert [e.job_id for e in only_j] == ["j", "j"]
    assert [type(e) for e in only_jobs] == [JobStateChanged]


def test_throttled_subscriber_gets_everything_in_few_calls():
    bus = EventBus()
    calls, got, done = [], [], threading.Event()

    def cb(events):
        calls.append(time.monotonic())
        got.extend(events)
        if len(got) == 500:
            done.set()
    bus.subscribe(cb, interval=0.2)
    for i in range(500):
        bus.publish(ev(i))
        time.sleep(0.001)
    assert done.wait(5)
    assert [e.task_id for e in got] == [f"t{i}" for i in range(500)]
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert all(g >= 0.15 for g in gaps) and len(calls) <= 6


def test_a_broken_subscriber_does_not_stop_others():
    bus = EventBus()
    ok = []
    bus.subscribe(lambda evs: 1 / 0)
    bus.subscribe(ok.extend)
    bus.publish(ev(1))
    assert len(ok) == 1


def test_close_and_flush():
    bus = EventBus()
    got = []
    sub = bus.subscribe(got.extend, interval=60)
    bus.publish(ev(1))
    sub.flush()
    assert len(got) == 1
    sub.close()
    bus.publish(ev(2))
    assert len(got) == 1


def test_the_flusher_thread_ends_with_its_last_subscriber():
    bus = EventBus()
    sub = bus.subscribe(lambda evs: None, interval=0.05)
    flusher = bus._flusher
    assert flusher.is_alive()
    sub.close()
    flusher.join(5)
    assert not flusher.is_alive()
    got = []
    bus.subscribe(got.extend, interval=0.05)   # a new one starts a new thread
    bus.publish(ev(1))
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(got) == 1


def test_a_task_events_data_text_is_what_json_dumps_writes_for_any_node_and_reason():
    import json
    from batchnb.engine.ledger_batch import attempt_data
    for n, node, reason in [(1, "dedicated-0", None), (3, None, 'retry after exit code 1'),
                            (2, "spot-1", 'dependency "a\\b" failed\n'), (7, "nœud-é", "raison: ✓ \t done")]:
        text = attempt_data(n, node, reason)
        assert text == json.dumps({"attempt": n, "node": node, "reason": reason})
        assert json.loads(text) == {"attempt": n, "node": node, "reason": reason}
