"""Python tasks on a worker: inline in a worker thread, or in a process of their own.

Inline, a task's prints go to its own stdout/stderr (the worker's streams are
shared by its slots, so they are routed per thread) and ``bnb.current_task()``
tells it where it is; a kill raises in its thread (``attempt.call_killable``).
In a process (a wall clock, or env/secrets), the call is pickled to
``call.pkl`` for ``python -m batchnb.node.pychild`` and its outcome read back
from ``result.pkl``.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import traceback
from pathlib import Path

from .attempt import (CRASH, EXIT_CODE, PYTHON, TAIL_BYTES, AttemptRecord, AttemptRequest, call_killable,
                      task_environment)


class _ThreadStreams(io.TextIOBase):
    """sys.stdout/sys.stderr that send each worker thread's prints to its own task."""

    def __init__(self, original, local: threading.local, name: str):
        self._original, self._local, self._name = original, local, name

    def write(self, text):
        target = getattr(self._local, self._name, None)
        return (target or self._original).write(text)

    def flush(self):
        target = getattr(self._local, self._name, None)
        (target or self._original).flush()

    def __getattr__(self, item):
        return getattr(self._original, item)


_streams = threading.local()
_install_lock = threading.Lock()


def _install_streams() -> None:
    with _install_lock:
        if not isinstance(sys.stdout, _ThreadStreams):
            sys.stdout = _ThreadStreams(sys.stdout, _streams, "stdout")
        if not isinstance(sys.stderr, _ThreadStreams):
            sys.stderr = _ThreadStreams(sys.stderr, _streams, "stderr")


def load_call(payload: bytes, dep_results: dict, storage_options: dict):
    """Unpickle ``(fn, args, kwargs)`` and put the dependencies' results in place of their handles."""
    import cloudpickle
    from .pycall import substitute
    fn, args, kwargs = cloudpickle.loads(payload)
    # Large arguments were stored by reference when the task was added: read back here, on the
    # node. Unpickling a reference imports its module: a call with none needs nothing read back
    # (nor the staging package, a node's first Python task's largest import).
    argstore = sys.modules.get("batchnb.staging.argstore")
    if argstore is not None:
        fn, args, kwargs = argstore.resolve(fn, args, kwargs, storage_options=storage_options)
    if dep_results:
        results = {tid: _load_result(v, storage_options) for tid, v in dep_results.items()}
        args, kwargs = substitute(args, results), substitute(kwargs, results)
    return fn, args, kwargs


def _load_result(value, storage_options):
    import cloudpickle
    if isinstance(value, str):
        import fsspec
        with fsspec.open(value, "rb", **storage_options.get(value.split("://")[0], {})) as fh:
            return cloudpickle.loads(fh.read())
    return cloudpickle.loads(value)


def store_result(value, req: AttemptRequest, record: AttemptRecord) -> None:
    import cloudpickle
    data = cloudpickle.dumps(value)
    if len(data) <= req.result_inline_max or not req.result_url:
        record.result = data
        return
    import fsspec
    url = req.result_url
    with fsspec.open(url, "wb", **req.storage_options.get(url.split("://")[0], {})) as fh:
        fh.write(data)
    record.result_url = url


def run_inline(req: AttemptRequest, record: AttemptRecord, dirs: dict, tdir: Path, made: bool) -> None:
    """Run a Python attempt in this thread. ``tdir``: its folder under the node's ``dirs``, made
    already when ``made``, else made only if the attempt prints."""
    from .context import TaskContext, set_current
    _install_streams()
    out, err = io.StringIO(), io.StringIO()
    _streams.stdout, _streams.stderr = out, err
    wd = tdir / "wd"
    set_current(TaskContext(req.job_id, req.task_id, req.attempt, record.node_id, wd, tdir,
                            {k: v for k, v in task_environment(req, record.node_id, dirs, tdir, wd).items()
                             if k.startswith("AZ_BATCH_")}))
    try:
        fn, args, kwargs = load_call(req.python, req.dep_results, req.storage_options)
        # Registered for the whole call: job.terminate() and the job's limits stop it (SystemExit
        # raised in this thread), or restart this worker when the thread is stuck in C code.
        value = call_killable((req.job_id, req.task_id, req.attempt), fn, args, kwargs)
        store_result(value, req, record)
        record.exit_code = 0
    except BaseException as exc:  # noqa: BLE001 - the task's own exception is its failure
        record.exit_code, record.category = 1, PYTHON
        record.message = f"{type(exc).__name__}: {exc}"[:2000]
        err.write(traceback.format_exc())
    finally:
        _streams.stdout = _streams.stderr = None
        set_current(None)
    record.stdout_tail, record.stderr_tail = out.getvalue()[-TAIL_BYTES:], err.getvalue()[-TAIL_BYTES:]
    if made or out.tell() or err.tell():
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / "stdout.txt").write_text(out.getvalue())
        (tdir / "stderr.txt").write_text(err.getvalue())
        record.task_dir = str(tdir)


def write_payload(req: AttemptRequest, path: Path) -> None:
    import pickle
    # Owner-only: it holds the pool's storage options until the child has run.
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        pickle.dump({"payload": req.python, "dep_results": req.dep_results,
                     "storage_options": req.storage_options, "result": str(path.with_name("result.pkl"))}, fh)


def read_child(task_dir: Path, record: AttemptRecord, req: AttemptRequest) -> None:
    import pickle
    try:
        with open(task_dir / "result.pkl", "rb") as fh:
            outcome = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError):
        record.category = record.category or (EXIT_CODE if record.exit_code else CRASH)
        record.message = record.message or f"the Python task's process exited with code {record.exit_code}"
        return
    if outcome["ok"]:
        data = outcome["value"]
        if len(data) > req.result_inline_max and req.result_url:
            import cloudpickle
            store_result(cloudpickle.loads(data), req, record)
        else:
            record.result = data
        record.exit_code = 0
    else:
        record.exit_code, record.category, record.message = 1, PYTHON, outcome["error"]
