"""job.timeline(): lanes of attempts per node, the task a click opens, failures and "rerun failed",
on a real local pool (the browser's side is tests/e2e/test_browser.py)."""

from __future__ import annotations

import batchnb as bnb
from waiting import wait_for


def test_timeline_opens_a_failed_task_and_reruns_it_once_fixed(pool2, unique, tmp_path):
    side = tmp_path / "fixed"
    job = pool2.job(unique, max_task_retries=0, on_all_tasks_complete="terminate")
    for i in range(4):
        job.add_task(f"ok-{i}", "sleep 0.2")
    job.add_task("needs-file", f"test -f {side} || {{ echo no {side.name} >&2; exit 7; }}")
    job.add_task("after", "echo done", depends_on=["needs-file"])
    job.wait(timeout=60, quiet=True)
    view = job.timeline()
    try:
        data = view.data
        assert sorted(data["lanes"]) == ["dedicated-0", "dedicated-1"] and data["count"] == 5
        outcomes = {bar[1]: bar[5] for bar in data["bars"]}
        assert outcomes["needs-file"] == "failed" and outcomes["ok-0"] == "succeeded"
        assert [(g["exit_code"], g["category"], g["count"]) for g in view.failures] == [(7, "exit_code", 1)]
        view._on_msg(view, {"type": "open", "task": "needs-file"}, [])
        assert view.selected["state"] == "failed" and view.selected["exit_code"] == 7
        assert view.selected["stderr"].strip() == "no fixed" and view.selected["node"].startswith("dedicated-")
        # A zoomed window holds only what overlaps it.
        first = min(bar[3] for bar in data["bars"])
        view._on_msg(view, {"type": "window", "window": [first - 10, first - 5]}, [])
        assert view.window == [first - 10, first - 5] and view.data["count"] == 0
        view._on_msg(view, {"type": "window", "window": None}, [])
        side.write_text("ok")
        view._on_msg(view, {"type": "rerun"}, [])
        wait_for(lambda: view.note == "reactivated 1 failed task", 30, "the rerun's note")
        result = job.wait(timeout=60, quiet=True)
        assert result.counts == {"succeeded": 6} and job.state == bnb.JobState.COMPLETED
        wait_for(lambda: view.job_state == "completed" and not view.failures and view.data["count"] == 7, 30,
                 "the view to show the job completed with its new attempts")
        assert view.selected["state"] == "succeeded" and view.selected["exit_code"] == 0
    finally:
        view.close()


def test_a_refresh_that_read_the_old_window_is_not_shown_after_the_new_windows(pool2, unique, monkeypatch):
    # The event thread refreshes while the kernel takes a new window: the one that read the
    # zoomed window was held up (here, reading the opened task's details) and showed its bars
    # after the whole job's, which then stayed (a browser test saw 6 bars of 9).
    import threading

    job = pool2.job(unique)
    job.add_tasks([{"id": f"t{i}", "command": "true"} for i in range(3)])
    assert job.wait(timeout=60, quiet=True).ok
    view = job.timeline()
    try:
        view._on_msg(view, {"type": "open", "task": "t0"}, [])
        first = min(bar[3] for bar in view.data["bars"])
        view._on_msg(view, {"type": "window", "window": [first - 10, first - 5]}, [])
        assert view.data["count"] == 0
        hold, held = threading.Event(), threading.Event()
        details = view.task_details

        def slow_details(task_id):
            if threading.current_thread().name == "stale-refresh":
                held.set()
                assert hold.wait(10)
            return details(task_id)

        monkeypatch.setattr(view, "task_details", slow_details)
        stale = threading.Thread(target=view._refresh, name="stale-refresh")
        stale.start()
        assert held.wait(10)                    # it has read the zoomed window; now it is held up
        zoom_out = threading.Thread(target=view._on_msg, args=(view, {"type": "window", "window": None}, []))
        zoom_out.start()
        zoom_out.join(0.5)
        hold.set()
        stale.join(10)
        zoom_out.join(10)
        assert not stale.is_alive() and not zoom_out.is_alive()
        assert view.window is None and view.data["count"] == 3
    finally:
        view.close()


def test_rerun_with_nothing_failed_says_so(pool2, unique):
    job = pool2.job(unique)
    job.add_task("ok", "true")
    job.wait(timeout=60, quiet=True)
    view = job.timeline()
    try:
        view.rerun_failed()
        assert view.note == "reactivated 0 failed tasks"
        view._on_msg(view, {"type": "open", "task": "nope"}, [])
        assert view.selected["state"] == "?" and "no task 'nope'" in view.selected["message"]
    finally:
        view.close()


def test_the_shipped_timeline_module_parses_and_imports_nothing_remote(tmp_path):
    import shutil
    import subprocess

    from batchnb.ui.timeline import TimelineView
    text = TimelineView._esm
    assert "export default" in text and "http" not in text and "import " not in text   # _dom.js inlined
    (tmp_path / "timeline.mjs").write_text(text)
    subprocess.run([shutil.which("node"), "--check", str(tmp_path / "timeline.mjs")], check=True,
                   capture_output=True, timeout=30)
