"""A real dask-gateway server as a session fixture, on 127.0.0.1.

``gateway_server`` (session) writes a config into a temporary folder — the
local backend (``UnsafeLocalBackend``: scheduler and worker processes of
this user, as root needs), simple password auth, a free port — starts
``dask-gateway-server`` as a subprocess and waits (bounded) until its
``/api/health`` passes. At the end it stops the server by pid (the server
stops its clusters' processes itself) and then looks for orphans: any
process still working in one of its clusters' folders is killed by pid and
fails the session. Nothing is skipped: a server that does not come up fails
the tests that need it, with its log.

dask-gateway-server comes with the project's test setup (``make setup-test``:
``pip install "dask-gateway-server[local]"``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

START_TIMEOUT = 60.0
REPO = Path(__file__).resolve().parents[2]


class GatewayServer:
    """dask-gateway-server with its local backend; ``address`` is what ``backend="gateway"`` takes."""

    user = "bnb-tests"

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bnb-gateway-"))
        self.clusters = self.dir / "clusters"
        self.password = secrets.token_hex(8)
        self.port = _free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen | None = None

    def auth(self):
        from dask_gateway import BasicAuth
        return BasicAuth(self.user, self.password)

    def config(self) -> str:
        py = json.dumps(sys.executable)
        return "\n".join([
            'c.Gateway.address = "127.0.0.1:0"',                       # its private API
            f'c.Proxy.address = "127.0.0.1:{self.port}"',              # HTTP and scheduler traffic
            'c.Gateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"',
            'c.Gateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"',
            f'c.SimpleAuthenticator.password = "{self.password}"',
            f'c.LocalBackend.clusters_directory = "{self.clusters}"',
            # No dask-scheduler/dask-worker scripts in this environment: the modules they ran.
            f'c.ClusterConfig.scheduler_cmd = [{py}, "-m", "distributed.cli.dask_scheduler"]',
            f'c.ClusterConfig.worker_cmd = [{py}, "-m", "distributed.cli.dask_worker"]',
            'c.ClusterConfig.worker_cores = 1',
            'c.ClusterConfig.worker_memory = "1 G"',
            'c.LocalBackend.sigint_timeout = 5',
            "",
        ])

    def start(self) -> None:
        cfg = self.dir / "gateway_config.py"
        cfg.write_text(self.config())
        self.clusters.mkdir()
        # Its clusters' processes inherit PYTHONPATH: they must import this checkout's batchnb.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dask_gateway_server", "-f", str(cfg)],
                                         cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                what = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "did not answer"
                self.stop()
                raise RuntimeError(f"dask-gateway-server {what} within {START_TIMEOUT}s; its log:\n"
                                   f"{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/api/health", timeout=2) as resp:
                return json.load(resp).get("status") == "pass"
        except (OSError, ValueError):
            return False

    def cluster_processes(self) -> list[int]:
        """Pids of processes working in a cluster's folder (the gateway starts each there)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(self.clusters)):
                found.append(int(entry.name))
        return found

    def stop(self) -> list[int]:
        """Stop the server by pid; return the pids of cluster processes it left behind (killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        self.proc.send_signal(signal.SIGTERM)       # it stops its clusters, then exits
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        orphans = self.cluster_processes()
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return orphans


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gateway_server():
    """A running dask-gateway server (see the module's text), stopped at the end of the session."""
    server = GatewayServer()
    server.start()
    try:
        yield server
    finally:
        orphans = server.stop()
        assert not orphans, f"dask-gateway-server left cluster processes {orphans} behind; its log: {server.log}"
        shutil.rmtree(server.dir, ignore_errors=True)      # kept, with its log, when something was left
