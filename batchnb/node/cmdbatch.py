"""A bundle's command batch: its plain commands started with one setup for the whole bundle.

A ``/bin/true`` run by :func:`batchnb.node.runner.run_attempt` cost about 2.7 ms of
the worker's CPU besides the command's own fork and exec (about 1 ms), profiled
on this project's 2-core machine: the environment copied and encoded again for
every command (about a hundred variables), the node's folders looked up with
``pathlib`` and made with a ``stat`` per parent, the user's name read from the
password database, ``/dev/null`` opened, the tails read from files that were
empty, the empty folder checked entry by entry before a background thread
removed it. :class:`CommandBatch` does the per-bundle part once (the node's folders,
the worker's environment encoded, ``/dev/null``) and, per command, only what the
command needs: its folder (the folder of the command before, when that one
succeeded and left nothing, renamed: one ``rename`` in place of three ``rmdir``,
two ``unlink`` and three ``mkdir``, which cost about 0.1 ms of CPU each on ext4
here), its variables, the spawn (CPython's ``vfork`` path: no ``preexec_fn``, no
user or group change), a blocking wait, and an ``fstat`` of each log, read only
when it is not empty. Measured the same way, about 1.3 ms is left.

A plain command (:func:`plain`) is one with nothing else to do on the node: no
Python call, container, inputs, outputs, secrets or multi-instance run; any
other request goes to :func:`~batchnb.node.runner.run_attempt`. What a plain
command shows stays as the runner shows it: its own folder and working
directory with Azure's variables, ``stdout.txt`` and ``stderr.txt`` (readable by
their owner only) and their tails, its exit code (127 for a program that cannot
start), ``max_wall_clock`` killing its whole tree, the registry through which a
job's terminate and a closing worker kill it, and its folder removed when it
succeeded and left nothing.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> from batchnb.node.attempt import AttemptRequest
>>> batch = CommandBatch()
>>> rec = batch.run(AttemptRequest("j", "t1", 1, "p", command="echo hi; exit 3", node_root=root))
>>> rec.exit_code, rec.stdout_tail, rec.message
(3, 'hi\\n', 'exit code 3')
>>> rec = batch.run(AttemptRequest("j", "t2", 1, "p", command=["/bin/true"], node_root=root))
>>> rec.succeeded, rec.task_dir          # it left nothing: no folder kept (lent to the next one)
(True, None)
>>> batch.close()                        # the bundle's end: the folder lent on is gone
>>> os.listdir(os.path.join(root, batch.node_id, "workitems", "j"))
['t1']
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
import traceback

from . import proctree as _proctree
from .attempt import (AttemptRecord, AttemptRequest, CRASH, TAIL_BYTES, TERMINATED,
                      _node_id, _running, _running_lock, _terminated, node_dirs, private_dir,
                      cannot_start, register_process, settle, task_environment)

_LOGS = ("stdout.txt", "stderr.txt")
_OPEN = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
#: what the batch makes in an attempt's folder, and its mode
_MADE = {"wd": 0o700, _LOGS[0]: 0o600, _LOGS[1]: 0o600}


def plain(req: AttemptRequest) -> bool:
    """Whether ``req`` is a command with nothing to do on the node but run it."""
    return req.command is not None and req.python is None and req.container is None and not req.inputs \
        and not req.outputs and not req.secrets and not req.secret_refs and req.instance is None


class CommandBatch:
    """Runs plain command attempts on this node, one after another, sharing one setup."""

    def __init__(self):
        self.node_id = _node_id()
        self._dirs: dict = {}
        self._base: dict | None = None
        self._null: int | None = None
        #: the folder of the last attempt that succeeded and left nothing: the next one's folder
        self._spare: str | None = None

    def close(self) -> None:
        """Remove the spare folder; let go of ``/dev/null``."""
        spare, self._spare = self._spare, None
        if spare is not None:
            _remove(spare)
        if self._null is not None:
            os.close(self._null)
            self._null = None

    def __del__(self):
        self.close()

    def run(self, req: AttemptRequest) -> AttemptRecord:
        """Run one plain command attempt; never raises (as :func:`~batchnb.node.runner.run_attempt`)."""
        record = AttemptRecord(req.job_id, req.task_id, req.attempt, self.node_id, start=time.time())
        try:
            self._run(req, record)
        except BaseException as exc:  # noqa: BLE001 - an attempt must report, never raise into Dask
            record.category = record.category or CRASH
            record.message = f"batchnb runner failed: {type(exc).__name__}: {exc}"
            record.stderr_tail = (record.stderr_tail + traceback.format_exc())[-TAIL_BYTES:]
        record.end = time.time()
        return record

    def _node(self, node_root: str) -> dict:
        dirs = self._dirs.get(node_root)
        if dirs is None:
            dirs = self._dirs[node_root] = node_dirs(node_root, self.node_id)
            dirs["shared"].mkdir(parents=True, exist_ok=True)
        return dirs

    def _run(self, req: AttemptRequest, record: AttemptRecord) -> None:
        dirs = self._node(req.node_root)
        task_dir = os.path.join(str(dirs["workitems"]), req.job_id, req.task_id, str(req.attempt))
        wd = os.path.join(task_dir, "wd")
        self._make(task_dir, wd)
        record.task_dir = task_dir
        key = (req.job_id, req.task_id, req.attempt)
        with _running_lock:
            doomed = key in _terminated
            _terminated.discard(key)
        if doomed:
            record.category, record.message = TERMINATED, "killed by job.terminate() before it started"
            return
        if self._base is None:
            # The worker's environment as the bundle's first command starts, encoded once: Popen
            # then passes the bytes on as they are instead of encoding each variable each time.
            self._base = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
        env = dict(self._base)
        env.update((os.fsencode(k), os.fsencode(v))
                   for k, v in task_environment(req, self.node_id, dirs, task_dir, wd).items())
        shell = isinstance(req.command, str)
        argv = req.command if shell else list(req.command)
        out_path, err_path = os.path.join(task_dir, _LOGS[0]), os.path.join(task_dir, _LOGS[1])
        out = err = -1
        try:
            # Readable by their owner only: a task's output may hold what it read.
            out, err = os.open(out_path, _OPEN, 0o600), os.open(err_path, _OPEN, 0o600)
            try:
                if req.max_wall_clock is None:
                    (code, group), timed_out = self._spawn_wait(key, argv, shell, wd, env, out, err), False
                else:       # the tree is watched and killed at the limit: proctree's loop
                    group = None    # no Popen of ours to ask: its folder is removed, not lent
                    code, timed_out = _proctree.run(argv, shell=shell, cwd=wd, env=env, stdout_path=out_path,
                                                    stderr_path=err_path, timeout=req.max_wall_clock,
                                                    on_start=lambda proc: register_process(key, proc))
            except OSError as exc:
                cannot_start(record, argv, exc)
                return
            finally:
                with _running_lock:
                    _running.pop(key, None)
            record.stdout_tail, record.stderr_tail = _tail(out), _tail(err)
        finally:
            for fd in (out, err):
                if fd >= 0:
                    os.close(fd)
        with _running_lock:
            killed = key in _terminated
            _terminated.discard(key)
        settle(record, code, timed_out, killed,
               "killed at max_wall_clock of {:g}s with all its processes", req.max_wall_clock)
        if not killed and not timed_out and code == 0 and not record.stdout_tail and not record.stderr_tail:
            empty, as_made = _holds_nothing(req, task_dir)
            if empty and as_made and self._spare is None and _gone(group):
                self._spare, record.task_dir = task_dir, None   # no longer this attempt's: the next one's
            elif empty and _remove(task_dir):
                record.task_dir = None

    def _make(self, task_dir: str, wd: str) -> None:
        """The attempt's folder and working directory (0700), its parents made only when missing.

        An attempt of this bundle that succeeded and left nothing left its folder (empty logs,
        an empty ``wd``): renamed, it is this one's, one ``rename`` for the three ``mkdir`` and
        the five removals it saves (on ext4 here, a ``rmdir`` costs about 0.1 ms of CPU).
        """
        spare, self._spare = self._spare, None
        if spare is not None:
            lent = _lend_task_folder(spare, task_dir)
            if lent:
                return
            if lent is None:
                spare = None            # it went, and with it nothing of this attempt's: made below
        try:
            os.mkdir(os.path.dirname(task_dir), 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:       # the job's folder is not there (yet, or any more)
            private_dir(wd)
            if spare is not None:
                _remove(spare)
            return
        if spare is not None:
            try:
                os.rename(spare, task_dir)      # fails onto a folder that holds something: made anew then
            except OSError:
                _remove(spare)
            else:
                _rmdir(os.path.dirname(spare))
                return
        for folder in (task_dir, wd):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:     # made by an earlier run of the same attempt: reused, as the runner does
                pass

    def _spawn_wait(self, key, argv, shell, wd, env, out, err) -> tuple[int, int]:
        if self._null is None:
            self._null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        proc = subprocess.Popen(argv, shell=shell, executable="/bin/sh" if shell else None, cwd=wd, env=env,
                                stdin=self._null, stdout=out, stderr=err, start_new_session=True)
        register_process(key, proc)
        return proc.wait(), proc.pid        # its process group's id: it leads a session of its own


def _tail(fd: int) -> str:
    size = os.fstat(fd).st_size
    if not size:
        return ""
    return os.pread(fd, TAIL_BYTES, max(0, size - TAIL_BYTES)).decode("utf-8", "replace")


def _holds_nothing(req: AttemptRequest, task_dir: str) -> tuple[bool, bool]:
    """Whether a succeeded attempt's folder, its logs empty, holds nothing else (as
    :func:`batchnb.node.taskdir.holds_nothing`); and whether it is also as the batch made it
    (types and modes), so that it may be the next attempt's folder."""
    if os.sep in req.job_id + req.task_id or req.task_id in (".", ".."):
        return False, False     # not the folder layout the removal assumes: kept
    try:
        with os.scandir(task_dir) as entries:
            seen = {e.name: e.stat(follow_symlinks=False) for e in entries}
        if seen.keys() != _MADE.keys() or not stat.S_ISDIR(seen["wd"].st_mode) \
                or any(seen[name].st_size or not stat.S_ISREG(seen[name].st_mode) for name in _LOGS) \
                or os.listdir(os.path.join(task_dir, "wd")):
            return False, False
        as_made = stat.S_IMODE(os.stat(task_dir).st_mode) == 0o700 and all(
            stat.S_IMODE(st.st_mode) == _MADE[name] and st.st_nlink == (2 if name == "wd" else 1)
            for name, st in seen.items())
        return True, as_made
    except OSError:
        return False, False


