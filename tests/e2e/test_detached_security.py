"""A detached pool's agent talks TLS, knows who calls it, and checks their roles (issue 16, points 1 and 3).

One agent (a real ``python -m batchnb.agent`` process, in this module's own
batchnb home) serves the tests; other identities are clients showing
credentials the owner issued (``pool.credentials``), in this process or in a
script of their own. The agent is stopped at the end, by pid if closing it failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

import batchnb as bnb
from batchnb.engine import audit

from detached_agents import detached_pool
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    home = tmp_path_factory.mktemp("secured") / "home"
    with detached_pool(home, "shared", dedicated=1, task_slots_per_node=2) as pool:
        yield pool


def _as(pool, identity: str, role: str | None = None, job: str | None = None):
    """A client of ``pool`` that shows ``identity``'s credentials (given ``role`` first)."""
    folder = pool.credentials(identity)
    if role is not None:
        pool.grant(identity, role, job=job)
    return bnb.Pool.connect(pool.address, security=folder)


async def _plain_connect(address: str):
    from distributed.comm import connect
    comm = await connect(address, timeout=10)
    try:
        await comm.write({"op": "bnb_hello", "client": "plain"})
        return await comm.read()
    finally:
        comm.abort()


def test_the_agent_and_the_dask_scheduler_talk_tls_and_a_plain_client_is_refused(shared):
    assert shared.address.startswith("tls://")
    assert shared._record["scheduler"].startswith("tls://")       # the local pool's scheduler and workers too
    assert shared.client.submit(sum, [1, 2]).result(timeout=60) == 3   # the owner's Dask client reaches it
    with pytest.raises(OSError):           # distributed's CommClosedError is one; the agent hangs up
        asyncio.run(_plain_connect(shared.address.replace("tls://", "tcp://")))
    # The pool's certificates and its owner's credentials are the owner's only, beside its record.
    folder = Path(shared._record["tls"]["folder"])
    assert folder.parent == Path(os.environ["BATCHNB_HOME"]) / "pools"
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [folder, *folder.rglob("*")]}
    assert set(modes.values()) <= {"0o600", "0o700"} and modes[folder.name] == "0o700"
    assert shared.identity == __import__("getpass").getuser()
    assert [(r["identity"], r["role"], r["job"]) for r in shared.roles()] == [(shared.identity, "owner", None)]


READER = """
    import sys
    import batchnb as bnb

    pool = bnb.Pool.connect(sys.argv[1], security=sys.argv[2])
    job = pool.job("watched")
    print("identity", pool.identity, flush=True)
    print("sees", sorted(t.id for t in job.tasks()), job.state, flush=True)
    for what, call in (("add", lambda: job.add_task("more", "echo more")), ("terminate", job.terminate)):
        try:
            call()
            print(what, "allowed", flush=True)
        except bnb.PermissionDenied as exc:
            print(what, "denied:", exc, flush=True)
    pool.disconnect()
"""


def test_a_reader_watches_but_its_add_task_and_terminate_are_refused_and_audited(shared, tmp_path):
    job = shared.job("watched")
    job.add_task("first", "echo first")
    job.wait(timeout=120, quiet=True)
    folder = shared.credentials("reader-1")
    shared.grant("reader-1", "reader")
    script = tmp_path / "reader.py"
    script.write_text(textwrap.dedent(READER))
    # The reader runs with a batchnb home of its own: it finds the pool by its address alone.
    env = {**os.environ, "BATCHNB_HOME": str(tmp_path / "reader-home"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), shared.address, str(folder)], env=env, capture_output=True,
                          check=False, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "identity reader-1" in lines and "sees ['first'] active" in lines
    assert any(line.startswith("add denied: 'reader-1' may not add_tasks on job 'watched'") for line in lines), lines
    assert any(line.startswith("terminate denied: 'reader-1' may not terminate") for line in lines), lines
    # Nothing changed: the job's tasks and state as they were.
    assert [t.id for t in job.tasks()] == ["first"]
    assert shared.ledger.job("watched")["state"] == "active" and job.state == bnb.JobState.ACTIVE
    denied = [(r.identity, r.action, r.target, r.outcome) for r in audit.read(shared.ledger)
              if r.outcome == "denied"]
    assert ("reader-1", "add_tasks", "job:watched", "denied") in denied
    assert ("reader-1", "terminate", "job:watched", "denied") in denied


