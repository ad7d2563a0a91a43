"""The node launcher: one process that imports a worker's code once and forks a node per request.

Each local node used to be a fresh ``python -c`` that imported ``distributed``
and batchnb's node modules (about a second of CPU each, on the path to a new
pool's first task, with every node importing at once on two cores). The
launcher imports them once, while the driver is still starting its scheduler,
and then forks one child per node; a child is a worker at once.

It reads lines of JSON on stdin (``{"id", "argv", "env"}``: start a node) and
answers on the file descriptor named by ``BATCHNB_LAUNCHER_FD``:
``started <id> <pid>`` and ``exited <pid> <code>`` (the code as
``subprocess`` gives it: negative for a signal), and ``warm`` once it has also
imported what nodes would otherwise import after their fork (:data:`WARM`: a
worker's HTTP routes, the modules of a first Python task and of staging). It
imports those only while no request waits, one module at a time, so a node is
never held up by more than one import; a node forked earlier imports the rest
itself, as it would have anyway. It ends at the end of its
input (its driver closed it or died); its nodes then see their parent change,
which is how :func:`batchnb.node.reaper.watch_driver` knows that their driver
is gone.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import signal
import sys
import traceback

#: the file descriptor the launcher answers on
REPORT_FD = "BATCHNB_LAUNCHER_FD"
#: the level of the nodes' ``distributed`` logs, when the driver passed no Dask config (see :func:`silence`)
SILENCE = "BATCHNB_LAUNCHER_SILENCE"
#: what a node imports after its fork unless the launcher did first: a worker's HTTP routes (at its
#: start), its reseed of numpy's generator, then a first Python task's and staging's modules
WARM = ("tornado.platform.asyncio", "distributed.http.health", "distributed.http.statics",
        "distributed.http.worker.prometheus.core", "numpy.random", "batchnb.node.context",
        "batchnb.node.pycall", "fsspec", "batchnb.staging.storage", "batchnb.staging.argstore",
        "batchnb.staging.cache", "batchnb.staging.patterns", "batchnb.staging.retry")


def serve() -> None:
    report = int(os.environ.pop(REPORT_FD))
    level = os.environ.pop(SILENCE, None)
    if level:      # before distributed reads it, at its import
        import dask.config
        silence(dask.config.config, level)
    # What every node needs, imported once here rather than in every node.
    import distributed  # noqa: F401
    import distributed.cli.dask_spec  # noqa: F401
    from . import reaper, runner  # noqa: F401 - the nodes' preload and what runs their tasks
    warm = list(WARM)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)     # the wakeup fd is what tells of an exit
    pending = b""
    while True:
        ready, _, _ = select.select([0, wake_r], [], [], 0 if warm else None)
        if not ready and warm:
            _import(warm.pop(0))
            if not warm:
                os.write(report, b"warm\n")
            continue
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


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a node that needs it imports it, and fails there with its context
        pass


def silence(config: dict, level) -> None:
    """Set the node's ``distributed`` log level in the config it starts with (where distributed
    looks for it), as LocalCluster's ``silence_logs`` does for its workers."""
    name = level_name(level)
    if name is None:
        return
    nested = {"logging", "logging-file-config"} & set(config.get("distributed", {}))
    base = config["distributed"] if nested else config
    logs = base.setdefault("logging", {})
    if "logging-file-config" not in base and isinstance(logs, dict) and "version" not in logs:
        logs["distributed"] = name


def level_name(level) -> str | None:
    """``silence_logs`` as a level name (``"error"``), or None when it silences nothing."""
    if isinstance(level, bool) or not isinstance(level, (int, str)) or not level:
        return None
    return str(level if isinstance(level, str) else logging.getLevelName(level)).lower()


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
