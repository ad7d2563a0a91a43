"""JSON/YAML forms of the specs: what the ledger stores and job files hold.

Job files use the Python API's own names (``id``, ``command``, ``inputs``,
``depends_on``...), so a user who knows ``job.add_task`` can write one.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from . import model as s
from . import validate as v
from .deps import DependsOn
from ..errors import SpecError

# Which fields hold nested specs: name -> (class, many?)
_NESTED: dict[type, dict[str, tuple[type, bool]]] = {
    s.TaskSpec: {"inputs": (s.ResourceFile, True), "outputs": (s.OutputFile, True), "retry": (s.Retry, False),
                 "multi_instance": (s.MultiInstance, False), "container": (s.Container, False)},
    s.JobSpec: {"tasks": (s.TaskSpec, True)},
    s.PoolSpec: {"start_task": (s.StartTask, False), "app_packages": (s.AppPackage, True)},
    s.StartTask: {"inputs": (s.ResourceFile, True)},
    s.MultiInstance: {"common_inputs": (s.ResourceFile, True)},
}


def _exit_conditions_to_dict(ec: s.ExitConditions) -> dict:
    out: dict[str, Any] = {}
    if ec.codes:
        out["codes"] = [{"code": c, **to_dict(o)} for c, o in ec.codes]
    if ec.ranges:
        out["ranges"] = [{"start": lo, "end": hi, **to_dict(o)} for (lo, hi), o in ec.ranges]
    for name in ("default", "pre_processing_error", "file_upload_error"):
        if getattr(ec, name) is not None:
            out[name] = to_dict(getattr(ec, name))
    return out


def _exit_conditions_from_dict(data: Mapping) -> s.ExitConditions:
    def opts(d, field):
        if not isinstance(d, Mapping):
            raise SpecError(field, d, "expected {job_action: ..., dependency_action: ...}")
        return s.ExitOptions(job_action=d.get("job_action", "none"), dependency_action=d.get("dependency_action"))
    mapping: dict[Any, Any] = {}
    for kind, keys in (("codes", ("code",)), ("ranges", ("start", "end"))):
        items = data.get(kind) or ()
        if not isinstance(items, (list, tuple)):
            raise SpecError(f"exit_conditions.{kind}", items, "expected a list")
        for i, item in enumerate(items):
            field = f"exit_conditions.{kind}[{i}]"
            if not isinstance(item, Mapping) or not all(k in item for k in keys):
                raise SpecError(field, item, "codes need {code: N, ...} and ranges {start: N, end: M, ...}")
            numbers = tuple(v.integer(item[k], f"{field}.{k}") for k in keys)
            mapping[numbers[0] if kind == "codes" else numbers] = opts(item, field)
    for name in ("default", "pre_processing_error", "file_upload_error"):
        if data.get(name) is not None:
            mapping[name] = opts(data[name], f"exit_conditions.{name}")
    return s.ExitConditions.from_mapping(mapping)


def to_dict(obj: Any, *, keep_defaults: bool = False) -> Any:
    """The JSON-ready form of a spec; fields equal to their default are left out."""
    if isinstance(obj, s.ExitConditions):
        return _exit_conditions_to_dict(obj)
    if isinstance(obj, DependsOn):     # a range is written as two numbers, never as its ids
        return [{"start": x.start, "end": x.end} if isinstance(x, s.TaskIdRange) else x for x in obj.items()]
    if isinstance(obj, s.PythonCall):
        return {"name": obj.name, "args_digest": obj.args_digest,
                "payload": base64.b64encode(obj.payload).decode("ascii")}
    if is_dataclass(obj):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if not keep_defaults and f.name != "id" and _is_default(f, value):
                continue
            if callable(value) and not is_dataclass(value):
                continue  # a callable autoscale policy cannot be written down
            out[f.name] = to_dict(value, keep_defaults=keep_defaults)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(x, keep_defaults=keep_defaults) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(x, keep_defaults=keep_defaults) for k, x in obj.items()}
    return obj


def _is_default(f, value) -> bool:
    from dataclasses import MISSING
    if f.default is not MISSING:
        return value == f.default or (value == () and f.default in ((), None))
    if f.default_factory is not MISSING:
        return value == f.default_factory()
    return False


_FIELD_NAMES: dict[type, tuple[frozenset, tuple]] = {}


def _field_names(cls: type) -> tuple[frozenset, tuple]:
    """A spec class's field names and its required ones, found once: ``dataclasses.fields`` walks
    every field each time, and a million-task add builds a million specs."""
    known = _FIELD_NAMES.get(cls)
    if known is None:
        known = _FIELD_NAMES[cls] = (frozenset(f.name for f in fields(cls)), tuple(
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING))
    return known


def from_dict(cls: type, data: Mapping) -> Any:
    """Build spec ``cls`` from its JSON form; unknown keys are a SpecError naming them."""
    if not isinstance(data, Mapping):
        raise SpecError(cls.__name__, data, "expected a mapping")
    names, required = _field_names(cls)
    unknown = sorted((k for k in data if k not in names), key=str)
    if unknown:
        raise v.unknown_keyword(cls.__name__, unknown[0], data[unknown[0]], names, kind="field")
    missing = [name for name in required if name not in data]
    if missing:
        raise SpecError(f"{cls.__name__} field", missing[0], f"is required (in {dict(data)!r})")
    kwargs = dict(data)
    for name, (sub, many) in _NESTED.get(cls, {}).items():
        if kwargs.get(name) is None:
            continue
        value = kwargs[name]
        if cls is s.TaskSpec and name == "inputs" and isinstance(value, Mapping):
            continue  # {path: url} is accepted by TaskSpec itself
        if cls is s.TaskSpec and name == "outputs" and isinstance(value, Mapping):
            continue
        if cls is s.PoolSpec and name == "start_task" and isinstance(value, (str, list)):
            continue
        if many and not isinstance(value, (list, tuple)):
            raise SpecError(name, value, f"expected a list of {sub.__name__} mappings")
        kwargs[name] = tuple(_one(sub, x) for x in value) if many else _one(sub, value)
    if cls is s.TaskSpec:
        if isinstance(kwargs.get("command"), list):
            kwargs["command"] = tuple(kwargs["command"])
        if isinstance(kwargs.get("exit_conditions"), Mapping):
            ec = kwargs["exit_conditions"]
            kwargs["exit_conditions"] = _exit_conditions_from_dict(ec) if _is_stored_exit_conditions(ec) else \
                {_exit_key(k): v for k, v in ec.items()}
        if isinstance(kwargs.get("python"), Mapping):
            kwargs["python"] = _python_call(kwargs["python"])
    return cls(**kwargs)


def _python_call(p: Mapping) -> s.PythonCall:
    name, payload, digest = p.get("name"), p.get("payload"), p.get("args_digest", "")
    if not isinstance(name, str) or not isinstance(payload, str) or not isinstance(digest, str):
        raise SpecError("python", dict(p), "expected {name, payload (base64), args_digest} as stored in the ledger")
    try:
        return s.PythonCall(name, base64.b64decode(payload, validate=True), digest)
    except ValueError:
        raise SpecError("python.payload", payload[:40], "is not base64") from None


_RANGE_KEY = re.compile(r"^\s*(-?\d+)\s*(?:-|\.\.)\s*(-?\d+)\s*$")


def _exit_key(key: Any) -> Any:
    """JSON keys are strings: ``"3"`` is exit code 3 and ``"10-19"`` or ``"10..19"`` a range."""
    if isinstance(key, str):
        if re.fullmatch(r"\s*-?\d+\s*", key):
            return int(key)
        m = _RANGE_KEY.match(key)
        if m:
            return (int(m.group(1)), int(m.group(2)))
    return key


def _is_stored_exit_conditions(data: Mapping) -> bool:
    return set(data) <= {"codes", "ranges", "default", "pre_processing_error", "file_upload_error"} and (
        "codes" in data or "ranges" in data or any(isinstance(x, Mapping) for x in data.values()))


def _one(cls, value):
    if isinstance(value, cls):
        return value
    if cls is s.StartTask and isinstance(value, (str, list)):
        return cls(value)
    if cls is s.Container and isinstance(value, str):
        return cls(value)     # "container: localhost/app:1" in a job file
    return from_dict(cls, value)


#: Job files past this size are refused before they are read: parsing one would take minutes
#: and gigabytes (YAML), and bulk jobs are better added from Python with job.add_tasks().
MAX_FILE_BYTES = 128 * 2**20


def as_text(data: Any, field: str) -> str:
    """YAML/JSON text from ``str`` or UTF-8 ``bytes`` (a byte-order mark is dropped)."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecError(field, bytes(data[exc.start:exc.start + 8]),
                            f"is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None
    if not isinstance(data, str):
        raise SpecError(field, data, "expected YAML or JSON text")
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(field, data[:40], f"is larger than {MAX_FILE_BYTES // 2**20} MiB")
    return data


