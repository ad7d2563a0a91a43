"""Roles on a detached pool: what each agent operation needs, and the client's ``grant``/``revoke``/``roles``.

A caller is the subject CN of its client certificate (:mod:`.tls`). Every
operation of the agent (:mod:`.rpc`) needs a role, looked up in :data:`NEEDS`
before it acts: a reader lists and watches; a contributor also changes jobs,
tasks and schedules; an owner also resizes, closes, grants and revokes. A
role held on one job counts for that job's operations (and lets its holder
watch the pool); a role on the pool counts everywhere.

>>> need("add_tasks", {"job_id": "frames"})
('contributor', 'job', 'frames')
>>> need("pool_call", {"method": "resize"})
('owner', 'pool', None)
>>> need("events", {})
('reader', 'any', None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import _config
from ..engine import audit
from ..engine import ledger_roles as _roles
from ..errors import BatchError, PermissionDenied, SpecError
from .tls import authority, check_identity, security_of, sign, write_credentials

#: Operation (``op`` or ``op:variant``) -> (role needed, where: "pool", "job" or "any").
#: "job": the role on the pool or on the job the call names; "any": a role on the pool or any job.
#: None: any caller the pool's CA signed for (saying goodbye, asking who it is, need no role).
NEEDS: dict[str, tuple[str, str] | None] = {
    "hello": ("reader", "any"), "bye": None, "whoami": None, "describe": ("reader", "any"),
    "events": ("reader", "any"), "requested": ("reader", "any"), "job_progress": ("reader", "job"),
    "roles": ("reader", "any"),
    "open_job:attach": ("reader", "job"), "open_job:create": ("contributor", "job"),
    "add_tasks": ("contributor", "job"), "terminate": ("contributor", "job"),
    "map_array": ("contributor", "job"), "add_sweep": ("contributor", "job"),
    "pool_call:nodes": ("reader", "any"), "pool_call:evaluate_autoscale": ("reader", "any"),
    "pool_call:audit": ("reader", "any"),
    "pool_call:resize": ("owner", "pool"), "pool_call:preempt": ("owner", "pool"),
    # Extensions: reading a value or calling one of READS is watching; any other call changes the
    # pool (a schedule made, enabled or deleted, an alert added): a contributor's; what is reached
    # through the engine an extension holds (its storage options; resize through its backend)
    # is an owner's, but for ENGINE_READS.
    "extension_get:read": ("reader", "any"), "extension_get:call": ("contributor", "pool"),
    "extension_get:engine": ("owner", "pool"),
    # Reads: a job's queries and its tasks' files need a role on that job; the pool's named queries
    # any role (as its events do); a client's own query can read any table, so a role on the pool.
    "ledger_read:job": ("reader", "job"), "ledger_read:pool": ("reader", "any"),
    "ledger_read:sql": ("reader", "pool"), "task_output": ("reader", "job"),
    "close_pool": ("owner", "pool"), "issue_credentials": ("owner", "pool"),
    "grant": ("owner", "job"), "revoke": ("owner", "job"),
}
#: What a client's ``pool.job(id)`` reads through an extension's engine (the job's budget); any other
#: path through the engine is the owner's.
ENGINE_READS = frozenset({"engine", "engine.ledger", "engine.ledger.job"})
#: Extension methods that only read.
READS = frozenset({"cost", "job_cost", "forecast", "evaluate", "listing", "runs", "jobs", "job"})


def need(op: str, kwargs: dict, job_exists=None) -> tuple[str, str, str | None] | None:
    """The role ``op`` called with ``kwargs`` needs, where, and the job it names (None: no role needed).

    ``job_exists(job_id)``: whether the ledger has that job (opening one it has not makes it)."""
    key = op
    if op == "open_job":
        attach = kwargs.get("spec") is None and (job_exists is None or job_exists(kwargs.get("job_id")))
        key = "open_job:attach" if attach else "open_job:create"
    elif op == "pool_call":
        key = f"pool_call:{kwargs.get('method')}"
    elif op == "ledger_read":
        key = "ledger_read:sql" if kwargs.get("method") == "_query" else \
            "ledger_read:job" if kwargs.get("job_id") else "ledger_read:pool"
    elif op == "extension_get":
        path = str(kwargs.get("path", ""))
        parts = path.split(".")
        if "engine" in parts:       # its values hold the pool's storage options, its objects can do anything
            key = "extension_get:read" if path in ENGINE_READS else "extension_get:engine"
        elif kwargs.get("args") is None or parts[-1] in READS:
            key = "extension_get:read"
        else:
            key = "extension_get:call"
    needed = NEEDS.get(key, ("owner", "pool"))        # an operation missing here is the owner's alone
    if needed is None:
        return None
    role, where = needed
    job = None
    if where == "job":
        spec = kwargs.get("spec")
        job = kwargs.get("job_id") or kwargs.get("job") or (spec.get("id") if isinstance(spec, dict) else None)
        if not job:
            where = "pool"
    return role, where, job


def allowed(ledger, pool: str, identity: str, needed: tuple[str, str, str | None] | None) -> bool:
    if needed is None:
        return True
    role, where, job = needed
    if where == "any":
        return _roles.rank(_roles.highest(ledger, pool, identity)) >= _roles.rank(role)
    return _roles.allows(ledger, pool, identity, role, job if where == "job" else None)


class RoleOps:
    """The agent's operations on roles and credentials (mixed into :class:`~.rpc.AgentHandlers`)."""

    OPS = ("whoami", "describe", "roles", "grant", "revoke", "issue_credentials")
    _granted: dict
    #: What ``describe`` leaves out of the registry record: paths of the owner's key files.
    PRIVATE = ("tls", "scheduler_security", "token")

    async def whoami(self, client: str, caller: str) -> str:
        return caller

    async def describe(self, client: str) -> dict:
        """The pool's public record, for a client that is not its owner (it has no registry record)."""
        shown = {k: v for k, v in self.record.items() if k not in self.PRIVATE}
        shown.setdefault("scheduler_unreachable", "the pool's Dask scheduler is reached by its owner only")
        return shown

    async def roles(self, client: str) -> list[dict]:
        return await self._run(_roles.listing, self.pool.ledger, self.pool.name)

    async def grant(self, client: str, caller: str, identity: str, role: str, job: str | None = None) -> None:
        def granting():
            check_identity(identity)
            _roles.check_role(role)
            if role != "owner" and job is None:
                self._keep_an_owner(identity)
            _roles.grant(self.pool.ledger, self.pool.name, identity, role, job, by=caller)
            self._granted.clear()
            self.audit_record("role-grant", _target(self.pool.name, job), identity=caller, detail=f"{identity}: {role}")
        await self._run(granting)

    async def revoke(self, client: str, caller: str, identity: str, job: str | None = None) -> None:
        def revoking():
            check_identity(identity)
            if job is None:
                self._keep_an_owner(identity)
            held = _roles.revoke(self.pool.ledger, self.pool.name, identity, job)
            self._granted.clear()           # a revoked role is refused from the next call on
            self.audit_record("role-revoke", _target(self.pool.name, job), identity=caller,
                              detail=f"{identity}" + ("" if held else " (held no role there)"))
        await self._run(revoking)

    def _keep_an_owner(self, identity: str) -> None:
        if _roles.owners(self.pool.ledger, self.pool.name) == [identity]:
            raise SpecError("identity", identity, "is the pool's only owner: grant another identity 'owner' first "
                                                  "(a pool nobody owns could not be closed or resized)")

    async def issue_credentials(self, client: str, caller: str, identity: str) -> dict:
        folder = self.tls_files.get("folder")
        if not folder or not Path(folder, "ca-key.pem").is_file():
            raise BatchError(f"pool {self.pool.name!r} serves with the security= it was made with: its CA is "
                             "yours, so sign a certificate for that identity with it")

        def issuing():
            ca = authority(folder)
            cert, key = sign(ca, check_identity(identity))
            self.audit_record("credentials-issue", _target(self.pool.name, None), identity=caller,
                              detail=f"issued to {identity}")
            return {"ca": ca.cert_pem, "cert": cert, "key": key}
        return await self._run(issuing)

    def denied(self, caller: str | None, op: str, needed) -> PermissionDenied:
        """The error a caller without the role gets; recorded in the audit log (outcome "denied")."""
        role, where, job = needed or ("reader", "pool", None)
        target = _target(self.pool.name, job)
        if caller is None:
            return PermissionDenied(f"pool {self.pool.name!r}: the caller showed no certificate of this pool's CA")
        held = _roles.role_of(self.pool.ledger, self.pool.name, caller, job) if where != "any" else \
            _roles.highest(self.pool.ledger, self.pool.name, caller)
        scope = f"job {job!r} of pool {self.pool.name!r}" if job else f"pool {self.pool.name!r}"
        hint = f"pool.grant({caller!r}, {role!r}{f', job={job!r}' if job else ''})"
        self.audit_record(op, target, outcome="denied", identity=caller, detail=f"needs {role}; holds {held or 'none'}")
        return PermissionDenied(f"{caller!r} may not {op} on {scope}: that needs the role {role!r} "
                                f"(held: {held or 'none'}); an owner of the pool can give it: {hint}")

    def audit_record(self, action: str, target: str, outcome: str = "ok", identity: str | None = None,
                     detail: str | None = None) -> None:
        audit.record(self.pool.ledger, action, target, outcome=outcome, identity=identity, detail=detail)


