"""Which detached pools run on this machine: one file per agent under ``<home>/pools/``.

An agent claims its pool's name by creating ``<name>.json`` (only one agent
per name), fills in its address once it serves, and removes the file when
it stops. A file whose process is gone (a killed agent) is stale: it is
pruned by the next reader. Beside each record, ``<name>.tls/`` holds the
pool's certificates and its owner's credentials (:mod:`.tls`); the records
name them, so they and their folder are readable by their owner only.

An agent beside a remote scheduler (:mod:`.beside`) is no process of this
machine: its creator writes its record (no pid; the address, and the
credentials it reached the agent with, in ``<name>.tls/owner/``), a client's
``pool.close()`` removes it, and it is stale once the agent no longer answers
there (a check over the network, :func:`answers`).

>>> import batchnb as bnb
>>> bnb.pools()              # no detached pool runs in this doctest's home
[]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .. import _config
from ..errors import SpecError

#: What ``bnb.pools()`` shows of a record; the paths of the owner's credentials stay in the file.
SHOWN = ("name", "address", "pid", "started", "backend", "scheduler", "dashboard", "ledger", "log")


def folder() -> Path:
    path = _config.home() / "pools"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def path_of(name: str) -> Path:
    # Pool names are ids (letters, digits, '-', '_'), so they are safe file names; case-folded
    # as job ids are, so "Render" and "render" are one pool.
    return folder() / f"{name.lower()}.json"


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started; None if it is gone (an unreaped zombie is gone)."""
    import psutil
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except (psutil.Error, OSError):
        return None


def alive(record: dict) -> bool:
    """The record's process still runs (and is the same process: pids are reused); for an agent
    beside a remote scheduler, it answers."""
    if record.get("beside_scheduler"):
        return answers(record)
    pid, created = record.get("pid"), record.get("process_created")
    if not isinstance(pid, int):
        return False
    started = _process_started(pid)
    if started is None:
        return False
    return created is None or abs(started - created) < 1.0


def read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, record: dict, *, exclusive: bool = False) -> None:
    body = json.dumps(record, indent=1).encode()
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
    os.replace(tmp, path)       # readers see the old record or the new one, never half of one


def claim(name: str) -> dict:
    """Take ``name`` for this process; a live agent of that name is a :class:`~batchnb.SpecError`."""
    path = path_of(name)
    own = {"name": name, "pid": os.getpid(), "process_created": _process_started(os.getpid()),
           "started": time.time(), "address": None}
    for _ in range(3):
        try:
            _write(path, own, exclusive=True)
            return own
        except FileExistsError:
            other = read(path)
            if other is not None and alive(other):
                raise SpecError("pool name", name, f"a detached pool of this name runs already (pid {other['pid']}, "
                                f"address {other.get('address')}); use bnb.Pool.connect({name!r}) or close "
                                "it first") from None
            _remove_if(path, other)
    raise SpecError("pool name", name, f"could not claim {path}: another agent starts under this name")


def _remove_if(path: Path, record: dict | None) -> None:
    """Remove a stale record, unless another process replaced it meanwhile."""
    if read(path) == record:
        _unlink(path)


def _unlink(path: Path) -> None:
    """Remove a record and the certificates beside it (a pool's CA ends with its agent)."""
    import shutil
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    shutil.rmtree(path.with_suffix(".tls"), ignore_errors=True)


def publish(record: dict) -> None:
    """Update this agent's own record (it serves now: address, token, ...)."""
    _write(path_of(record["name"]), record)


def remove(name: str, pid: int | None = None) -> None:
    """Remove the record of ``name`` if it is this process's (or ``pid``'s)."""
    path = path_of(name)
    record = read(path)
    if record is not None and record.get("pid") == (pid or os.getpid()):
        _unlink(path)


def records() -> list[dict]:
    """Every live agent's full record (its credentials' paths included), stale ones pruned, by name."""
    out = []
    found = [(path, read(path)) for path in sorted(folder().glob("*.json"))]
    remote = [r for _, r in found if r is not None and r.get("beside_scheduler")]
    answered: dict = {}
    if remote:      # asked over the network: all at once, so a slow one costs its own wait only
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(min(8, len(remote))) as pool:
            answered = dict(zip(map(id, remote), pool.map(answers, remote)))
    for path, record in found:
        if record is None or not (answered[id(record)] if record.get("beside_scheduler") else alive(record)):
            try:
                if record is not None or path.stat().st_mtime < time.time() - 60:
                    _remove_if(path, record)   # a file being written right now is left alone
            except FileNotFoundError:
                pass
            continue
        if record.get("address"):
            out.append(record)
    return out


