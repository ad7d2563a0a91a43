"""Container tasks on a node: the ``podman run``/``docker run`` line, and stopping it.

A container task's command line runs inside its image (:class:`batchnb.Container`)
with the node's container runtime: podman or docker, the pool's
``container_runtime`` or the first found on the node's PATH. The runner
(:mod:`batchnb.node.runner`) gets a :class:`Plan` here and runs it in place of
the command. As Azure Batch does, the node's root folder (which holds the
task's) is mounted at its own path (so every ``AZ_BATCH_*`` path means the
same inside), and every
``AZ_BATCH_*`` variable and the task's ``env`` are passed in - by name, so
that no value (a secret) shows in the process list.

The container is named after its attempt. Killing the runtime's client
process does not stop a container (conmon, or docker's daemon, keeps it), so
a wall clock, ``job.terminate()`` and a closing node remove it by that name
first (``rm -f``), then kill the client: a task shown ended has no container
left running.

>>> from batchnb.spec.container import Container
>>> argv = run_argv("podman", Container("localhost/app:1", options="--network=none"), "bnb-j-t-1-0a1b2c3d",
...                 "echo hi", ["AZ_BATCH_TASK_ID"], "/n/wd", ["/n"])
>>> " ".join(argv)
'podman run --rm --name bnb-j-t-1-0a1b2c3d -v /n:/n -w /n/wd -e AZ_BATCH_TASK_ID --network=none localhost/app:1 /bin/sh -c echo hi'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..spec.container import CONTAINER_RUNTIMES
from ..states import FailureCategory
from . import proctree as _proctree

#: seconds a pull may take when the task has no wall clock
PULL_TIMEOUT = 900.0
#: seconds the runtime has to remove a container (``rm -f``)
REMOVE_TIMEOUT = 30.0
#: the exit code podman and docker give when they could not run the container at all
RUNTIME_ERROR = 125
# Set in the local backend's node processes (batchnb.node.reaper.NODE_MARK): passed into the
# container, so that the reaper of a node that died finds the container's processes as its own.
_NODE_MARK = "BATCHNB_NODE_PROCESS"


def find_runtime(preferred: str | None = None) -> str | None:
    """The path of ``preferred`` on PATH, or of the first of podman and docker found; None if none is."""
    for name in (preferred,) if preferred else CONTAINER_RUNTIMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def check_runtime(name: str | None) -> None:
    """For a pool whose nodes run on this machine: a ``container_runtime`` it names must be on PATH."""
    if name is not None and find_runtime(name) is None:
        raise SpecError("container_runtime", name, f"{name} is not on this machine's PATH, where the local "
                                                   "pool's nodes run; install it, or give None to use whichever "
                                                   "of podman and docker is there")


def container_name(job_id: str, task_id: str, attempt: int) -> str:
    """A name of the attempt's own: readable in ``podman ps``, and never one another run holds."""
    return f"bnb-{job_id}-{task_id}-{attempt}-{uuid.uuid4().hex[:8]}"


def run_argv(runtime: str, container, name: str, command: Any, env_names, wd: str, mounts,
             labels: dict | None = None) -> list[str]:
    """The ``run`` command line: removed at exit, named, folders mounted, variables passed by name."""
    argv = [runtime, "run", "--rm", "--name", name]
    for key, value in (labels or {}).items():
        argv += ["--label", f"{key}={value}"]
    for folder in mounts:
        argv += ["-v", f"{folder}:{folder}"]
    if container.working_dir == "task":
        argv += ["-w", str(wd)]
    elif container.working_dir != "image":
        argv += ["-w", container.working_dir]
    for env_name in env_names:
        argv += ["-e", env_name]
    argv += list(container.options)
    argv.append(container.image)
    argv += ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    return argv


