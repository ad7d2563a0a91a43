"""An attempt's folder that holds nothing is not kept.

Azure keeps a task's folder for its ``retention_time`` (7 days by default)
because it may hold what the task made or wrote. A succeeded attempt whose
working directory is empty and whose ``stdout.txt`` and ``stderr.txt`` are
empty holds nothing: it is removed on the node as the attempt ends, so a
job of 100,000 no-op tasks leaves no folders behind. A failed attempt's
folder is always kept, empty or not, for whoever looks into the failure.

>>> import tempfile
>>> from pathlib import Path
>>> task_dir = Path(tempfile.mkdtemp()) / "workitems" / "job" / "t1" / "1"
>>> (task_dir / "wd").mkdir(parents=True)
>>> (task_dir / "stdout.txt").write_text("")
0
>>> holds_nothing(task_dir)
True
>>> (task_dir / "wd" / "out.txt").write_text("made")
4
>>> holds_nothing(task_dir)
False
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: What the runner itself leaves in a task folder: the logs (kept only when not empty) and the
#: outcome of a Python task run in a process of its own (read back into the attempt record).
_OWN_FILES = {"stdout.txt", "stderr.txt", "result.pkl"}


def holds_nothing(task_dir: Path) -> bool:
    """True when the folder holds an empty ``wd`` and empty logs, and nothing else."""
    try:
        for entry in task_dir.iterdir():
            if entry.name == "wd" and entry.is_dir() and not entry.is_symlink():
                if any(entry.iterdir()):
                    return False
            elif entry.name not in _OWN_FILES or not entry.is_file() or \
                    (entry.name != "result.pkl" and entry.stat().st_size):
                return False
    except OSError:
        return False
    return True


def empty_attempt_dir(record) -> Path | None:
    """A succeeded attempt's folder (an :class:`AttemptRecord`'s) when it holds nothing, else None."""
    if not record.task_dir or not record.succeeded:
        return None
    task_dir = Path(record.task_dir)
    if not task_dir.name.isdigit() or task_dir.parent.parent.parent.name != "workitems" \
            or not holds_nothing(task_dir):
        return None
    return task_dir


def drop_if_empty(record) -> None:
    """Remove a succeeded attempt's folder (an :class:`AttemptRecord`'s) when it holds nothing.

    Its ``<task>`` folder goes too when no other attempt is left in it; the
    ``<job>`` folder stays, as another task of the job may be making its own
    inside it at this moment.
    """
    task_dir = empty_attempt_dir(record)
    if task_dir is None:
        return
    shutil.rmtree(task_dir, ignore_errors=True)
    if task_dir.exists():
        return
    record.task_dir = None
    try:
        task_dir.parent.rmdir()
    except OSError:
        pass
