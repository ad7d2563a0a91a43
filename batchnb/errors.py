"""The batchnb exception tree.

::

    BatchError                      every error batchnb raises on purpose
    ├── SpecError (ValueError)      invalid input: names the field and the value
    │   └── FormulaError            an autoscale formula that does not parse or
    │                               evaluate; carries ``line`` and ``column``
    ├── LedgerError                 the durable record cannot be read or written,
    │   └── LeaseHeld               another live process dispatches this job
    ├── BackendError                a backend cannot give or manage nodes
    │   └── MissingDependency (ImportError)  an optional extra is not installed
    ├── StagingError                an input or output could not be moved
    ├── PriceRefreshError           Azure's retail prices API could not be read
    │                               (offline, timeout); the price table is unchanged
    ├── PoolStalled                 tasks wait and no node can run them (all unusable or gone,
    │                               none coming), or the pool's dispatcher cannot record its work:
    │                               ``job.wait()`` says so
    ├── PermissionDenied            the caller's role on a detached pool (or job) does
    │                               not allow the call; nothing changed
    ├── TaskFailed                  ``task.result()`` of a task that did not succeed
    ├── JobTerminated               waiting on a job that was terminated/cancelled
    └── WaitTimeout (TimeoutError)  ``wait(timeout=...)`` ran out

    AzureImportWarning (UserWarning)  a field of Azure Batch JSON that was not converted

Every message says what was wrong, with the offending field and value, and
what to do about it.
"""

from __future__ import annotations


#: A message past this many characters is cut (``shorten``): a value of millions of ids or a
#: 50 MB argument must not make a message of megabytes.
MESSAGE_LIMIT = 2000


def shorten(text: str, limit: int = 300) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was.

    >>> shorten("x" * 1000, 20)
    'xxxxxxxxxxxxxxxxxxxx... (1000 chars)'
    """
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def short_repr(value: object, limit: int = 300) -> str:
    """``repr(value)`` cut to about ``limit`` characters (``shorten``)."""
    try:
        shown = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not hide the error being reported
        shown = f"<{type(value).__name__} object (repr failed: {type(exc).__name__})>"
    return shorten(shown, limit)


class BatchError(Exception):
    """Base of every error batchnb raises on purpose. Its message is cut at ``MESSAGE_LIMIT``."""

    def __init__(self, *args):
        super().__init__(*(shorten(a, MESSAGE_LIMIT) if isinstance(a, str) else a for a in args))


class SpecError(BatchError, ValueError):
    """Invalid input. ``field`` and ``value`` name what was wrong.

    >>> err = SpecError("task id", "a b", "use letters, digits, '-' and '_'")
    >>> str(err)
    "task id: 'a b' is invalid: use letters, digits, '-' and '_'"
    """

    def __init__(self, field: str, value: object = None, problem: str = "", *, message: str | None = None):
        self.field = field
        self.value = value
        self.problem = problem
        if message is None:
            message = f"{shorten(str(field))}: {short_repr(value)} is invalid" + \
                (f": {shorten(str(problem), 1000)}" if problem else "")
        super().__init__(message)


class FormulaError(SpecError):
    """An autoscale formula that does not parse or evaluate.

    ``line`` and ``column`` are 1-based positions in the formula text.
    """

    def __init__(self, message: str, line: int = 0, column: int = 0, text: str | None = None):
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line else ""
        super().__init__("formula", text, message, message=f"autoscale formula, {where}{message}")


class LedgerError(BatchError):
    """The durable record cannot be read or written."""


class LeaseHeld(LedgerError):
    """Another live process holds the dispatch lease of this job."""


class BackendError(BatchError):
    """A backend cannot give or manage nodes."""


class MissingDependency(BackendError, ImportError):
    """An optional extra is needed, e.g. ``pip install batchnb[azure]``."""


class PriceRefreshError(BatchError):
    """Azure's retail prices API could not be read; the table is unchanged.

    >>> str(PriceRefreshError("no answer within 2.0 s"))
    'no answer within 2.0 s'
    """


class StagingError(BatchError):
    """An input could not be fetched or an output could not be uploaded."""

    def __init__(self, message: str, url: str | None = None, transient: bool = False):
        self.url = url
        self.transient = transient
        super().__init__(message)


class PoolStalled(BatchError):
    """Tasks wait and the pool has no node that can run them, nor one on its way; or the
    pool's dispatcher cannot go on (its turns fail, e.g. the ledger cannot be written).

    ``job.wait()`` raises it once the pool has been so for ``batchnb.stall-grace``,
    instead of waiting for good; the log says it when it starts.
    """


class PermissionDenied(BatchError):
    """The caller's identity holds no role on a detached pool (or its job) that allows the call.

    Raised by a detached pool's client; the agent changed nothing (``pool.roles()`` lists who
    holds what; the pool's owner grants with ``pool.grant``).
    """


class TaskFailed(BatchError):
    """Raised by ``Task.result()`` when the task did not succeed."""


class JobTerminated(BatchError):
    """The job was terminated or cancelled before the awaited result existed."""


class WaitTimeout(BatchError, TimeoutError):
    """``wait(timeout=...)`` ran out before the job or task finished."""


class AzureImportWarning(UserWarning):
    """A field of Azure Batch JSON that batchnb did not convert (``strict=True`` makes it an error)."""
