"""Resource files (inputs) and output files of a task: what they are and where they may go.

Part of :mod:`batchnb.spec`, which re-exports the public names.

>>> ResourceFile("in.jpg", "az://photos/1.jpg").path
'in.jpg'
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import validate as v
from ..errors import SpecError

UPLOAD_CONDITIONS = ("success", "failure", "completion")


def _relative_path(path: Any, field_name: str, *, folder_ok: bool = False) -> str:
    """A path inside the task's working directory: no absolute paths, no '..'.

    The working directory itself (``.``, ``x/..``) is a place for a folder's
    contents only (``folder_ok``): a file fetched there, or a pattern naming
    it, would fail on the node, after the task was accepted.
    """
    if not isinstance(path, str) or not path.strip():
        raise SpecError(field_name, path, "expected a relative path inside the task's working directory")
    if "\0" in path:
        raise SpecError(field_name, path, "a path cannot hold a NUL character")
    norm = posixpath.normpath(path.replace("\\", "/"))
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or ":" in norm.split("/")[0][1:2]:
        raise SpecError(field_name, path, "must stay inside the task's working directory (no absolute path, no '..')")
    if norm == "." and not folder_ok:
        raise SpecError(field_name, path, "names the working directory itself; give a file name such as 'in.csv' "
                                          "(only a folder URL ending in '/' may be fetched into '.')")
    return norm


_PROTOCOLS: frozenset[str] = frozenset()


def _known_protocols() -> frozenset[str]:
    global _PROTOCOLS
    import fsspec   # not at import: the model is plain data and loads without fsspec's cost
    # Refreshed on a miss: an implementation may have been registered since.
    from fsspec.registry import registry
    # available_protocols() lists the known implementations only, not those registered
    # at run time (fsspec.register_implementation): a user's own store counts too.
    _PROTOCOLS = frozenset(fsspec.available_protocols()) | frozenset(registry)
    return _PROTOCOLS


def _url(value: Any, field_name: str, *, need_protocol: bool = False) -> str:
    """A URL fsspec can open: a NUL, or a protocol fsspec does not know, is refused now, not on a node."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(field_name, value, "expected a URL such as 'az://container/path' or 'file:///data/x'")
    value = value.strip()
    if "\0" in value:
        raise SpecError(field_name, value, "a URL cannot hold a NUL character")
    if "://" not in value:
        if need_protocol:
            raise SpecError(field_name, value, "expected a URL with a protocol, such as 'az://container/path/' "
                                               "or 'file:///shared/out/'")
        return value
    # "simplecache::s3://bucket/key": every link of an fsspec chain must be known.
    for link in value.split("::"):
        protocol = link.split("://", 1)[0]
        if protocol not in _PROTOCOLS and protocol not in _known_protocols():
            close = difflib.get_close_matches(protocol.lower(), sorted(_PROTOCOLS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "e.g. az, abfs, s3, gs, file, memory, http, https"
            raise SpecError(field_name, value, f"unknown fsspec protocol {protocol!r}; {hint}")
    return value


@v.checked_keywords
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
        folder = isinstance(self.url, str) and self.url.strip().endswith("/")
        object.__setattr__(self, "path", _relative_path(self.path, "inputs path", folder_ok=folder))
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


@v.checked_keywords
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
        # A destination without a protocol would be a path on whichever node ran the task.
        object.__setattr__(self, "destination", _url(self.destination, f"outputs[{self.pattern!r}]",
                                                     need_protocol=True))
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
