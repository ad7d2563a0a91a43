"""The node launcher: one process that imports a worker's code once and forks a node per request.

Each local node used to be a fresh ``python -c`` that imported ``distributed``
and batchnb's node modules (about a second of CPU each, on the path to a new
pool's first task, with every node importing at once on two cores). The
launcher imports them once, while the driver is still starting its scheduler,
and then forks one child per node; a child is a worker at once.

It reads lines of JSON on stdin (``{"id", "argv", "env"}``: start a node) and
answers on the file descriptor named by ``BATCHNB_LAUNCHER_FD``:
``started <id> <pid>`` and ``exited <pid> <code>`` (the code as
``subprocess`` gives it: negative for a signal). It ends at the end of its
input (its driver closed it or died); its nodes then see their parent change,
which is how :func:`batchnb.node.reaper.watch_driver` knows that their driver
is gone.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import traceback

#: the file descriptor the launcher answers on
REPORT_FD = "BATCHNB_LAUNCHER_FD"


def serve() -> None:
    report = int(os.environ.pop(REPORT_FD))
    # What every node needs, imported once here rather than in every node.
    import distributed  # noqa: F401
    import distributed.cli.dask_spec  # noqa: F401
    from . import reaper, runner  # noqa: F401 - the nodes' preload and what runs their tasks

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)     # the wakeup fd is what tells of an exit
    pending = b""
    while True:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(report)
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    request = json.loads(line)
                    pid = _fork(request, closing=(report, wake_r, wake_w))
                    os.write(report, f"started {request['id']} {pid}\n".encode())
    _reap(report)


def _reap(report: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        os.write(report, f"exited {pid} {os.waitstatus_to_exitcode(status)}\n".encode())


def _fork(request: dict, closing: tuple) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _node(request, closing)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child must never return into the launcher's loop
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _node(request: dict, closing: tuple) -> int:
    """In the forked child: become the node the request describes, as ``distributed.cli.dask_spec`` would."""
    os.setsid()              # a session of its own, as the worker commands had: no interrupt reaches it
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in closing:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    import dask.config
    from .reaper import DRIVER_PID
    env = dict(request["env"])
    env.pop("BATCHNB_SYS_PATH", None)
    config = env.pop("DASK_INTERNAL_INHERIT_CONFIG", None)
    # The launcher is this node's parent: it lives as long as the driver (it ends at the end of its input).
    env[DRIVER_PID] = str(os.getppid())
    os.environ.clear()
    os.environ.update(env)
    if config:    # the driver's config as of this node's start (TLS files, preloads), as a nanny hands it over
        dask.config.update(dask.config.config, dask.config.deserialize(config), priority="new")
    if "numpy" in sys.modules:      # forked children would otherwise draw the same numbers
        sys.modules["numpy"].random.seed()
    from distributed.cli.dask_spec import main
    main(args=request["argv"], prog_name="dask-spec", standalone_mode=True)
    return 0
