"""Task ids held compactly: ``f"{prefix}{n}"`` for consecutive ``n`` is one run.

What ``job.map``, ``job.sweep`` and ``job.add_tasks`` return must not cost the
driver an object per task: a million ids ``c0 .. c999999`` are one run of three
numbers, and the handles are made when asked for. An id that does not continue
a run (any other name) starts a run of its own, so any ids can be held.

>>> ids = TaskIds()
>>> for i in [*(f"c{n}" for n in range(5)), "odd", "c007", "c5"]:
...     ids.append(i)
>>> len(ids), ids.runs, ids[3], ids[-2], list(ids[4:7])
(8, 4, 'c3', 'c007', ['c4', 'odd', 'c007'])
>>> TaskIds.counted("noop-", 10, 1_000_000)[999_999]
'noop-1000009'
>>> TaskIds.counted("noop-", 0, 1_000_000)[500:-2]
TaskIds(999498 ids in 1 runs)
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence

_NUMBERED = re.compile(r"(.*?)(0|[1-9][0-9]*)$", re.S)


class TaskIds(Sequence):
    """A sequence of task ids stored as runs ``(prefix, first number, count)``; a name that is
    not ``prefix`` + a number (without leading zeros) is a run of one with no number."""

    __slots__ = ("_prefix", "_start", "_first", "_n")

    def __init__(self) -> None:
        self._prefix: list[str] = []
        self._start: list[int | None] = []
        self._first: list[int] = []       # the position of each run's first id
        self._n = 0

    @classmethod
    def counted(cls, prefix: str, start: int, count: int) -> TaskIds:
        """``prefix{start}`` .. ``prefix{start + count - 1}``: one run."""
        ids = cls()
        if count > 0:
            ids._prefix.append(prefix)
            ids._start.append(start)
            ids._first.append(0)
            ids._n = count
        return ids

    @property
    def runs(self) -> int:
        return len(self._prefix)

    def append(self, task_id: str) -> None:
        m = _NUMBERED.match(task_id)
        if m is not None and self._prefix:
            prefix, number = m.group(1), int(m.group(2))
            k = len(self._prefix) - 1
            if self._start[k] is not None and self._prefix[k] == prefix \
                    and self._start[k] + (self._n - self._first[k]) == number:
                self._n += 1
                return
        self._prefix.append(m.group(1) if m else task_id)
        self._start.append(int(m.group(2)) if m else None)
        self._first.append(self._n)
        self._n += 1

    def extend(self, task_ids) -> None:
        for task_id in task_ids:
            self.append(task_id)

    def __len__(self) -> int:
        return self._n

    def _at(self, i: int) -> str:
        k = bisect.bisect_right(self._first, i) - 1
        start = self._start[k]
        return self._prefix[k] if start is None else f"{self._prefix[k]}{start + i - self._first[k]}"

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if step == 1 and self.runs == 1 and self._start[0] is not None:     # a map's: still one run
                return TaskIds.counted(self._prefix[0], self._start[0] + start, max(0, stop - start))
            out = TaskIds()
            out.extend(self._at(j) for j in range(start, stop, step))
            return out
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("task index out of range")
        return self._at(i)

    def __iter__(self) -> Iterator[str]:
        ends = self._first[1:] + [self._n]
        for prefix, start, first, end in zip(self._prefix, self._start, self._first, ends):
            if start is None:
                yield prefix
            else:
                for n in range(start, start + end - first):
                    yield f"{prefix}{n}"

    def __repr__(self) -> str:
        return f"TaskIds({self._n} ids in {self.runs} runs)"
