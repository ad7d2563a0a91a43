"""A task spec's ledger JSON, fast: what ``json.dumps(to_dict(spec))`` writes, for the plain tasks
a million-task add is made of (a command, its environment, numbers); any other spec goes
through :func:`~batchnb.spec.codec.to_dict` as before.

>>> from batchnb.spec import TaskSpec
>>> task_json(TaskSpec("t1", ["echo", "hi"], env={"A": "1"}, max_wall_clock="1m"))
'{"id": "t1", "command": ["echo", "hi"], "env": {"A": "1"}, "max_wall_clock": 60.0}'
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from dataclasses import MISSING, fields

from .codec import from_dict, to_dict
from ..errors import SpecError
from .model import TaskSpec

_str = encode_basestring_ascii      # what json.dumps writes for a str
_plan: list[tuple[str, object]] | None = None


def _fields() -> list[tuple[str, object]]:
    global _plan
    if _plan is None:
        _plan = [(f.name, f.default if f.default is not MISSING else f.default_factory())
                 for f in fields(TaskSpec) if f.name != "id"]
    return _plan


def task_json(spec: TaskSpec) -> str:
    """``json.dumps(to_dict(spec))``, without the general walk for a plain spec: its text is
    put together here (strings by json's own C encoder), a million times in a large add."""
    out = ['{"id": ', _str(spec.id)]
    for name, default in _fields():
        value = getattr(spec, name)
        if value is default or value is None:
            continue
        kind = type(value)
        if kind is str:
            if value != default:
                out += [', "', name, '": ', _str(value)]
            continue
        if kind is int or kind is float:
            if value != default:
                out += [', "', name, '": ', json.dumps(value)]
            continue
        if kind is bool:
            if value != default:
                return json.dumps(to_dict(spec))
            continue
        if not value and default in ((), None) or (not value and isinstance(default, dict)):
            continue                    # an empty tuple, mapping or dependency list: the default
        if (kind is tuple or kind is list) and all(type(x) is str for x in value):
            out += [', "', name, '": [', ", ".join(map(_str, value)), "]"]      # a command's argv
        elif kind is dict and all(type(k) is str and type(x) is str for k, x in value.items()):
            out += [', "', name, '": {', ", ".join(f"{_str(k)}: {_str(x)}" for k, x in value.items()), "}"]
        else:
            return json.dumps(to_dict(spec))
    out.append("}")
    return "".join(out)


def task_of_stream(data, n: int, added: int) -> TaskSpec:
    """A task's spec from a dict of a stream given to ``job.add_tasks``, a SpecError naming the
    task (and how many went before it)."""
    try:
        return from_dict(TaskSpec, data)
    except SpecError as exc:
        name = data.get("id") if isinstance(data, dict) else None
        raise SpecError(f"task {name!r} (number {n} given) {exc.field}", exc.value,
                        f"{exc.problem}; the {added} tasks before its chunk were added") from None