class PoolAccess:
    """``pool.grant``, ``pool.revoke``, ``pool.roles``, ``pool.credentials``: roles on a detached pool.

    An in-kernel pool has a single user, so it has no roles: these raise a
    :class:`~batchnb.SpecError` naming ``detached``.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc-roles", dedicated=1) as pool:
    ...     pool.roles()
    Traceback (most recent call last):
    ...
    batchnb.SpecError: detached: False is invalid: roles need a detached pool: bnb.Pool(name, ..., detached=True)...
    """

    def grant(self, identity: str, role: str, job: str | None = None) -> None:
        """Give ``identity`` (a certificate's CN; the OS user for the creator) ``role`` ("reader",
        "contributor" or "owner") on this pool, or on its job ``job`` only. Needs the owner's role."""
        self._access_call("grant", identity=check_identity(identity), role=_roles.check_role(role), job=_job(job))

    def revoke(self, identity: str, job: str | None = None) -> None:
        """Take away the role ``identity`` holds on this pool (or on its job ``job``). Needs the owner's role."""
        self._access_call("revoke", identity=check_identity(identity), job=_job(job))

    def roles(self) -> list[dict]:
        """Who holds which role: dicts of identity, role, job (None: the whole pool), granted (time), by."""
        return list(self._access_call("roles"))

    @property
    def identity(self) -> str:
        """Who this client is to its agent: the CN of the certificate it shows."""
        return self._access_call("whoami")

    def credentials(self, identity: str, folder: str | Path | None = None) -> Path:
        """Credentials for ``identity``, signed by this pool's CA: a folder (``ca.pem``, ``cert.pem``,
        ``key.pem``, its owner's only), by default ``<home>/credentials/<pool>/<identity>``.

        Give it to that identity with a role (``pool.grant``); it connects with
        ``bnb.Pool.connect(address, security=folder)``. Needs the owner's role."""
        identity = check_identity(identity)
        issued = self._access_call("issue_credentials", identity=identity)
        where = Path(folder) if folder is not None else _config.home() / "credentials" / self.name.lower() / identity
        return write_credentials(where, issued["ca"], issued["cert"], issued["key"])

    def _access_call(self, op: str, **kwargs: Any) -> Any:
        if getattr(self, "_agent", None) is None:
            raise SpecError("detached", False, "roles need a detached pool: bnb.Pool(name, ..., detached=True), "
                                               "whose agent knows who calls it")
        self._check_open()
        return self._agent.call(op, **kwargs)


def _target(pool: str, job: str | None) -> str:
    """What an audit record names (the audit log's ``job:ID`` or ``pool:NAME``)."""
    return f"job:{job}" if job else f"pool:{pool}"


def _job(job: Any) -> str | None:
    if job is None:
        return None
    from ..spec.validate import task_id
    return task_id(job, "job")


def client_security(security: Any) -> Any:
    """``security=`` of ``bnb.Pool.connect``: a ``distributed.Security``, or a credentials folder."""
    if security is None:
        return None
    if isinstance(security, (str, Path)):
        return security_of(security)
    from distributed.security import Security
    if not isinstance(security, Security):
        raise SpecError("security", type(security).__name__, "expected a distributed.Security or a credentials "
                                                             "folder (pool.credentials(identity) makes one)")
    return security
