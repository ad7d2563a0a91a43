"""The dependency graph of one job: checks on add, and who waits on whom.

Ids are unique case-insensitively (Azure Batch's rule), so the graph keys
on ``id.lower()`` and keeps the id as given for display. A dependency must
name a task already in the job or in the same bulk add; the add that would
close a cycle is refused with the ids on the cycle. Pure: no Dask, no I/O.

>>> g = DepGraph()
>>> g.add([("a", ()), ("b", ("a",))])
>>> g.dependents["a"]
['b']

A sparse graph (the dispatcher's) holds a task with no dependencies only once
another depends on it: a million-task map adds nothing to it.

>>> s = DepGraph(sparse=True)
>>> s.add([("a", ()), ("b", ("a",))])
>>> "a" in s.deps, s.dependents["a"]
(False, ['b'])
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from ..errors import SpecError
from ..spec.deps import DependsOn


class DepGraph:
    def __init__(self, sparse: bool = False):
        self.sparse = sparse
        self.deps: dict[str, tuple[str, ...]] = {}       # key -> keys it depends on
        self.dependents: dict[str, list[str]] = {}       # key -> keys that depend on it
        self.names: dict[str, str] = {}                  # key -> id as given

    def __contains__(self, task_id: str) -> bool:
        return task_id.lower() in self.deps or task_id.lower() in self.dependents

    def __len__(self) -> int:
        return len(self.deps)

    def check(self, items: Sequence[tuple[str, Iterable[str]]], replacing: Iterable[str] = (),
              exists: Callable[[str], bool] | None = None) -> None:
        """Raise SpecError if adding ``items`` (id, depends_on) would break the graph.

        ``exists(key)``: whether the job has a task the graph does not hold (one with no
        dependencies and no dependents is kept out of it: a million-task map adds nothing here)."""
        replacing = {r.lower() for r in replacing}
        batch: dict[str, str] = {}
        for task_id, _ in items:
            key = task_id.lower()
            if key in batch:
                raise SpecError("task id", task_id,
                                f"appears twice in this add (as {batch[key]!r} too); ids are unique ignoring case")
            if key in self.deps and key not in replacing:
                raise SpecError("task id", task_id, f"the job already has a task {self.names[key]!r}")
            batch[key] = task_id
        # A few missing ids per task and a count: a TaskIdRange of millions is never listed.
        unknown: dict[str, list[str]] = {}
        missing: dict[str, int] = {}
        for task_id, deps in items:
            for dep in deps:
                key = dep.lower()
                if key not in self.deps and key not in batch and key not in self.dependents \
                        and not (exists and exists(key)):
                    missing[task_id] = missing.get(task_id, 0) + 1
                    if missing[task_id] <= 5:
                        unknown.setdefault(task_id, []).append(dep)
        if unknown:
            first = next(iter(unknown))
            def ids(t):
                more = missing[t] - len(unknown[t])
                return ", ".join(unknown[t]) + (f" and {more} more" if more else "")
            listing = "; ".join(f"{t} -> {ids(t)}" for t in list(unknown)[:5])
            if len(unknown) > 5:
                listing += f"; and {len(unknown) - 5} more tasks"
            raise SpecError("depends_on", unknown[first],
                            f"task {first!r} names task ids that are not in the job ({listing}); "
                            "add the tasks it depends on first, or in the same add_tasks call")
        # Only a task with dependencies can be on a cycle: a map of a million adds nothing to walk.
        cycle = self._find_cycle({t.lower(): deps.lowered() if isinstance(deps, DependsOn) else
                                  tuple(d.lower() for d in deps) for t, deps in items if deps},
                                 through_existing=bool(replacing))
        if cycle:
            names = [batch.get(k) or self.names.get(k, k) for k in cycle]
            raise SpecError("depends_on", names, f"these tasks would form a cycle (each depends on the next): {' -> '.join(names)}")

    def _find_cycle(self, new: dict[str, tuple[str, ...]], through_existing: bool) -> list[str] | None:
        """A cycle through the new edges, iteratively.

        Existing tasks never depend on new ones, so a cycle can only run
        through existing tasks when one of them is being replaced; otherwise
        the walk stays among the new tasks and an add costs its own size, not
        the job's.
        """
        def deps_of(key):
            return new[key] if key in new else self.deps.get(key, ())
        WHITE, GREY, BLACK = 0, 1, 2
        colour: dict[str, int] = {}
        for root in new:
            if colour.get(root, WHITE) != WHITE:
                continue
            stack = [(root, iter(deps_of(root)))]
            path = [root]
            colour[root] = GREY
            while stack:
                key, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    colour[key] = BLACK
                    stack.pop()
                    path.pop()
                    continue
                c = colour.get(nxt, WHITE)
                if c == GREY:
                    return path[path.index(nxt):] + [nxt]
                if c == WHITE and (nxt in new or (through_existing and nxt in self.deps)):
                    colour[nxt] = GREY
                    stack.append((nxt, iter(deps_of(nxt))))
                    path.append(nxt)
        return None

    def add(self, items: Sequence[tuple[str, Iterable[str]]], replacing: Iterable[str] = (),
            exists: Callable[[str], bool] | None = None) -> None:
        """Check, then add; ``replacing`` ids drop their old edges first."""
        items = [(t, d if isinstance(d, DependsOn) else tuple(d)) for t, d in items]
        self.check(items, replacing, exists)
        for r in replacing:
            key = r.lower()
            for dep in self.deps.pop(key, ()):
                self.dependents.get(dep, []).remove(key)
        for task_id, deps in items:
            key = task_id.lower()
            if self.sparse and not deps:
                continue
            self.names[key] = task_id
            # A range stays a range here too: a task on TaskIdRange(1, 10**6) holds two numbers.
            self.deps[key] = deps.lowered() if isinstance(deps, DependsOn) else tuple(d.lower() for d in deps)
            if not self.sparse:
                self.dependents.setdefault(key, [])
            for dep in self.deps[key]:
                self.dependents.setdefault(dep, []).append(key)

    def downstream(self, key: str) -> list[str]:
        """Every task that depends on ``key``, directly or not, breadth first."""
        seen: dict[str, None] = {}
        frontier = list(self.dependents.get(key, ()))
        while frontier:
            nxt = []
            for k in frontier:
                if k not in seen:
                    seen[k] = None
                    nxt.extend(self.dependents.get(k, ()))
            frontier = nxt
        return list(seen)
