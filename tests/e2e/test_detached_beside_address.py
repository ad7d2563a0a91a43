"""A detached address pool whose agent runs in the site's TLS Dask scheduler (issue 13, point 1).

A real ``dask scheduler`` and one ``dask worker`` (with a nanny) run on
127.0.0.1 with TLS, their certificates and alice's and bob's signed by a CA
made here: the site's. alice's script makes the pool beside that scheduler,
adds a job, grants bob ``reader``, and is SIGKILLed. Another process of
alice's (same batchnb home) finds the pool by name and each task succeeded
once; bob, with his own certificate and home, reaches it by address, reads,
and may not add tasks. alice's ``pool.close()`` removes her record and the
agent's handlers, and the scheduler (the site's) runs on. The scheduler and
worker are stopped by pid (their process group) after the module.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from detached_agents import end_script, script_env, start_script
from waiting import wait_for


def _pem(cert, key) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _certificates(folder: Path) -> Path:
    """The site's CA and the certificates it signed: the scheduler's, the worker's, alice's, bob's."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)

    def make(cn, issuer=None, ca=False):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (x509.CertificateBuilder().subject_name(name)
                   .issuer_name(issuer[0].subject if issuer else name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key

    folder.mkdir(parents=True, exist_ok=True)
    ca = make("site CA", ca=True)
    (folder / "ca.pem").write_bytes(_pem(*ca)[0])
    for who in ("scheduler", "worker", "alice", "bob"):
        cert, key = _pem(*make(who, ca))
        (folder / f"{who}.pem").write_bytes(cert)
        (folder / f"{who}-key.pem").write_bytes(key)
        os.chmod(folder / f"{who}-key.pem", 0o600)
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def security(certs: Path, who: str):
    from distributed.security import Security
    return Security(require_encryption=True, tls_ca_file=str(certs / "ca.pem"),
                    tls_client_cert=str(certs / f"{who}.pem"), tls_client_key=str(certs / f"{who}-key.pem"))


class Site:
    """The site's scheduler and worker processes."""

    def __init__(self, root: Path):
        self.root, self.certs = root, _certificates(root / "certs")
        self.folder = root / "scheduler"            # the scheduler's working folder: the agent's files go here
        self.folder.mkdir()
        self.address = f"tls://127.0.0.1:{_free_port()}"
        self.procs: list[subprocess.Popen] = []

    def _tls(self, who: str) -> list[str]:
        return ["--tls-ca-file", str(self.certs / "ca.pem"), "--tls-cert", str(self.certs / f"{who}.pem"),
                "--tls-key", str(self.certs / f"{who}-key.pem")]

    def start(self) -> None:
        env = script_env(self.root / "site-home")
        port = self.address.rsplit(":", 1)[1]
        with open(self.root / "scheduler.log", "wb") as log:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                 "--port", port, "--no-dashboard", *self._tls("scheduler")], cwd=self.folder, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        (self.root / "worker").mkdir()
        with open(self.root / "worker.log", "wb") as log:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--name", "w0", "--nthreads", "2",
                 "--host", "127.0.0.1", "--no-dashboard", *self._tls("worker")], cwd=self.root / "worker", env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        from distributed import Client
        with Client(self.address, security=security(self.certs, "alice"), timeout=120, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=180)

    @property
    def scheduler(self) -> subprocess.Popen:
        return self.procs[0]

    def on_scheduler(self, fn):
        """``fn(dask_scheduler)`` run in the scheduler's process, as alice."""
        from distributed import Client
        with Client(self.address, security=security(self.certs, "alice"), timeout=60, set_as_default=False) as c:
            return c.run_on_scheduler(fn)

    def stop(self) -> None:
        for proc in reversed(self.procs):        # each in a session of its own: the nanny's worker goes too
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture(scope="session")
def tls_site(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("tls-site"))
    try:
        site.start()
        yield site
    finally:
        site.stop()


def _agent_handlers(dask_scheduler) -> list:
    return sorted(h for h in dask_scheduler.handlers if h.startswith("bnb_")) + \
        [p for p in dask_scheduler.plugins if p == "batchnb-agent"]


CREATOR = """
    import sys
    import batchnb as bnb
    from distributed.security import Security

    address, certs = sys.argv[1:3]
    sec = Security(require_encryption=True, tls_ca_file=f"{certs}/ca.pem", tls_client_cert=f"{certs}/alice.pem",
                   tls_client_key=f"{certs}/alice-key.pem")
    pool = bnb.Pool("site-beside", backend="address", address=address, security=sec, agent_on_scheduler=True,
                    detached=True)
    job = pool.job("many")
    job.add_tasks([{"id": f"t{i:02d}", "command": f"sleep 0.3; echo t{i:02d}"} for i in range(20)])

    def square(x):                # defined in __main__: travels by value to the scheduler's agent and the worker
        return x * x

    job.submit(square, 7, task_id="py")
    pool.grant("bob", "reader")
    try:
        pool.credentials("carol")
    except bnb.BatchError as exc:
        print("credentials", type(exc).__name__, exc, flush=True)
    print("identity", pool.identity, flush=True)
    print("submitted", flush=True)
    job.wait()                    # killed meanwhile
"""

