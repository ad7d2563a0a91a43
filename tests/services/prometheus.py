"""A real Prometheus server (Debian's ``prometheus``) as a session fixture, on 127.0.0.1.

``prometheus_server`` (session) writes a ``prometheus.yml`` whose one job
finds its targets in a file (``file_sd_configs``) and scrapes them every
second; a test adds a pool's endpoint with ``server.scrape(url)`` once the
pool runs (its port is chosen free then, so it cannot be written before
Prometheus starts). Prometheus keeps its data in a temporary folder, listens
on a free 127.0.0.1 port, is waited for (bounded) on ``/-/ready`` and is
stopped by pid at the end. ``honor_labels: true`` keeps the families' own
``job`` label (the job's id) rather than Prometheus's scrape-job name. Nothing is skipped: a server that does not come
up fails the tests that need it, with its log.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """``address`` is the HTTP API's base URL; ``scrape(url)`` adds a target, ``query(promql)`` asks."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bnb-prometheus-"))
        self.port = _free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.targets = self.dir / "targets.json"
        self.log = self.dir / "prometheus.log"
        self.proc: subprocess.Popen | None = None
        self._urls: list[str] = []

    def start(self) -> None:
        self.targets.write_text("[]")
        (self.dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: batchnb\n    honor_labels: true\n    file_sd_configs:\n"
            f"      - files: ['{self.targets}']\n        refresh_interval: 1s\n")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                what = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "was not ready"
                self.stop()
                raise RuntimeError(f"prometheus {what} within {START_TIMEOUT}s; its log:\n"
                                   f"{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def scrape(self, metrics_url: str) -> None:
        """Scrape ``metrics_url`` (http://host:port/path) from now on, every second."""
        parts = urllib.parse.urlsplit(metrics_url)
        self._urls.append(metrics_url)
        groups = [{"targets": [urllib.parse.urlsplit(u).netloc],
                   "labels": {"__metrics_path__": urllib.parse.urlsplit(u).path}} for u in self._urls]
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets)        # Prometheus must never read half a file
        assert parts.scheme == "http"

    def query(self, promql: str) -> list[dict]:
        """The instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        url = f"{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def prometheus_server():
    server = PrometheusServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
