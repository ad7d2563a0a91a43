"""The audit table's SQL (every statement of batchnb lives in the ledger's modules).

:mod:`batchnb.engine.audit` is the API; the table and its append-only
triggers are made by :mod:`.schema` (version 5).
"""

from __future__ import annotations

INSERT = ("INSERT INTO audit(time, actor, action, job_id, target, outcome, detail, pool) "
          "VALUES (?,?,?,?,?,?,?,?)")


def insert(ledger, params: tuple) -> None:
    """One row, in a transaction of its own."""
    with ledger._tx() as con:
        con.execute(INSERT, params)


def select(ledger, since: float | None = None, job: str | None = None, identity: str | None = None,
           action: str | None = None, pool: str | None = None) -> list[tuple]:
    """``(time, actor, action, job_id, target, outcome, detail)`` rows, oldest first."""
    where, params = [], []
    for clause, value in (("time >= ?", since), ("job_id = ? COLLATE NOCASE", job), ("actor = ?", identity),
                          ("action = ?", action)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if pool is not None:
        # Records written without a pool (older ones, a role's) belong to the pool of their job.
        where.append("(pool = ? COLLATE NOCASE OR target = ? COLLATE NOCASE OR (pool IS NULL AND job_id IN "
                     "(SELECT id FROM jobs WHERE pool = ?)))")
        params += [pool, f"pool:{pool}", pool]
    sql = ("SELECT time, actor, action, job_id, target, outcome, detail FROM audit"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY time, rowid")
    return [tuple(r) for r in ledger._query(sql, tuple(params))]
