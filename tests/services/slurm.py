"""A single-machine Slurm cluster as a session fixture (FIELD-NOTES "Slurm on one machine").

``slurm`` (session) writes a slurm.conf into a temporary folder, starts a
munged of its own (own key and socket, so it neither needs nor disturbs a
system one), ``slurmctld`` and ``slurmd`` on free 127.0.0.1 ports, waits
until the node is idle, and puts ``SLURM_CONF`` in the environment of the
tests and of everything they start (dask-jobqueue's sbatch, the workers,
papermill's kernels). At the end it cancels its jobs and stops the three
daemons by pid. Nothing is skipped: a daemon that is missing or does not
come up fails the tests that need it, with its log.

Slurm comes from Debian, installed by the project's setup (``make setup-test``)::

    apt-get install -y slurm-wlm munge
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SETUP_COMMAND = "apt-get install -y slurm-wlm munge"
START_TIMEOUT = 30.0
MAX_MEMORY_MB = 4000       # what a node offers jobs: enough for a few 1 GB workers


class SlurmError(RuntimeError):
    """The test Slurm cluster could not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise SlurmError(f"{name} not found; install Slurm and munge with: {SETUP_COMMAND}")
    return path


class Slurm:
    """munged + slurmctld + slurmd on this machine, with one partition ``debug`` of one node."""

    partition = "debug"

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bnb-slurm-"))
        self.conf = str(self.dir / "slurm.conf")
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": self.conf}

    def run(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([_tool(args[0]), *args[1:]], env=self.env, capture_output=True, text=True, timeout=30)
        if check and out.returncode:
            raise SlurmError(f"{' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def node_resources(self) -> tuple[int, int]:
        """CPUs and memory (MB) to declare: what ``slurmd -C`` finds, memory capped (more drains the node)."""
        found = subprocess.run([_tool("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
        cpus = int(re.search(r"CPUs=(\d+)", found).group(1))
        memory = int(re.search(r"RealMemory=(\d+)", found).group(1))
        return cpus, min(memory, MAX_MEMORY_MB)

    def write_conf(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "log", "munge"):
            (d / sub).mkdir(mode=0o700, exist_ok=True)
        cpus, memory = self.node_resources()
        (d / "slurm.conf").write_text("\n".join([
            "ClusterName=bnbtest", "SlurmctldHost=localhost",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={d}/munge/munge.sock",
            f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/log/slurmctld.log", f"SlurmdLogFile={d}/log/slurmd.log",
            # A job's processes are its process group: a worker orphaned by its batch script (which
            # SIGTERM ends first) is still the job's and gets SIGKILL after KillWait; linuxproc,
            # which follows parent links, loses it and leaves it running.
            "ProctrackType=proctrack/pgid", "KillWait=5", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "MpiDefault=none",
            "ReturnToService=2",
            f"NodeName=localhost CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP", ""]))

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.dir / "log" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen([_tool(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        log.close()

    def _logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                         for p in sorted((self.dir / "log").glob("*")))

    def start(self) -> None:
        if os.geteuid() != 0:
            raise SlurmError("the Slurm fixture runs slurmd, which needs root (the test machines run as root)")
        self.write_conf()
        key = self.dir / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        m = self.dir / "munge"
        self._spawn("munged", "-F", "-f", f"--socket={m}/munge.sock", f"--key-file={key}",
                    f"--log-file={m}/munged.log", f"--pid-file={m}/munged.pid", f"--seed-file={m}/munged.seed")
        self._wait(lambda: (m / "munge.sock").exists(), "munged's socket")
        self._spawn("slurmctld", "-D", "-i")
        self._spawn("slurmd", "-D", "-N", "localhost")
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).strip() == "idle", "the node idle")

    def _wait(self, cond, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise SlurmError(f"{', '.join(dead)} exited while waiting for {what}\n{self._logs()}")
            if cond():
                return
            time.sleep(0.1)
        raise SlurmError(f"timed out after {START_TIMEOUT:g}s waiting for {what}\n{self._logs()}")

    def jobs(self, name_prefix: str = "", live: bool = False) -> list[dict]:
        """The jobs Slurm lists (pending, running or completing), optionally by name prefix;
        ``live``: pending or running only (a cancelled job is listed as completing for a moment)."""
        rows = self.run("squeue", "-h", "-o", "%i|%j|%T").split()
        jobs = [dict(zip(("id", "name", "state"), row.split("|"))) for row in rows]
        return [j for j in jobs if j["name"].startswith(name_prefix)
                and (not live or j["state"] in ("PENDING", "RUNNING"))]

    def job_processes(self) -> list[int]:
        """Pids of processes Slurm started for this cluster's jobs (SLURM_JOB_ID and this SLURM_CONF)."""
        mine = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mine in env and any(v.startswith(b"SLURM_JOB_ID=") for v in env):
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "-u", str(os.geteuid()), check=False)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (self.jobs() or self.job_processes()):
                time.sleep(0.1)
        for pid in self.job_processes():     # whatever a job left behind, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name in ("slurmd", "slurmctld", "munged"):        # by pid, in reverse order of start
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm():
    """A running single-node Slurm; ``SLURM_CONF`` is set for the session while it runs."""
    cluster = Slurm()
    before = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = cluster.conf
        yield cluster
    finally:
        cluster.stop()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