def test_grant_and_revoke_round_trip_and_only_an_owner_may(shared):
    shared.grant("bob", "contributor")
    shared.grant("bob", "owner", job="bobs")
    assert {(r["identity"], r["role"], r["job"]) for r in shared.roles() if r["identity"] == "bob"} \
        == {("bob", "contributor", None), ("bob", "owner", "bobs")}
    shared.revoke("bob", job="bobs")
    shared.revoke("bob")
    assert [r for r in shared.roles() if r["identity"] == "bob"] == []
    with pytest.raises(bnb.SpecError) as err:
        shared.grant("bob", "admin")
    assert err.value.field == "role" and err.value.value == "admin"
    with pytest.raises(bnb.SpecError) as err:
        shared.grant("../bob", "reader")
    assert err.value.field == "identity"
    with pytest.raises(bnb.SpecError, match="only owner"):
        shared.revoke(shared.identity)
    watcher = _as(shared, "watcher", "reader")
    try:
        with pytest.raises(bnb.PermissionDenied, match="'watcher' may not grant"):
            watcher.grant("watcher", "owner")
        with pytest.raises(bnb.PermissionDenied, match="may not pool_call"):
            watcher.resize(dedicated=2)
        with pytest.raises(bnb.PermissionDenied):
            watcher.credentials("mallory")
        from batchnb.extensions.cost import CostExtension
        with pytest.raises(bnb.PermissionDenied, match="may not extension_get"):   # the storage keys stay there
            watcher.extension(CostExtension).engine.storage_options
        shared.job("watched")
        assert watcher.job("watched").id == "watched"        # re-attaching reads the job's budget through it
        with pytest.raises(bnb.PermissionDenied, match="may not open_job on job 'new-one'"):
            watcher.job("new-one")                            # which would make it: a contributor's
        assert shared.ledger.job("new-one") is None
        assert [(r["identity"], r["role"]) for r in watcher.roles() if r["identity"] == "watcher"] \
            == [("watcher", "reader")]
        shared.revoke("watcher")
        # Its events poll is refused at once: the client says it is cut off, and stops asking.
        wait_for(lambda: "cut off" in repr(watcher), 30, "the revoked client to know it")
        assert "'watcher' may not events" in repr(watcher)
    finally:
        watcher.disconnect()
    polls = [r for r in audit.read(shared.ledger) if r.identity == "watcher" and r.action == "events"]
    assert len(polls) == 1 and polls[0].outcome == "denied"
    assert shared.nodes() and len(shared.nodes()) == 1           # the refused resize changed nothing
    actions = [(r.identity, r.action, r.outcome) for r in audit.read(shared.ledger)]
    assert (shared.identity, "role-grant", "ok") in actions and (shared.identity, "role-revoke", "ok") in actions
    assert ("watcher", "grant", "denied") in actions


def test_a_contributor_on_one_job_adds_to_that_job_only(shared):
    other = shared.job("not-carols")
    carol = _as(shared, "carol", "contributor", job="carols")
    with pytest.raises(bnb.PermissionDenied, match="may not open_job on job 'not-carols'"):
        carol.job("not-carols")               # no role there at all: not even to watch it
    shared.grant("carol", "reader")           # now she watches the whole pool, and contributes to her job
    try:
        mine = carol.job("carols")
        t = mine.add_task("t1", "echo by carol")
        assert mine.wait(timeout=120, quiet=True).counts == {"succeeded": 1} and t.stdout() == "by carol\n"
        with pytest.raises(bnb.PermissionDenied, match="may not add_tasks on job 'not-carols'"):
            carol.job("not-carols").add_task("x", "echo no")
        with pytest.raises(bnb.PermissionDenied, match="may not open_job on job 'elsewhere'"):
            carol.job("elsewhere", max_task_retries=1)
    finally:
        carol.disconnect()
    assert [t.id for t in other.tasks()] == [] and shared.ledger.job("elsewhere") is None
    rows = [r for r in audit.read(shared.ledger) if r.identity == "carol"]
    assert any(r.action == "add_tasks" and r.outcome == "denied" and r.target == "job:not-carols" for r in rows)


def test_a_pool_made_with_the_users_own_security_serves_with_it(tmp_path, monkeypatch):
    from distributed.security import Security
    import batchnb.engine.ledger
    from batchnb.agent import tls
    monkeypatch.setenv("BATCHNB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(batchnb.engine.ledger, "_default_ledger", None)
    ca = tls.make_ca("mine")
    files = {"ca": ca.cert_pem}
    for role, cn in (("scheduler", "my-scheduler"), ("worker", "my-worker"), ("client", "dana")):
        files[f"{role}-cert"], files[f"{role}-key"] = tls.sign(ca, cn)
    for name, text in files.items():
        (tmp_path / f"{name}.pem").write_text(text)
    paths = {name: str(tmp_path / f"{name}.pem") for name in files}
    own = Security(require_encryption=True, tls_ca_file=paths["ca"], tls_scheduler_cert=paths["scheduler-cert"],
                   tls_scheduler_key=paths["scheduler-key"], tls_worker_cert=paths["worker-cert"],
                   tls_worker_key=paths["worker-key"], tls_client_cert=paths["client-cert"],
                   tls_client_key=paths["client-key"])
    pool = bnb.Pool("mine", dedicated=1, security=own, detached=True)
    pid = pool._record["pid"]
    try:
        assert pool.address.startswith("tls://") and pool._record["scheduler"].startswith("tls://")
        assert pool.identity == "dana" and [r["identity"] for r in pool.roles()] == ["dana"]
        job = pool.job("j")
        job.add_task("t", "echo mine")
        assert job.wait(timeout=120, quiet=True).counts == {"succeeded": 1}
        with pytest.raises(bnb.BatchError, match="its CA is yours"):
            pool.credentials("erin")
        with pytest.raises(bnb.PermissionDenied):          # the pool's CA is the user's: another one is refused
            bnb.Pool.connect(pool.address, security=Security.temporary())
    finally:
        try:
            pool.close()
        finally:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
