"""``job.sweep``: a command template over ranges as ONE array spec (Azure Batch's parametric sweep).

The Azure CLI extension's ``parametricSweep`` task factory makes a task per value of its
``parameterSets`` (``start``/``end``/``step``, nested when there are several) from a
``commandLine`` with ``{0}``, ``{1}`` placeholders. Here the template, the id template,
the ranges and the task options are one row of the ledger's ``task_arrays`` (as a
``job.map``'s call is); each task's row is a reference ``{"array", "index"}`` and its
:class:`~batchnb.spec.TaskSpec` is made when it is dispatched. A million command tasks
then add in seconds, with no spec built per task.

Placeholders are :meth:`str.format` fields: ``{0}`` is the first range's value, ``{1:04d}``
the second's zero-padded; ``{{`` is a literal brace. Several ranges nest as
:func:`itertools.product` does (the last varies fastest), as Azure's parameter sets do.

>>> s = Sweep("render --frame {0} --tile {1}", (range(3), range(2)), "f{0}-t{1}", {})
>>> s.n, s.task_id(3), s.command(3)
(6, 'f1-t1', 'render --frame 1 --tile 1')
>>> Sweep("echo {2}", (range(3),), None, {})
Traceback (most recent call last):
...
batchnb.SpecError: command: 'echo {2}' is invalid: names placeholder {2}, but the sweep has 1 range: use {0}
"""

from __future__ import annotations

import json
import string
import uuid

from .. import spec as specs
from ..errors import SpecError
from . import arrays


def _fields(text: str, field: str, dims: int) -> set[int]:
    """The placeholder numbers ``text`` uses; a SpecError naming ``field`` for any other field."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise SpecError(field, text, f"is not a valid template ({exc}); write a literal brace as {{{{ or }}}}") \
            from None
    used = set()
    for _, name, _, _ in parsed:
        if name is None:
            continue
        head = name.split(".")[0].split("[")[0]
        if not head.isdigit():
            raise SpecError(field, text, f"has placeholder {{{name}}}; placeholders are numbered: {{0}} is "
                            "the first range's value, {1} the second's")
        if int(head) >= dims:
            raise SpecError(field, text, f"names placeholder {{{head}}}, but the sweep has {dims} "
                            f"range{'s' if dims != 1 else ''}: use {{0}}" + (f"..{{{dims - 1}}}" if dims > 1 else ""))
        used.add(int(head))
    return used


class Sweep:
    """A validated sweep: the template, its ranges and options; the task at a flat index."""

    def __init__(self, command: str, ranges: tuple, task_id: str | None, opts: dict):
        if not isinstance(command, str) or not command.strip():
            raise SpecError("command", command, "expected a command line template (a non-empty str), "
                            "e.g. 'render --frame {0}'")
        if not ranges:
            raise SpecError("ranges", ranges, "expected at least one range, e.g. job.sweep(cmd, range(100))")
        for k, r in enumerate(ranges):
            if not isinstance(r, range):
                raise SpecError(f"ranges[{k}]", r, "expected a range (Azure's parameter set start/end/step: "
                                "range(start, end + 1, step)); for other values use job.add_tasks")
        for k in ("depends_on", "priority", "multi_instance", "python", "task_id"):
            if opts.get(k):     # its tasks wait in the ledger alone, paged in in the order they were added
                raise SpecError(k, opts[k], "is not a sweep's option (its tasks run in order, on one node each, "
                                "and depend on none); use job.add_tasks for such tasks")
        self.ranges = tuple(ranges)
        self.n = 1
        for r in self.ranges:
            self.n *= len(r)
        _fields(command, "command", len(ranges))
        id_template = task_id if task_id is not None else "sweep-" + "-".join(f"{{{k}}}" for k in range(len(ranges)))
        if not isinstance(id_template, str):
            raise SpecError("id", task_id, "expected a task id template (a str), e.g. 'frame-{0}'")
        used = _fields(id_template, "id", len(ranges))
        varying = {k for k, r in enumerate(self.ranges) if len(r) > 1}
        if varying - used:
            raise SpecError("id", id_template, f"leaves out placeholder {{{min(varying - used)}}}: the tasks' "
                            "ids would repeat; name every range that has more than one value")
        self.template, self.id_template = command, id_template
        self.opts = opts
        if self.n:      # the first and last tasks checked as any task is: a bad option, id or format fails now
            for i in {0, self.n - 1}:
                made = {}
                for field, text in (("id", id_template), ("command", command)):
                    try:
                        made[field] = text.format(*self.params(i))
                    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
                        raise SpecError(field, text, f"cannot be formatted with {self.params(i)} ({exc})") from None
                try:
                    specs.TaskSpec(made["id"], made["command"], **opts)
                except SpecError as exc:
                    if exc.field != "task id":
                        raise
                    raise SpecError("id", id_template, f"makes task id {made['id']!r}: {exc.problem}") from None
        template = specs.TaskSpec("sweep-template", command, **opts)
        self.template_opts = {k: v for k, v in specs.to_dict(template).items() if k not in ("id", "command")}

    def params(self, index: int) -> tuple:
        out = []
        for r in reversed(self.ranges):
            index, k = divmod(index, len(r))
            out.append(r[k])
        return tuple(reversed(out))

    def task_id(self, index: int) -> str:
        return self.id_template.format(*self.params(index))

    def command(self, index: int) -> str:
        return self.template.format(*self.params(index))

    def specs(self):
        """Each task's TaskSpec, made one at a time (for a pool whose agent adds tasks one by one)."""
        for i in range(self.n):
            yield specs.TaskSpec(self.task_id(i), self.command(i), **self.opts)

    def record(self) -> str:
        """The array's JSON for the ledger (read back by :class:`~batchnb.engine.arrays.Arrays`)."""
        return json.dumps({"v": 1, "kind": "command", "name": self.template, "id": self.id_template,
                           "call": "", "kw": "", "template": self.template_opts, "ids": [self.id_template, 0],
                           "args": [{"range": [r.start, r.stop, r.step]} for r in self.ranges],
                           "chunk": arrays.CHUNK, "chunks": {}, "n": self.n})


def add_sweep(disp, job_key: str, sweep: Sweep, replace: bool, ids) -> None:
    """Record the sweep's tasks, a chunk per transaction, appending their ids to ``ids``."""
    array_id = "s" + uuid.uuid4().hex[:15]
    record = sweep.record()
    size = arrays.CHUNK
    for first in range(0, sweep.n, size):
        chunk = [sweep.task_id(i) for i in range(first, min(sweep.n, first + size))]
        disp.call(disp.add_array_chunk, job_key, array_id, record, chunk, first, replace, timeout=None)
        ids.extend(chunk)
