"""Azurite, the Azure Blob emulator, as pytest fixtures and as a plain class.

``azurite`` (session) starts one ``azurite-blob`` on a free 127.0.0.1 port
and stops it at the end; ``azurite_container`` makes a fresh container per
test. :class:`Azurite` is importable on its own (``bench/`` uses it).

Azurite comes from npm, installed by the project's setup::

    npm install --prefix .ci/node azurite@3

A test that needs it fails (never skips) when it is not installed, naming
that command.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP_COMMAND = "npm install --prefix .ci/node azurite@3"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key: the same in every installation, no secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 30.0


class AzuriteNotInstalled(RuntimeError):
    """``azurite-blob`` is neither under ``.ci/node`` nor on PATH."""


def find_azurite() -> str:
    """The ``azurite-blob`` executable: the project's own install, then PATH."""
    local = REPO / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise AzuriteNotInstalled(f"azurite-blob not found in {local.parent} nor on PATH; "
                              f"install it from {REPO} with: {SETUP_COMMAND}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Azurite:
    """One ``azurite-blob`` process on 127.0.0.1, restartable on its port and data folder.

    >>> az = Azurite(); az.start()                      # doctest: +SKIP
    >>> az.fs().mkdir("photos"); az.stop()              # doctest: +SKIP
    """

    def __init__(self, location: str | Path | None = None, port: int | None = None):
        self.executable = find_azurite()
        self.location = Path(location or tempfile.mkdtemp(prefix="azurite-"))
        self.port = port or free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};")

    @property
    def storage_options(self) -> dict:
        """Per-protocol options, as ``Pool(storage_options=...)`` takes them."""
        return {"abfs": {"connection_string": self.connection_string},
                "az": {"connection_string": self.connection_string}}

    def fs(self):
        """An adlfs filesystem on this Azurite."""
        import adlfs
        return adlfs.AzureBlobFileSystem(connection_string=self.connection_string)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "Azurite":
        """Start (or restart) on the same port and data folder; returns once the port answers."""
        if self.running:
            return self
        self.location.mkdir(parents=True, exist_ok=True)
        log = open(self.location / "azurite.log", "ab")
        # --disableTelemetry: Azurite would otherwise send usage data to Azure
        # (these machines have no network beyond the package registries).
        self._proc = subprocess.Popen(
            [self.executable, "--silent", "--location", str(self.location), "--blobHost", "127.0.0.1",
             "--blobPort", str(self.port), "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"azurite-blob exited with code {self._proc.returncode} at start; "
                                   f"its log: {self._log_tail()}")
            if _answers(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"azurite-blob did not answer on 127.0.0.1:{self.port} within "
                           f"{START_TIMEOUT:.0f}s; its log: {self._log_tail()}")

    def stop(self) -> None:
        """Stop the process this object started; returns once the port is closed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        deadline = time.monotonic() + 10
        while _answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return (self.location / "azurite.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "Azurite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """A running Azurite for the session: ``.connection_string``, ``.port``,
    ``.storage_options``, ``.fs()``, ``.stop()`` and ``.start()``."""
    try:
        az, missing = Azurite(location=tmp_path_factory.mktemp("azurite")), None
    except AzuriteNotInstalled as exc:
        az, missing = None, str(exc)
    if missing:  # outside the except block: the report shows the setup command, not a traceback chain
        pytest.fail(missing, pytrace=False)
    with az:
        yield az


@pytest.fixture
def azurite_container(azurite):
    """A fresh, empty container on the session's Azurite; its name.

    Not deleted afterwards: names are unique and Azurite's data folder goes
    with the session.
    """
    name = f"t{uuid.uuid4().hex[:20]}"
    azurite.fs().mkdir(name)
    return name
