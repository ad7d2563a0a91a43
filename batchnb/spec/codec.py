"""JSON/YAML forms of the specs: what the ledger stores and job files hold.

Job files use the Python API's own names (``id``, ``command``, ``inputs``,
``depends_on``...), so a user who knows ``job.add_task`` can write one.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Mapping

from . import model as s
from ..errors import SpecError

# Which fields hold nested specs: name -> (class, many?)
_NESTED: dict[type, dict[str, tuple[type, bool]]] = {
    s.TaskSpec: {"inputs": (s.ResourceFile, True), "outputs": (s.OutputFile, True), "retry": (s.Retry, False),
                 "multi_instance": (s.MultiInstance, False)},
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
    def opts(d):
        return s.ExitOptions(job_action=d.get("job_action", "none"), dependency_action=d.get("dependency_action"))
    mapping: dict[Any, Any] = {}
    try:
        for item in data.get("codes", ()):
            mapping[int(item["code"])] = opts(item)
        for item in data.get("ranges", ()):
            mapping[(int(item["start"]), int(item["end"]))] = opts(item)
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError("exit_conditions", dict(data), "codes need {code: N, ...} and ranges "
                        f"{{start: N, end: M, ...}} with whole numbers ({type(exc).__name__}: {exc})") from None
    for name in ("default", "pre_processing_error", "file_upload_error"):
        if data.get(name) is not None:
            mapping[name] = opts(data[name])
    return s.ExitConditions.from_mapping(mapping)


def to_dict(obj: Any, *, keep_defaults: bool = False) -> Any:
    """The JSON-ready form of a spec; fields equal to their default are left out."""
    if isinstance(obj, s.ExitConditions):
        return _exit_conditions_to_dict(obj)
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


def from_dict(cls: type, data: Mapping) -> Any:
    """Build spec ``cls`` from its JSON form; unknown keys are a SpecError naming them."""
    if not isinstance(data, Mapping):
        raise SpecError(cls.__name__, data, "expected a mapping")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{cls.__name__} field", unknown[0], f"unknown; known fields are {', '.join(sorted(names))}")
    missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING
               and f.default_factory is MISSING]
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
        kwargs[name] = tuple(_one(sub, x) for x in value) if many else _one(sub, value)
    if cls is s.TaskSpec:
        if isinstance(kwargs.get("command"), list):
            kwargs["command"] = tuple(kwargs["command"])
        if isinstance(kwargs.get("exit_conditions"), Mapping):
            ec = kwargs["exit_conditions"]
            kwargs["exit_conditions"] = _exit_conditions_from_dict(ec) if _is_stored_exit_conditions(ec) else \
                {_exit_key(k): v for k, v in ec.items()}
        if isinstance(kwargs.get("python"), Mapping):
            p = kwargs["python"]
            kwargs["python"] = s.PythonCall(p["name"], base64.b64decode(p["payload"]), p.get("args_digest", ""))
    return cls(**kwargs)


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
    return from_dict(cls, value)


def loads(text: str) -> s.JobSpec:
    import yaml
    if text.lstrip().startswith("{"):
        # JSON first: YAML 1.1 reads JSON numbers such as 1e-05 as strings and
        # \ud83d-style escapes as lone surrogates.
        try:
            return job_from_data(json.loads(text))
        except ValueError as exc:
            if isinstance(exc, SpecError):
                raise
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError("job file", text[:80], f"not valid YAML or JSON: {exc}") from None
    return job_from_data(data)


def job_from_data(data: Any) -> s.JobSpec:
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
    return s.JobSpec(**{**{f.name: getattr(job, f.name) for f in fields(job)},
                        "tasks": tuple(from_dict(s.TaskSpec, t) for t in tasks)})


def load(path) -> s.JobSpec:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise SpecError("job file", path, f"cannot be read: {exc.strerror}") from None
    return loads(text)


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