def _gone(group: int | None) -> bool:
    """Whether nothing is left of a command's process group: a process it left behind would have
    its working directory in the next command's folder, were that folder lent on."""
    if group is None:
        return False
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def _remove(task_dir: str) -> bool:
    """Remove an attempt's folder that holds nothing, and its task's folder when no other attempt is
    in it; whether the attempt's folder went."""
    try:
        os.rmdir(os.path.join(task_dir, "wd"))
        for name in _LOGS:
            os.unlink(os.path.join(task_dir, name))
        os.rmdir(task_dir)
    except OSError:
        return False
    _rmdir(os.path.dirname(task_dir))
    return True


def _lend_task_folder(spare: str, task_dir: str) -> bool | None:
    """Lend the spare attempt's task folder on whole when the spare is all it holds: one ``rename``
    of ``<job>/<task>`` for the ``mkdir`` of the new task's folder and the ``rmdir`` of the old one
    (together about 0.5 ms of a ``/bin/true``'s 2 ms on the node here; a ``rmdir`` is the dearest).
    True: ``task_dir`` is made. False: nothing changed (the caller lends the attempt folder alone).
    None: the spare is gone and ``task_dir`` is still to be made."""
    old_parent, new_parent = os.path.dirname(spare), os.path.dirname(task_dir)
    if old_parent == new_parent or os.path.dirname(old_parent) != os.path.dirname(new_parent):
        return False                    # the same task, or another job's folder
    try:
        if os.listdir(old_parent) != [os.path.basename(spare)]:
            return False                # another attempt of its task is kept there
        os.rename(old_parent, new_parent)       # onto a missing or empty folder only
    except OSError:
        return False
    moved = os.path.join(new_parent, os.path.basename(spare))
    if moved != task_dir:               # another attempt number
        try:
            os.rename(moved, task_dir)
        except OSError:
            _remove(moved)
            return None
    return True


def _rmdir(folder: str) -> None:
    try:
        os.rmdir(folder)
    except OSError:             # another attempt of the task is kept there
        pass
