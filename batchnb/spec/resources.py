"""Resource files (inputs) and output files of a task: what they are and where they may go.

Part of :mod:`batchnb.spec`, which re-exports the public names.

>>> ResourceFile("in.jpg", "az://photos/1.jpg").path
'in.jpg'
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Mapping

from . import validate as v
from ..errors import SpecError

UPLOAD_CONDITIONS = ("success", "failure", "completion")


def _relative_path(path: Any, field_name: str) -> str:
    """A path inside the task's working directory: no absolute paths, no '..'."""
    if not isinstance(path, str) or not path.strip():
        raise SpecError(field_name, path, "expected a relative path inside the task's working directory")
    norm = posixpath.normpath(path.replace("\\", "/"))
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or ":" in norm.split("/")[0][1:2]:
        raise SpecError(field_name, path, "must stay inside the task's working directory (no absolute path, no '..')")
    return norm


def _url(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(field_name, value, "expected a URL such as 'az://container/path' or 'file:///data/x'")
    return value.strip()


@dataclass(frozen=True)
class ResourceFile:
    """An input: ``url`` fetched to ``path`` in the working directory.

    A ``url`` ending in ``/`` is a directory or blob prefix (Azure's
    ``storageContainerUrl`` + ``blobPrefix``) fetched into the folder ``path``.
    ``file_mode`` is an octal string such as ``"0755"`` for executables.

    >>> ResourceFile("in.jpg", "az://photos/1.jpg").path
    'in.jpg'
    """

    path: str
    url: str
    file_mode: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "path", _relative_path(self.path, "inputs path"))
        object.__setattr__(self, "url", _url(self.url, f"inputs[{self.path!r}]"))
        if self.file_mode is not None:
            mode = self.file_mode
            try:
                ok = isinstance(mode, str) and 0 <= int(mode, 8) <= 0o7777
            except ValueError:
                ok = False
            if not ok:
                raise SpecError(f"inputs[{self.path!r}].file_mode", mode, "expected an octal string such as '0755'")

    @property
    def is_prefix(self) -> bool:
        return self.url.endswith("/")


@dataclass(frozen=True)
class OutputFile:
    """An output: files matching ``pattern`` uploaded to ``destination``.

    ``destination`` may use ``{job_id}``, ``{task_id}`` and ``{attempt}``; one
    ending in ``/`` is a folder that keeps each file's relative path.

    >>> OutputFile("*.png", "az://thumbs/{job_id}/").upload_condition
    'success'
    """

    pattern: str
    destination: str
    upload_condition: str = "success"

    def __post_init__(self):
        object.__setattr__(self, "pattern", _relative_path(self.pattern, "outputs pattern"))
        object.__setattr__(self, "destination", _url(self.destination, f"outputs[{self.pattern!r}]"))
        object.__setattr__(self, "upload_condition",
                           v.choice(self.upload_condition, "upload_condition", UPLOAD_CONDITIONS))
        try:
            self.destination.format(job_id="j", task_id="t", attempt=1)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise SpecError(f"outputs[{self.pattern!r}]", self.destination,
                            f"only {{job_id}}, {{task_id}} and {{attempt}} may be templated ({exc})") from None


def _inputs(value: Any, field_name: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(ResourceFile(p, u) for p, u in value.items())
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if isinstance(item, Mapping):
                item = _from_mapping(ResourceFile, item, field_name)
            if not isinstance(item, ResourceFile):
                raise SpecError(field_name, item, "expected {path: url} or ResourceFile items")
            items.append(item)
        return tuple(items)
    raise SpecError(field_name, value, "expected a mapping of local path to URL")


def _outputs(value: Any, condition: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(OutputFile(p, d, condition) for p, d in value.items())
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if isinstance(item, Mapping):
                item = _from_mapping(OutputFile, item, "outputs")
            if not isinstance(item, OutputFile):
                raise SpecError("outputs", item, "expected {pattern: destination} or OutputFile items")
            items.append(item)
        return tuple(items)
    raise SpecError("outputs", value, "expected a mapping of glob pattern to destination URL")


def _from_mapping(cls, item: Mapping, field_name: str):
    """``cls(**item)``, with a wrong or missing key named instead of a TypeError."""
    try:
        return cls(**item)
    except TypeError as exc:
        raise SpecError(field_name, dict(item), f"expected the fields of {cls.__name__} ({exc})") from None