ALICE = """
    import collections, json
    import batchnb as bnb

    pool = bnb.Pool.connect("site-beside")
    print("pools " + json.dumps(bnb.pools()), flush=True)
    job = pool.job("many")
    result = job.wait(timeout=240, quiet=True)
    print("counts " + json.dumps(result.counts), flush=True)
    print("attempts " + json.dumps(collections.Counter(len(job.task(t.id).attempts) for t in job.tasks())), flush=True)
    print("py", job.task("py").result(), "t07", job.task("t07").stdout().strip(), flush=True)
    pool.disconnect()
"""

BOB = """
    import json, sys
    import batchnb as bnb
    from distributed.security import Security

    address, certs = sys.argv[1:3]
    sec = Security(require_encryption=True, tls_ca_file=f"{certs}/ca.pem", tls_client_cert=f"{certs}/bob.pem",
                   tls_client_key=f"{certs}/bob-key.pem")
    pool = bnb.Pool.connect(address, security=sec)
    job = pool.job("many")
    print("bob " + json.dumps({"identity": pool.identity, "counts": job.counts()}), flush=True)
    try:
        job.add_task("sneaky", "echo no")
    except bnb.PermissionDenied as exc:
        print("denied", exc, flush=True)
    pool.disconnect()
"""


def _read_until(proc: subprocess.Popen, last: str, timeout: float) -> list[str]:
    """The lines ``proc`` prints up to ``last`` (bounded; its end before that is a failure)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if lines[-1] == last:
                return lines
    raise AssertionError(f"{last!r} not printed within {timeout}s:\n" + "\n".join(lines))


def _run(tmp_path: Path, name: str, text: str, home: Path, *args: str) -> list[str]:
    proc = start_script(tmp_path, name, text, home, *args)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        end_script(proc)
    assert proc.returncode == 0, out
    return out.splitlines()


def _line(lines: list[str], word: str) -> str:
    return next(x for x in lines if x.startswith(word + " "))[len(word) + 1:]


def test_an_address_pools_agent_runs_in_the_sites_tls_scheduler_with_each_callers_role(tmp_path, tls_site,
                                                                                       monkeypatch):
    import batchnb as bnb
    from batchnb.engine.ledger import Ledger
    alice_home, certs = tmp_path / "alice-home", str(tls_site.certs)
    creator = start_script(tmp_path, "creator", CREATOR, alice_home, tls_site.address, certs)
    try:
        lines = _read_until(creator, "submitted", 300)
    finally:
        end_script(creator)             # SIGKILL: the creator is gone while its job runs
    assert _line(lines, "identity") == "alice"
    refused = _line(lines, "credentials")
    assert refused.startswith("BatchError ") and "holds no CA key" in refused, lines
    # Nothing of the pool runs or is kept on alice's side but its record and her credentials.
    record_file = alice_home / "pools" / "site-beside.json"
    record = json.loads(record_file.read_text())
    assert record["pid"] is None and record["address"] == tls_site.address and record["beside_scheduler"]
    owner = Path(record["tls"]["owner"])
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in [record_file, *owner.iterdir()]} == {
        "site-beside.json": "0o600", "ca.pem": "0o600", "cert.pem": "0o600", "key.pem": "0o600"}
    assert not (alice_home / "ledger.sqlite").exists()
    assert record["ledger"] == str(tls_site.folder / "batchnb" / "ledger.sqlite")

    out = _run(tmp_path, "alice", ALICE, alice_home)
    assert [p["name"] for p in json.loads(_line(out, "pools"))] == ["site-beside"]
    assert json.loads(_line(out, "counts")) == {"succeeded": 21}
    assert json.loads(_line(out, "attempts")) == {"1": 21}
    assert _line(out, "py") == "49 t07 t07"

    out = _run(tmp_path, "bob", BOB, tmp_path / "bob-home", tls_site.address, certs)
    bob = json.loads(_line(out, "bob"))
    assert bob["identity"] == "bob" and bob["counts"]["succeeded"] == 21
    denied = _line(out, "denied")
    assert "'bob' may not add_tasks" in denied and "contributor" in denied, out

    monkeypatch.setenv("BATCHNB_HOME", str(alice_home))
    pool = bnb.Pool.connect("site-beside")
    assert pool.job("many").counts()["succeeded"] == 21
    assert tls_site.on_scheduler(_agent_handlers) != []
    alice = security(tls_site.certs, "alice")
    with pytest.raises(bnb.SpecError, match="runs already"):         # its name, in this home
        bnb.Pool("site-beside", backend="address", address=tls_site.address, security=alice,
                 agent_on_scheduler=True, detached=True)
    with pytest.raises(bnb.SpecError, match="one per scheduler"):    # its handlers are the scheduler's
        bnb.Pool("site-second", backend="address", address=tls_site.address, security=alice,
                 agent_on_scheduler=True, detached=True)
    watching = bnb.Pool.connect(tls_site.address, security=security(tls_site.certs, "bob"))
    pool.close()
    # A client still connected hears that the agent is gone (the scheduler answers on, with no agent).
    wait_for(lambda: watching._engine.closed, 60, "bob's client to see the agent gone")
    assert "cut off from its agent" in repr(watching)
    assert not record_file.exists() and not owner.exists() and bnb.pools() == []
    assert tls_site.on_scheduler(_agent_handlers) == []     # the agent left the scheduler ...
    assert tls_site.scheduler.poll() is None                # ... which is the site's, and runs on
    ledger = Ledger(tls_site.folder / "batchnb" / "ledger.sqlite")
    stops = [json.loads(e["data"]) for e in ledger.events() if e["kind"] == "pool" and e["state"] == "stopped"]
    assert [(d["pool"], d["reason"]) for d in stops if d["pool"] == "site-beside"] == [
        ("site-beside", "closed by a client")]


def test_an_idle_agent_beside_the_scheduler_stops_itself_and_says_so_in_the_ledger(tmp_path, tls_site,
                                                                                    monkeypatch):
    import dask

    import batchnb as bnb
    import batchnb.engine.ledger
    from batchnb.engine.ledger import Ledger
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    with dask.config.set({"batchnb.agent-idle-timeout": "2s"}):
        pool = bnb.Pool("site-idle", backend="address", address=tls_site.address,
                        security=security(tls_site.certs, "alice"), agent_on_scheduler=True, detached=True)
    pool.job("quick").add_task("a", "echo a")
    assert pool.job("quick").wait(timeout=120, quiet=True).counts == {"succeeded": 1}
    assert [p["name"] for p in bnb.pools()] == ["site-idle"]
    listed = subprocess.run([sys.executable, "-c", "from batchnb.cli import main; raise SystemExit(main())",
                             "pool", "list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split()      # no pid of its own: it runs in the site's scheduler
    assert row[0] == "site-idle" and row[1] == "-" and row[-1] == tls_site.address, listed.stdout
    # The owner's pool.client reaches the site's scheduler with the credentials beside the record.
    assert pool.client.scheduler_info()["address"] == tls_site.address
    pool.disconnect()
    wait_for(lambda: tls_site.on_scheduler(_agent_handlers) == [], 120, "the idle agent to leave the scheduler")
    assert tls_site.scheduler.poll() is None
    assert bnb.pools() == [] and not (tmp_path / "home" / "pools" / "site-idle.json").exists()
    ledger = Ledger(tls_site.folder / "batchnb" / "ledger.sqlite")
    stops = [json.loads(e["data"]) for e in ledger.events() if e["kind"] == "pool" and e["state"] == "stopped"]
    reasons = [d["reason"] for d in stops if d["pool"] == "site-idle"]
    assert len(reasons) == 1 and reasons[0].startswith("idle") and "agent-idle-timeout" in reasons[0], reasons
    with pytest.raises(bnb.SpecError, match="site-idle"):
        bnb.Pool.connect("site-idle")


def test_agent_on_scheduler_over_plain_tcp_or_without_certificates_is_refused_at_once(tmp_path, monkeypatch):
    import batchnb as bnb
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    started = time.monotonic()
    with pytest.raises(bnb.SpecError, match="over plain tcp it could not tell callers apart") as err:
        bnb.Pool("plain", backend="address", address="tcp://127.0.0.1:9", agent_on_scheduler=True, detached=True)
    assert err.value.field == "agent_on_scheduler"
    with pytest.raises(bnb.SpecError, match="tls_client_cert") as err:
        bnb.Pool("nocert", backend="address", address="tls://127.0.0.1:9", agent_on_scheduler=True, detached=True)
    assert err.value.field == "security"
    with pytest.raises(bnb.SpecError, match="needs detached=True") as err:
        bnb.Pool("in-kernel", backend="address", address="tls://127.0.0.1:9", agent_on_scheduler=True)
    assert err.value.field == "agent_on_scheduler"
    assert time.monotonic() - started < 10          # refused at once: nothing was reached or started
    assert not (tmp_path / "home" / "pools").exists() or not list((tmp_path / "home" / "pools").iterdir())
