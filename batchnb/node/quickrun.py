"""Quick runs: what a tiny command attempt costs beyond its own fork and exec, cut down.

Two costs dominated a tiny command run by :func:`batchnb.node.runner.run_attempt`
(``/bin/true`` in a bundle, profiled on a worker): waiting for the process in
``Popen.wait(timeout=...)``, which polls with growing sleeps, and removing the
attempt's empty folder (three ``rmdir`` calls and a scan). So:

- :func:`run` waits for a process with no wall clock in one blocking
  ``wait()``; with a wall clock it is :func:`batchnb.node.proctree.run`
  (which also watches the process's descendants, to kill them at the limit);
- :func:`drop_later` decides at once whether a succeeded attempt's folder
  holds nothing (its record then says no folder is kept, as before) and leaves
  the removal to one background thread of the worker, so the next attempt of
  a bundle starts without waiting on the disk.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> run(["/bin/sh", "-c", "exit 3"], shell=False, cwd=d, env=dict(os.environ),
...     stdout_path=os.path.join(d, "o"), stderr_path=os.path.join(d, "e"), timeout=None)
(3, False)
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading

from . import proctree as _proctree
from .taskdir import empty_attempt_dir


def run(argv, *, shell: bool, cwd: str, env: dict, stdout_path: str, stderr_path: str,
        timeout: float | None, on_start=None) -> tuple[int | None, bool]:
    """As :func:`batchnb.node.proctree.run`: ``(exit code, timed out)``."""
    if timeout is not None:
        return _proctree.run(argv, shell=shell, cwd=cwd, env=env, stdout_path=stdout_path,
                             stderr_path=stderr_path, timeout=timeout, on_start=on_start)
    with open(_proctree._private(stdout_path), "wb") as out, open(_proctree._private(stderr_path), "wb") as err:
        proc = subprocess.Popen(argv, shell=shell, executable="/bin/sh" if shell else None, cwd=cwd, env=env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    if on_start is not None:
        on_start(proc)
    return proc.wait(), False


_removals: queue.SimpleQueue = queue.SimpleQueue()   # folders to remove, or an Event to set (flush)
_remover: threading.Thread | None = None
_remover_lock = threading.Lock()


def drop_later(record) -> None:
    """:func:`batchnb.node.taskdir.drop_if_empty`, with the removal itself off this thread."""
    task_dir = empty_attempt_dir(record)
    if task_dir is None:
        return
    record.task_dir = None
    _put(task_dir)


def flush(timeout: float = 10.0) -> bool:
    """Wait (bounded) until the folders queued so far are removed."""
    done = threading.Event()
    _put(done)
    return done.wait(timeout)


def _put(item) -> None:
    global _remover
    _removals.put(item)
    with _remover_lock:
        if _remover is None or not _remover.is_alive():
            _remover = threading.Thread(target=_remove_forever, name="batchnb-folder-remover", daemon=True)
            _remover.start()


def _remove_forever() -> None:
    while True:
        item = _removals.get()
        if isinstance(item, threading.Event):
            item.set()
            continue
        shutil.rmtree(item, ignore_errors=True)
        try:
            item.parent.rmdir()     # the task's folder too, when no other attempt is left in it
        except OSError:
            pass
