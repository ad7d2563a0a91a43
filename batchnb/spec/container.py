"""Container tasks: the image a command line runs in (Azure's ``containerSettings``).

Part of :mod:`batchnb.spec`, which re-exports the public names. What runs the
container on a node is :mod:`batchnb.node.container`.

>>> Container("localhost/app:1", options="--network=none").options
('--network=none',)
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from . import validate as v
from ..errors import SpecError

#: Container runtimes a pool may use; None finds one on the node's PATH, in this order.
CONTAINER_RUNTIMES = ("podman", "docker")

# Azure's workingDirectory values (and spellings of them) -> batchnb's short words.
_WORKING_DIRS = {"task": "task", "taskworkingdirectory": "task", "task_working_directory": "task",
                 "image": "image", "containerimagedefault": "image", "container_image_default": "image"}
# Options batchnb sets itself: another value would leave it unable to stop, name or wait for
# the container (a detached container outlives its task and its wall clock).
_OWN_OPTIONS = {"--name": "batchnb names the container after the attempt, to stop it by that name",
                "-d": "a detached container would outlive its task and its wall clock",
                "--detach": "a detached container would outlive its task and its wall clock"}
_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")


@v.checked_keywords
@dataclass(frozen=True)
class Container:
    """The image a command task runs in, with podman or docker on its node.

    The node's root folder (the task's folders in it) is mounted at its own
    path, every ``AZ_BATCH_*`` variable and the task's ``env`` are passed in,
    and the container is removed when the task ends, is terminated or
    reaches its wall clock. Python callables do not run in containers.

    Parameters
    ----------
    image : str
        An image reference as ``podman run`` takes it (``"localhost/app:1"``,
        ``"docker.io/library/python:3.12"``). A missing image is pulled unless
        it is a ``localhost/`` one (built or imported on the node).
    options : str or list of str, optional
        More ``run`` options (Azure's ``containerRunOptions``), e.g.
        ``"--network=none --memory=2g"``. ``--name`` and ``--detach`` are batchnb's.
    working_dir : str, optional
        ``"task"`` (default: the task's working directory, Azure's
        ``taskWorkingDirectory``), ``"image"`` (the image's own, Azure's
        ``containerImageDefault``) or an absolute path inside the container.

    >>> c = Container("localhost/app:1", working_dir="containerImageDefault")
    >>> c.working_dir
    'image'
    """

    image: str
    options: Any = ()
    working_dir: Any = "task"

    def __post_init__(self):
        image = self.image
        if not isinstance(image, str) or not _IMAGE_RE.match(image.strip()):
            raise SpecError("container.image", image, "expected an image reference such as 'localhost/app:1' or "
                                                      "'docker.io/library/python:3.12'")
        object.__setattr__(self, "image", image.strip())
        object.__setattr__(self, "options", _options(self.options))
        object.__setattr__(self, "working_dir", _working_dir(self.working_dir))


def _options(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise SpecError("container.options", value, f"cannot be split into arguments: {exc}") from None
    elif not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value):
        raise SpecError("container.options", value, "expected a string of run options or a list of strings")
    for arg in value:
        if "\0" in arg:
            raise SpecError("container.options", arg, "an option cannot hold a NUL character")
        name = arg.split("=", 1)[0]
        if name in _OWN_OPTIONS:
            raise SpecError("container.options", arg, f"is set by batchnb: {_OWN_OPTIONS[name]}")
    return tuple(value)


def _working_dir(value: Any) -> str:
    if value is None:
        return "task"
    if isinstance(value, str):
        word = _WORKING_DIRS.get(value.strip().lower())
        if word:
            return word
        if value.startswith("/") and "\0" not in value:
            return value
    raise SpecError("container.working_dir", value, "expected 'task' (taskWorkingDirectory), 'image' "
                                                    "(containerImageDefault) or an absolute path in the container")


def container(value: Any, field: str = "container") -> Container | None:
    """A task's ``container=``: a :class:`Container`, an image name for short, or None."""
    if value is None or isinstance(value, Container):
        return value
    if isinstance(value, str):
        return Container(value)
    raise SpecError(field, value, "expected bnb.Container(image, options=..., working_dir=...) or an image name")


def container_runtime(value: Any) -> str | None:
    """A pool's ``container_runtime=``: ``"podman"``, ``"docker"`` or None (found on the node's PATH)."""
    if value is None:
        return None
    return v.choice(value, "container_runtime", CONTAINER_RUNTIMES)