class Plan:
    """One container attempt: its runtime, name and command line; runs it and removes it."""

    def __init__(self, runtime: str, name: str, argv: list[str], image: str, deadline: float | None = None):
        self.runtime, self.name, self.argv, self.image = runtime, name, argv, image
        #: when the wall clock ends (time.monotonic()); it started before the image was looked for
        self.deadline = deadline

    def remove(self) -> None:
        """Stop and remove the container at once (no grace period); nothing if it is gone."""
        argv = [self.runtime, "rm", "-f", self.name]
        if Path(self.runtime).name == "podman":
            argv[3:3] = ["-t", "0"]
        try:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=REMOVE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def run(self, argv, *, shell: bool, cwd: str, env: dict, stdout_path: str, stderr_path: str,
            timeout: float | None, on_start=None) -> tuple[int | None, bool]:
        """As :func:`batchnb.node.proctree.run`: ``(exit_code, timed_out)``; the container is gone after.

        ``timeout`` is counted from :attr:`deadline` when there is one: a pull took part of it.
        """
        if self.deadline is not None:
            timeout = max(0.001, self.deadline - time.monotonic())
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        handle = ContainerProcess(proc, self)
        if on_start is not None:
            on_start(handle)
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            handle.stop_container()
            return None, True
        finally:
            if proc.returncode is None or proc.returncode < 0:
                # The client was killed (or this thread interrupted): the container would run on.
                handle.stop_container()

    def explain(self, record, stderr: str) -> None:
        """A failed run's record: exit code 125 is the runtime's own error, before the command ran."""
        if record.exit_code == RUNTIME_ERROR:
            lines = [line for line in stderr.splitlines() if line.strip()]
            record.category = FailureCategory.PREPROCESSING
            record.message = (f"{Path(self.runtime).name} could not run a container of image {self.image!r} "
                              f"(exit code 125): {lines[-1] if lines else 'no message'}")


class ContainerProcess:
    """The runtime's client process of a container attempt, as the registry of running attempts
    holds it: killing it (``stop_container``, then the process tree) removes the container too."""

    def __init__(self, proc: subprocess.Popen, plan: Plan):
        self.proc, self.plan = proc, plan

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def stop_container(self) -> None:
        self.plan.remove()
        _proctree.kill_tree(self.proc)


def _fail(record, message: str) -> None:
    record.category, record.message = FailureCategory.PREPROCESSING, message


def _ensure_image(runtime: str, image: str, env: dict, timeout: float) -> str | None:
    """None when ``image`` is on the node (pulled if need be); else why it is not."""
    name = Path(runtime).name
    check = [runtime, "image", "exists", image] if name == "podman" else \
        [runtime, "image", "inspect", "--format", ".", image]
    try:
        found = subprocess.run(check, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=REMOVE_TIMEOUT,
                               check=False)
    except subprocess.TimeoutExpired:
        return f"{name} did not say within {REMOVE_TIMEOUT:g}s whether image {image!r} is on the node"
    if found.returncode == 0:
        return None
    if image.startswith("localhost/"):
        # Built or imported on a node, never in a registry: a pull would only wait for one.
        return f"container image {image!r} is not on the node ({name} image exists said no); build or " \
               f"import it on every node, e.g. in the pool's start task"
    try:
        pulled = subprocess.run([runtime, "pull", image], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"container image {image!r} is not on the node and {name} pull took more than {timeout:g}s"
    if pulled.returncode != 0:
        lines = [x for x in pulled.stderr.decode("utf-8", "replace").splitlines() if x.strip()]
        return f"container image {image!r} is not on the node and {name} pull failed: " \
               f"{lines[-1] if lines else 'exit code ' + str(pulled.returncode)}"
    return None


def plan(req, record, env: dict, dirs: dict, task_dir: Path, wd: Path, node_id: str) -> Plan | None:
    """The attempt's :class:`Plan`; None (and the record says why) without a runtime or the image."""
    container = req.container
    runtime = find_runtime(req.container_runtime)
    if runtime is None:
        wanted = repr(req.container_runtime) if req.container_runtime else "podman or docker"
        _fail(record, f"no container runtime for image {container.image!r}: {wanted} is not on the PATH of node "
                      f"{node_id!r}; install one there, or give bnb.Pool(..., container_runtime=...)")
        return None
    # A pull counts against the wall clock, as the command's time on the node does.
    deadline = None if req.max_wall_clock is None else time.monotonic() + req.max_wall_clock
    why = _ensure_image(runtime, container.image, env, req.max_wall_clock or PULL_TIMEOUT)
    if why is not None:
        _fail(record, why)
        return None
    mounts = [str(dirs["root"])]
    names = [k for k in env if k.startswith("AZ_BATCH_")] + list(req.env) + list(req.secrets)
    if os.environ.get(_NODE_MARK):
        names.append(_NODE_MARK)
    name = container_name(req.job_id, req.task_id, req.attempt)
    argv = run_argv(runtime, container, name, req.command, dict.fromkeys(names), str(wd), mounts,
                    {"batchnb.job": req.job_id, "batchnb.task": req.task_id, "batchnb.attempt": str(req.attempt)})
    return Plan(runtime, name, argv, container.image, deadline)