# -- agents beside a remote scheduler ----------------------------------------------------
#: Seconds an agent beside a remote scheduler has to answer before its record is stale.
ANSWER_WITHIN = 10.0


def keep_beside(record: dict, *, ca: str, cert: str, key: str, kind: str) -> dict:
    """Record an agent beside a remote scheduler, with the credentials its creator reached it with
    (``kind``: "dask", a ``distributed.Security``; "gateway", a gateway cluster's certificate)."""
    from .tls import write_credentials
    path = path_of(record["name"])
    _unlink(path)           # a stale record of that name (records() found no live one)
    owner = write_credentials(path.with_suffix(".tls") / "owner", ca, cert, key)
    record = dict(record, pid=None, started=time.time(), tls={"owner": str(owner), "kind": kind})
    if kind == "dask":      # the owner's pool.client reaches the scheduler with the same certificate
        record["scheduler_security"] = {"tls_ca_file": str(owner / "ca.pem"),
                                        "tls_client_cert": str(owner / "cert.pem"),
                                        "tls_client_key": str(owner / "key.pem")}
        record.pop("scheduler_unreachable", None)
    _write(path, record)
    return record


def owner_security(record: dict):
    """The credentials beside ``record`` that its owner reaches the agent with."""
    from .tls import security_of
    creds = record["tls"]
    if creds.get("kind") == "gateway":
        from dask_gateway.client import GatewaySecurity
        owner = Path(creds["owner"])
        return GatewaySecurity(tls_key=(owner / "key.pem").read_text(), tls_cert=(owner / "cert.pem").read_text())
    return security_of(creds["owner"])


def answers(record: dict, timeout: float = ANSWER_WITHIN) -> bool:
    """The agent beside a remote scheduler that ``record`` names answers (a gone scheduler, or one
    whose agent stopped and removed its handlers, does not)."""
    try:
        security = owner_security(record)
    except (OSError, KeyError, SpecError):     # its credentials are gone: no one here reaches it
        return False
    return answers_at(record["address"], security, timeout)


def answers_at(address: str, security, timeout: float = ANSWER_WITHIN) -> bool:
    """An agent answers at ``address`` (``security``: the credentials shown)."""
    import asyncio

    from distributed.core import rpc

    async def ask():
        r = rpc(address, connection_args=security.get_connection_args("client"), timeout=timeout)
        try:
            # A scheduler answers an operation it has no handler for with None.
            return isinstance(await asyncio.wait_for(r.bnb_whoami(), timeout), dict)
        finally:
            await r.close_rpc()

    try:
        return run_coroutine(ask)
    except Exception:  # noqa: BLE001 - any failure to answer is an agent out of reach
        return False


def run_coroutine(make_coroutine):
    """Run a coroutine to its end from any thread, on a thread of its own: the caller's may run
    an event loop (a Jupyter kernel's does), where ``asyncio.run`` refuses to start."""
    import asyncio
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def forget(record: dict) -> None:
    """Remove the record of an agent beside a remote scheduler (its pool was closed), if it is still that one."""
    path = path_of(record["name"])
    kept = read(path)
    if kept is not None and kept.get("beside_scheduler") and kept.get("address") == record.get("address"):
        _unlink(path)


def find(name_or_address: str) -> dict:
    """The live record of a pool by name, or by its agent's address."""
    if not isinstance(name_or_address, str) or not name_or_address:
        raise SpecError("pool", name_or_address, "expected a detached pool's name or its agent's address")
    found = [r for r in records() if name_or_address.lower() in (r["name"].lower(), r["address"].lower())]
    if not found:
        known = ", ".join(r["name"] for r in records()) or "none"
        raise SpecError("pool", name_or_address, f"no detached pool of this name or address runs on this machine "
                        f"(running: {known}); start one with bnb.Pool(name, detached=True) or "
                        "'batchnb pool start NAME'")
    return found[0]


def pools() -> list[dict]:
    """The detached pools running on this machine (``bnb.Pool(..., detached=True)``,
    ``batchnb pool start``), and those this home made beside a remote scheduler
    (``agent_on_scheduler=True``; pid None): name, agent address, pid, started,
    backend, the Dask scheduler's address, its dashboard, ledger and log file.

    Records of agents that are gone (or no longer answer) are removed on the way.

    >>> import batchnb as bnb
    >>> [p["name"] for p in bnb.pools()]
    []
    """
    return [{k: r.get(k) for k in SHOWN} for r in records()]
