"""A connected client reads through its agent: the ledger's queries and the tasks' files.

A client of a detached pool may run on another machine than its agent, so it
never opens the agent's files: its ``pool.ledger`` is a :class:`LedgerProxy`
whose read methods are asked of the agent by name (``ledger_read``), and a
task's output, live tail and stored result come from the agent too
(``task_output``). The agent answers with what its own ledger and
``Task`` give. It runs only the methods of :data:`READS` (nothing a client
sends can write), a job's methods with the job the call names (checked
against that job's roles, :mod:`.access`), and a client's own queries (the
ledger's helpers such as ``job_stats`` write their own), which the ledger runs
on a connection that SQLite opens read-only.

>>> rows = to_wire([{"a": 1}, (2, 3)])
>>> rows
[{'a': 1}, [2, 3]]
>>> r = Row(("id", "state"), ("t1", "succeeded"))
>>> r["state"], r[0], dict(r), r["ID"]
('succeeded', 't1', {'id': 't1', 'state': 'succeeded'}, 't1')
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from ..engine.ledger_queries import ROW
from ..errors import SpecError

#: Ledger methods whose first argument is a job id (the call is checked against that job's roles).
JOB_READS = frozenset({
    "job", "task_counts", "tasks", "task", "attempts", "lease", "last_task_end", "array", "arrays_of",
    "job_events", "dispatched_before", "subtasks", "failure_groups", "reactivations", "timeline",
    "tasks_named", "iter_tasks", "max_task_seq", "last_audit"})
#: Ledger methods over the pool (or the whole ledger).
POOL_READS = frozenset({
    "jobs", "events", "node_history", "audit_trail", "alert_events", "schedule", "schedules",
    "schedule_runs", "schedule_active_jobs", "priced_pool_events", "metered_attempts",
    "attempt_collected_times", "_query"})
READS = JOB_READS | POOL_READS
#: What a client asks of a task's files in the agent (``Task`` methods there).
OUTPUTS = frozenset({"log", "tail", "result"})


class Row:
    """A ledger row as it comes from the agent: read by column name (any case) or index, like the ledger's own rows."""

    __slots__ = ("_keys", "_values")

    def __init__(self, keys: tuple, values: tuple):
        self._keys, self._values = tuple(keys), tuple(values)

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self._values[key]
        lowered = str(key).lower()
        for i, k in enumerate(self._keys):
            if k.lower() == lowered:
                return self._values[i]
        raise IndexError(f"no column {key!r}")

    def keys(self) -> list[str]:
        return list(self._keys)

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other) -> bool:
        return isinstance(other, Row) and (self._keys, self._values) == (other._keys, other._values)

    def __hash__(self) -> int:
        return hash((self._keys, self._values))

    def __getstate__(self):
        return self._keys, self._values

    def __setstate__(self, state) -> None:
        self._keys, self._values = state

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._keys, self._values))!r})"


def to_wire(value: Any) -> Any:
    """Arguments as plain data for Dask's comm (an enum is its value; tuples and sets are lists)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def _rows(value: Any) -> Any:
    """A ledger answer with its rows (which do not pickle) as :class:`Row`\\ s."""
    if isinstance(value, ROW):
        return Row(tuple(value.keys()), tuple(value))
    if isinstance(value, dict):
        return {k: _rows(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "__next__"):
        return [_rows(v) for v in value]
    return value


class LedgerProxy:
    """A detached pool's ledger as its client sees it: the reads of :data:`READS`, asked of the agent.

    ``path`` is where the agent keeps it (shown in messages; this process never opens it)."""

    def __init__(self, link, record: dict):
        self._link = link
        self.path = Path(record.get("ledger") or "")

    def __getattr__(self, name: str):
        if name not in READS:
            raise AttributeError(f"{name!r}: a client of a detached pool reads the ledger through its agent, "
                                 "which serves only its queries (changes go through the pool's methods)")

        def read(*args, **kwargs):
            import cloudpickle
            call: dict[str, Any] = {"method": name, "args": to_wire(args), "kwargs": to_wire(kwargs)}
            if name in JOB_READS:
                job_id = kwargs.pop("job_id", None) if not args else args[0]
                call.update(job_id=job_id, args=to_wire(args[1:]), kwargs=to_wire(kwargs))
            return cloudpickle.loads(self._link.call("ledger_read", **call))
        read.__name__ = name
        return read

    def __repr__(self) -> str:
        return f"<batchnb ledger of the agent at {self._link.address}: {self.path}>"


class ReadOps:
    """The agent's reads for its clients (mixed into :class:`~.rpc.AgentHandlers`)."""

    OPS = ("ledger_read", "task_output", "job_progress")

    async def ledger_read(self, client: str, method: str, args: list, kwargs: dict, job_id: str | None = None):
        import cloudpickle
        if method not in READS:
            raise SpecError("method", method, f"not a ledger query a client may ask ({', '.join(sorted(READS))})")
        if method in JOB_READS and not isinstance(job_id, str):
            raise SpecError("job_id", job_id, f"{method} reads one job: name it")
        lead = (job_id,) if method in JOB_READS else ()

        def read():
            if method == "_query":
                return self._select(*args, **kwargs)
            return _rows(getattr(self.pool.ledger, method)(*lead, *args, **kwargs))
        return cloudpickle.dumps(await self._run(read))

    def _select(self, sql: str, params: list | tuple = ()) -> list:
        """A client's own query (the ledger's helpers write theirs), which the ledger runs read-only."""
        return _rows(self.pool.ledger.read_only_query(sql, params))

    async def task_output(self, client: str, job_id: str, task_id: str, what: str, name: str = "stdout.txt",
                          n: int = 50, stream: str = "stdout"):
        """A task's ``log`` (the file ``name`` of its last attempt), ``tail`` or pickled ``result`` (a
        TaskFailed if it did not succeed), read here: the files are where the agent runs."""
        if what not in OUTPUTS:
            raise SpecError("what", what, f"is one of {', '.join(sorted(OUTPUTS))}")
        if name not in ("stdout.txt", "stderr.txt"):
            raise SpecError("name", name, "is stdout.txt or stderr.txt")

        def read():
            task = self._job(job_id).task(task_id)
            if what == "tail":
                return task.tail(n, stream)
            if what == "log":
                return task._log(name)
            return task._ended_result()
        return await self._run(read)

    async def job_progress(self, client: str, job_id: str, with_result: bool = False) -> bytes:
        """A client's ``Job.wait`` or ``Job.result``: its job's ``_progress`` here, in one call."""
        import cloudpickle
        return cloudpickle.dumps(await self._run(lambda: self._job(job_id)._progress(with_result)))
