"""The quickstart notebook in JupyterLab, in headless Chromium: run all cells,
see the JobView render and reach the job's final counts, keep a screenshot.

JupyterLab listens on 127.0.0.1 only, with its own config, data, runtime,
settings and workspace folders, so nothing of the machine's Jupyter setup
leaks in and no tab of an earlier run comes back.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_status(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)   # a server's socket has no event to wait on
    raise TimeoutError(f"jupyter lab did not answer {url} in {timeout}s")


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a free 127.0.0.1 port, serving a folder holding a copy of the quickstart."""
    root = tmp_path / "work"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "quickstart.ipynb", root / "quickstart.ipynb")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "get notified about Jupyter news?" toast over the page.
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ, BATCHNB_HOME=str(tmp_path / "home"))
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        env[var] = str(tmp_path / sub)
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
           f"--LabApp.user_settings_dir={tmp_path / 'settings'}"]
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        _wait_status(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield {"url": f"http://127.0.0.1:{port}/lab/tree/quickstart.ipynb?token={token}",
               "home": tmp_path / "home", "log": tmp_path / "lab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_quickstart_in_jupyterlab_shows_the_live_job_view(lab):
    from playwright.sync_api import expect, sync_playwright

    from batchnb.engine.ledger import Ledger

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "quickstart-browser.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(lab["url"])
            expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            panel = page.locator(PANEL)
            view = panel.locator(".bnb-job")
            expect(view).to_have_count(1, timeout=60_000)
            # The cell after the view waits for the job; its static result marks the end.
            expect(panel.locator(".batchnb-result")).to_have_count(1, timeout=120_000)
            counts = {s: n for s, n in Ledger(lab["home"] / "ledger.sqlite").task_counts("quickstart").items() if n}
            assert counts == {"succeeded": 38, "failed": 1, "blocked": 1}
            for state, n in counts.items():
                expect(view.locator(f'.bnb-count[data-state="{state}"]')).to_have_text(str(n), timeout=10_000)
            expect(view.locator('[data-role="done"]')).to_have_text("40/40")
            expect(view.locator('[data-role="retries"]')).to_have_text("1")
            # the failed task is listed, openable, with its exit code and stderr tail
            view.locator(".bnb-failures > summary").click()
            row = view.locator('tr[data-task="flaky"]')
            expect(row).to_contain_text("3")
            row.locator("summary").click()
            expect(row.locator("pre")).to_contain_text("disk quota exceeded")
            # the pool and cost views rendered too
            expect(panel.locator(".bnb-pool .bnb-node")).to_have_count(2)
            expect(panel.locator(".bnb-cost")).to_contain_text("dedicated", timeout=30_000)
            view.scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=True)
            panel.locator(".bnb-cost").scroll_into_view_if_needed()     # the static result and the cost
            page.screenshot(path=str(ARTIFACTS / "quickstart-browser-end.png"), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


_RERUN_CELLS = [
    # A job whose one failing task waits for a side file that the test makes later.
    'import pathlib\nimport batchnb as bnb\n\nside = pathlib.Path("fixed.txt").resolve()\n'
    'pool = bnb.Pool("rerun", dedicated=2)\n'
    'job = pool.job("rerun", max_task_retries=0, on_all_tasks_complete="terminate")\n'
    'for i in range(6):\n    job.add_task(f"ok-{i}", "sleep 0.3")\n'
    'job.add_task("needs-file", f"test -f {side} || {{ echo missing {side.name} >&2; exit 7; }}")\n'
    'job.add_task("after", "echo done", depends_on=["needs-file"])\n'
    'print(job.wait(timeout=120, quiet=True).counts)',
    'job.timeline()',
]


def test_timeline_failure_drill_down_and_rerun_failed_in_jupyterlab(lab):
    """The timeline's lanes, a click on the failed bar (its exit code and stderr), the failures
    grouped, then "rerun failed" once its side file exists, until the job completes."""
    import nbformat
    from playwright.sync_api import expect, sync_playwright

    from batchnb.engine.ledger import Ledger

    root = lab["home"].parent / "work"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in _RERUN_CELLS])
    # The quickstart's kernel, so that JupyterLab starts it rather than asking for one.
    nb.metadata = json.loads((REPO / "notebooks" / "quickstart.ipynb").read_text())["metadata"]
    nbformat.write(nb, root / "rerun.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.goto(lab["url"].replace("quickstart.ipynb", "rerun.ipynb"))
            expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            view = page.locator(PANEL).locator(".bnb-timeline")
            expect(view).to_have_count(1, timeout=120_000)
            expect(view.locator('[data-role="state"]')).to_have_text("completed", timeout=30_000)
            expect(view.locator(".bnb-tl-lane")).to_have_count(2)
            expect(view.locator(".bnb-tl-bar")).to_have_count(7)
            failed = view.locator('.bnb-tl-bar[data-outcome="failed"]')
            expect(failed).to_have_count(1)
            expect(view.locator('[data-role="failure-group"]')).to_have_count(1)
            expect(view.locator('[data-role="failure-group"]')).to_contain_text("exit_code")
            failed.click()
            task = view.locator('[data-role="task"]')
            expect(task).to_contain_text("needs-file failed · exit code 7", timeout=10_000)
            expect(task.locator('[data-role="stderr"]')).to_contain_text("missing fixed.txt")
            view.locator('[data-role="zoom-in"]').click()
            expect(view.locator('[data-role="shown"]')).to_contain_text("attempt")
            view.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "timeline-failure.png"), full_page=True)

            (root / "fixed.txt").write_text("ok")
            view.locator('[data-role="zoom-reset"]').click()
            view.locator('[data-role="rerun-failed"]').click()
            expect(view.locator('[data-role="note"]')).to_have_text("reactivated 1 failed task", timeout=30_000)
            expect(view.locator('[data-role="failures"]')).to_contain_text("0 failed tasks", timeout=60_000)
            expect(view.locator('[data-role="state"]')).to_have_text("completed", timeout=60_000)
            expect(view.locator(".bnb-tl-bar")).to_have_count(9, timeout=30_000)
            expect(task).to_contain_text("needs-file succeeded · exit code 0")     # the open task, as it is now
            counts = {s: n for s, n in Ledger(lab["home"] / "ledger.sqlite").task_counts("rerun").items() if n}
            assert counts == {"succeeded": 8}
            page.screenshot(path=str(ARTIFACTS / "timeline-rerun.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "timeline-rerun.png").stat().st_size > 10_000
