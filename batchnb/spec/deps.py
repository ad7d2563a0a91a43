"""A task's dependencies: ids and Azure's ``taskIdRanges``, kept as ranges.

``TaskIdRange(1, 2_000_000)`` is two numbers wherever it goes (the spec, its
JSON in the ledger and in job files, the dependency graph); its ids exist
only while something walks them. :class:`DependsOn` is what
``TaskSpec.depends_on`` holds: a sequence of ids, ranges included, that
compares equal to the tuple of the same ids.

>>> deps = DependsOn.of(["a", "2", TaskIdRange(1, 3), "5"])
>>> list(deps), len(deps), "3" in deps
(['a', '1', '2', '3', '5'], 5, True)
>>> deps
('a', TaskIdRange(1, 3), '5')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

from . import validate as v
from ..errors import SpecError


@v.checked_keywords
class TaskIdRange:
    """Azure's ``taskIdRanges``: the numeric ids ``start`` to ``end``, inclusive.

    It stays a range in specs, job files and the ledger, however many ids it spans.

    >>> list(TaskIdRange(1, 3))
    ['1', '2', '3']
    """

    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int):
        self.start = v.integer(start, "TaskIdRange.start", minimum=0)
        self.end = v.integer(end, "TaskIdRange.end", minimum=0)
        if self.end < self.start:
            raise SpecError("TaskIdRange", (start, end), "end must not be below start")

    def __iter__(self) -> Iterator[str]:
        return (str(i) for i in range(self.start, self.end + 1))

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __contains__(self, task_id: object) -> bool:
        # Only the canonical spelling: "007" is another task than "7", as in Azure.
        return isinstance(task_id, str) and task_id.isdigit() and str(int(task_id)) == task_id \
            and self.start <= int(task_id) <= self.end

    def __eq__(self, other):
        return isinstance(other, TaskIdRange) and (other.start, other.end) == (self.start, self.end)

    def __hash__(self):
        return hash((TaskIdRange, self.start, self.end))

    def __reduce__(self):
        return (TaskIdRange, (self.start, self.end))

    def __repr__(self):
        return f"TaskIdRange({self.start}, {self.end})"


def _range_from(item: Mapping, field: str) -> TaskIdRange:
    if set(item) != {"start", "end"}:
        raise SpecError(field, dict(item), "a range of task ids is {start: N, end: M}, nothing else")
    return TaskIdRange(item["start"], item["end"])


class DependsOn:
    """Task ids and id ranges, in order, without repeats; ranges are never expanded.

    Iterating gives ids (a range's one by one); ``len`` and ``in`` cost the
    number of items, not of ids. Equal to a tuple holding the same ids.
    """

    __slots__ = ("_items", "_ranges", "_lower")

    def __init__(self, items: tuple = ()):
        self._items = tuple(items)
        self._ranges = tuple(i for i in self._items if isinstance(i, TaskIdRange))
        self._lower = None

    @classmethod
    def of(cls, value: Any, field: str = "depends_on") -> "DependsOn":
        """Ids from tasks, ids, ints, TaskIdRanges or ``{start, end}`` mappings."""
        if isinstance(value, DependsOn):
            return value
        if value is None:
            return cls()
        if isinstance(value, (str, int, TaskIdRange)) or hasattr(value, "task_id"):
            value = [value]
        elif isinstance(value, (Mapping, bytes, bytearray)) or not hasattr(value, "__iter__"):
            raise SpecError(field, value, "expected a task, a task id, a TaskIdRange or a list of them")
        items: list = []
        ranges: list[TaskIdRange] = []
        seen: set[str] = set()
        numeric = False            # whether an id so far could fall in a range given later
        for item in value:
            if type(item) is not str and isinstance(item, Mapping):
                item = _range_from(item, field)
            if type(item) is TaskIdRange:
                pieces = [(item.start, item.end)]
                for r in ranges:
                    pieces = [p for lo, hi in pieces for p in ((lo, min(hi, r.start - 1)), (max(lo, r.end + 1), hi))
                              if p[0] <= p[1]]
                new = [TaskIdRange(lo, hi) for lo, hi in pieces]
                if numeric and new:
                    # An id named before a range that holds it comes with that range now.
                    items = [i for i in items if isinstance(i, TaskIdRange) or not any(i in r for r in new)]
                items.extend(new)
                ranges.extend(new)
                continue
            task_id = v.task_id(item, field) if type(item) is str or not hasattr(item, "task_id") else item.task_id
            key = task_id.lower()
            if key in seen or (ranges and task_id.isdigit() and any(task_id in r for r in ranges)):
                continue
            seen.add(key)
            numeric = numeric or task_id.isdigit()
            items.append(task_id)
        return cls(tuple(items))

    @property
    def ids(self) -> tuple:
        return tuple(i for i in self._items if not isinstance(i, TaskIdRange))

    @property
    def ranges(self) -> tuple:
        return self._ranges

    def __iter__(self) -> Iterator[str]:
        for item in self._items:
            if isinstance(item, TaskIdRange):
                yield from item
            else:
                yield item

    def __len__(self) -> int:
        return sum(len(i) if isinstance(i, TaskIdRange) else 1 for i in self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __contains__(self, task_id: object) -> bool:
        if not isinstance(task_id, str):
            return False
        if self._lower is None:
            self._lower = frozenset(i.lower() for i in self.ids)
        return task_id.lower() in self._lower or any(task_id in r for r in self._ranges)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self)[index]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("depends_on index out of range")
        for item in self._items:
            size = len(item) if isinstance(item, TaskIdRange) else 1
            if index < size:
                return str(item.start + index) if isinstance(item, TaskIdRange) else item
            index -= size
        raise IndexError("depends_on index out of range")   # not reached

    def lowered(self) -> "DependsOn":
        """The same dependencies keyed as the graph keys ids (lower case; ranges are digits)."""
        return DependsOn(tuple(i if isinstance(i, TaskIdRange) else i.lower() for i in self._items))

    def items(self) -> tuple:
        """Ids and ranges as held: what is written down."""
        return self._items

    def __eq__(self, other):
        if isinstance(other, DependsOn):
            return self._items == other._items or (len(self) == len(other) and list(self) == list(other))
        if isinstance(other, (tuple, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __hash__(self):
        return hash(self._items)

    def __reduce__(self):
        return (DependsOn, (self._items,))

    def __repr__(self):
        return repr(self._items)


def dependency_ids(value: Any) -> DependsOn:
    """Ids from tasks, ids, ints or TaskIdRanges, in order, without repeats (ranges kept whole)."""
    return DependsOn.of(value)