def read_text(path: Any, field: str = "job file") -> str:
    """The text of a job file, or a SpecError naming the path: unreadable, binary or too large."""
    try:
        path = os.fspath(path)
        size = os.stat(path).st_size
        if size <= MAX_FILE_BYTES:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)     # a device or a growing file may say 0 bytes
    except TypeError:
        raise SpecError(field, path, "expected a path") from None
    except ValueError:
        raise SpecError(field, path, "a path cannot hold a NUL character") from None
    except OSError as exc:
        raise SpecError(field, path, f"cannot be read: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES:
        raise SpecError(field, path, f"is larger than {MAX_FILE_BYTES // 2**20} MiB")
    return as_text(data, f"{field} {path}")


def parse_text(text: str, field: str = "job file") -> Any:
    """JSON or YAML text -> data, every failure a one-line SpecError."""
    import yaml
    try:
        if text.lstrip().startswith(("{", "[")):
            # JSON first: YAML 1.1 reads JSON numbers such as 1e-05 as strings and
            # \ud83d-style escapes as lone surrogates.
            try:
                return json.loads(text)
            except ValueError:
                pass
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(field, text[:80], f"not valid YAML or JSON: {exc.problem or exc.context}{where}") from None
    except (yaml.YAMLError, ValueError, OverflowError, TypeError) as exc:
        # PyYAML's constructors raise plain ValueErrors, e.g. for a date such as 2024-02-30.
        raise SpecError(field, text[:80], "not valid YAML or JSON: " + " ".join(str(exc).split())) from None
    except RecursionError:
        raise SpecError(field, text[:80], "is nested too deeply to read") from None
    except MemoryError:
        raise SpecError(field, text[:80], "is too large to read into memory") from None


def loads(text: str | bytes) -> s.JobSpec:
    """A JobSpec from the text of a job file (YAML or JSON)."""
    return job_from_data(parse_text(as_text(text, "job file")))


def _within(where: str, exc: SpecError) -> SpecError:
    """``exc`` with the place in the document it came from (a field alone may be in any task)."""
    if type(exc) is not SpecError or str(exc.field).startswith("task "):
        return exc
    return SpecError(f"{where}.{exc.field}", exc.value, exc.problem)


def job_from_data(data: Any) -> s.JobSpec:
    v.document(data, "job file")
    if not isinstance(data, Mapping) or "id" not in data:
        raise SpecError("job file", data, "expected a mapping with at least 'id' (and usually 'tasks')")
    data = dict(data)
    tasks = data.pop("tasks", None) or []
    if not isinstance(tasks, list):
        raise SpecError("tasks", tasks, "expected a list of tasks")
    for i, t in enumerate(tasks):
        if isinstance(t, Mapping) and "python" in t:
            raise SpecError(f"tasks[{i}].python", t.get("id"), "Python callables cannot come from a job file")
    job = from_dict(s.JobSpec, data)
    if job.pool is not None:
        try:
            from_dict(s.PoolSpec, job.pool)     # checked now, not when a pool is made from it
        except SpecError as exc:
            raise _within("pool", exc) from None
    specs = []
    for i, t in enumerate(tasks):
        try:
            specs.append(from_dict(s.TaskSpec, t))
        except SpecError as exc:
            raise _within(f"tasks[{i}]", exc) from None
    return s.JobSpec(**{**{f.name: getattr(job, f.name) for f in fields(job)}, "tasks": tuple(specs)})


def load(path) -> s.JobSpec:
    """A JobSpec from a job file (YAML or JSON)."""
    return loads(read_text(path))


def dumps(spec: s.JobSpec, fmt: str = "yaml") -> str:
    data = to_dict(spec)
    if any(t.python is not None for t in spec.tasks):
        raise SpecError("tasks", [t.id for t in spec.tasks if t.python is not None][:5],
                        "Python callable tasks cannot be written to a job file")
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    import yaml
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
    # PyYAML writes line-break characters such as U+0085 raw with allow_unicode and
    # reads them back as spaces: escape everything when that would change a value.
    if not text.isascii() and yaml.safe_load(text) != data:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    return text


def dump(spec: s.JobSpec, path=None) -> str:
    fmt = "json" if path is not None and os.fspath(path).endswith(".json") else "yaml"
    text = dumps(spec, fmt)
    if path is not None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return text
