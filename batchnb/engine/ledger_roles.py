"""Who may do what on a detached pool: roles held by identities, kept in the ledger.

An identity (the subject CN of a client certificate, :mod:`batchnb.agent.tls`)
holds ``reader``, ``contributor`` or ``owner`` on a pool, or on one of its jobs
(``job_id``). Roles are ordered: each allows what the ones below it do. What
an identity may do on a job is the higher of its role on the pool and its
role on that job. Rows belong to a pool by name, so an agent that starts
again under that name keeps them.

>>> import tempfile, os
>>> from batchnb.engine.ledger import Ledger
>>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
>>> grant(led, "render", "alice", "reader", by="bob", now=1.0)
>>> grant(led, "render", "alice", "contributor", job_id="frames", by="bob", now=2.0)
>>> role_of(led, "render", "alice"), role_of(led, "render", "alice", "frames"), role_of(led, "render", "carol")
('reader', 'contributor', None)
>>> allows(led, "render", "alice", "contributor", "frames"), allows(led, "render", "alice", "contributor", "other")
(True, False)
>>> [(r["identity"], r["role"], r["job"]) for r in listing(led, "render")]
[('alice', 'reader', None), ('alice', 'contributor', 'frames')]
>>> revoke(led, "render", "alice", job_id="frames")
True
>>> grant(led, "render", "alice", "admin")
Traceback (most recent call last):
...
batchnb.SpecError: role: 'admin' is invalid: expected one of 'reader', 'contributor', 'owner'
"""

from __future__ import annotations

import time

from ..errors import SpecError

#: The roles, lowest first: each allows what the ones before it allow.
ROLES = ("reader", "contributor", "owner")
_RANK = {name: i + 1 for i, name in enumerate(ROLES)}


def check_role(role) -> str:
    if role not in _RANK:
        raise SpecError("role", role, f"expected one of {', '.join(repr(r) for r in ROLES)}")
    return role


def rank(role: str | None) -> int:
    return _RANK.get(role, 0) if role is not None else 0


def grant(ledger, pool: str, identity: str, role: str, job_id: str | None = None, by: str | None = None,
          now: float | None = None) -> None:
    """Give ``identity`` ``role`` on ``pool`` (or on its job ``job_id``), replacing what it held there."""
    check_role(role)
    with ledger._tx() as con:
        con.execute("INSERT OR REPLACE INTO roles(pool, identity, job_id, role, granted, granted_by) "
                    "VALUES (?,?,?,?,?,?)", (pool, identity, job_id or "", role, now or time.time(), by))


def revoke(ledger, pool: str, identity: str, job_id: str | None = None) -> bool:
    """Take away the role ``identity`` holds on ``pool`` (or on ``job_id``); False if it held none there."""
    with ledger._tx() as con:
        cur = con.execute("DELETE FROM roles WHERE pool = ? AND identity = ? AND job_id = ?",
                          (pool, identity, job_id or ""))
        return cur.rowcount > 0


def listing(ledger, pool: str) -> list[dict]:
    """Every role held on ``pool`` and its jobs: identity, role, job (None: the pool), granted, by."""
    rows = ledger._query("SELECT identity, role, job_id, granted, granted_by FROM roles WHERE pool = ? "
                         "ORDER BY identity, job_id <> '', job_id", (pool,))
    return [{"identity": r["identity"], "role": r["role"], "job": r["job_id"] or None, "granted": r["granted"],
             "by": r["granted_by"]} for r in rows]


def role_of(ledger, pool: str, identity: str, job_id: str | None = None) -> str | None:
    """The highest role ``identity`` holds on ``pool``, or on its job ``job_id`` (None: none)."""
    rows = ledger._query("SELECT role FROM roles WHERE pool = ? AND identity = ? AND (job_id = '' OR job_id = ?)",
                         (pool, identity, job_id or ""))
    return max((r["role"] for r in rows), key=rank, default=None)


def highest(ledger, pool: str, identity: str) -> str | None:
    """The highest role ``identity`` holds anywhere on ``pool`` (the pool or any of its jobs)."""
    rows = ledger._query("SELECT role FROM roles WHERE pool = ? AND identity = ?", (pool, identity))
    return max((r["role"] for r in rows), key=rank, default=None)


def allows(ledger, pool: str, identity: str, needed: str, job_id: str | None = None) -> bool:
    return rank(role_of(ledger, pool, identity, job_id)) >= rank(needed)


def owners(ledger, pool: str) -> list[str]:
    """The identities that own the whole pool."""
    return [r["identity"] for r in ledger._query(
        "SELECT identity FROM roles WHERE pool = ? AND job_id = '' AND role = 'owner'", (pool,))]
