"""Chaos: spot evictions on purpose, to see a job survive them before Azure does it.

``bnb.Pool(..., spot=4, chaos={"preempt_rate": 6})`` or, for a while,
``with pool.chaos(preempt_rate=6): job.wait()``. While chaos is on, each
node of the chosen groups that is *running tasks* is preempted at random
with ``preempt_rate`` evictions per node-minute (a Poisson process, checked
every ``tick`` seconds) through ``pool.preempt`` — the worker dies at once,
its tasks are requeued, the node comes back after
``batchnb.preempt-return-after``. Idle nodes are left alone: evicting them
tests nothing.

Options: ``preempt_rate`` (evictions per busy node-minute, > 0),
``groups`` (default ``("spot",)``), ``seed`` (for a repeatable run),
``max_preemptions`` (stop after this many: per ``with pool.chaos(...)``,
each of which counts afresh), ``tick`` (seconds, default 0.1). Groups the
backend cannot preempt are refused: only spot nodes are preempted, on a
local pool as on Azure (``Backend.preemptible_groups``).

>>> ChaosOptions.from_value({"preempt_rate": 6, "seed": 1}).preempt_rate
6.0
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass

from ..engine.extension import PoolExtension
from ..errors import BatchError, SpecError
from ..states import NODE_GROUPS

log = logging.getLogger("batchnb.chaos")

_KEYS = ("preempt_rate", "groups", "seed", "max_preemptions", "tick")


@dataclass(frozen=True)
class ChaosOptions:
    """Validated chaos settings.

    >>> ChaosOptions(preempt_rate=0)
    Traceback (most recent call last):
    ...
    batchnb.SpecError: chaos.preempt_rate: 0 is invalid: expected a positive number of evictions per busy node-minute
    """

    preempt_rate: float
    groups: tuple = ("spot",)
    seed: int | None = None
    max_preemptions: int | None = None
    tick: float = 0.1

    def __post_init__(self):
        rate = self.preempt_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise SpecError("chaos.preempt_rate", rate, "expected a positive number of evictions per busy node-minute")
        object.__setattr__(self, "preempt_rate", float(rate))
        groups = (self.groups,) if isinstance(self.groups, str) else tuple(self.groups or ())
        if not groups or any(g not in NODE_GROUPS for g in groups):
            raise SpecError("chaos.groups", self.groups, "expected 'spot', 'dedicated' or both")
        object.__setattr__(self, "groups", groups)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise SpecError("chaos.seed", self.seed, "expected an int")
        mp = self.max_preemptions
        if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or mp < 1):
            raise SpecError("chaos.max_preemptions", mp, "expected a whole number of 1 or more")
        if isinstance(self.tick, bool) or not isinstance(self.tick, (int, float)) or not 0 < self.tick <= 60:
            raise SpecError("chaos.tick", self.tick, "expected seconds between 0 and 60")

    def check_backend(self, backend) -> None:
        """SpecError naming the first of ``groups`` that ``backend`` (a class or instance) cannot preempt.

        >>> from batchnb.backends.azure import AzureBackend
        >>> ChaosOptions(1, groups="dedicated").check_backend(AzureBackend)
        Traceback (most recent call last):
        ...
        batchnb.SpecError: chaos.groups: ('dedicated',) is invalid: backend 'azure' cannot preempt 'dedicated' nodes; it preempts: spot
        """
        can = preemptible_groups(backend)
        for group in self.groups:
            if group not in can:
                raise SpecError("chaos.groups", self.groups,
                                f"backend {backend.name!r} cannot preempt {group!r} nodes; "
                                f"it preempts: {', '.join(can) or 'none'}")

    @classmethod
    def from_value(cls, value) -> "ChaosOptions | None":
        if value is None or isinstance(value, ChaosOptions):
            return value
        if not isinstance(value, dict):
            raise SpecError("chaos", value, "expected a dict such as {'preempt_rate': 6}")
        unknown = sorted(set(value) - set(_KEYS))
        if unknown:
            raise SpecError("chaos", value, f"unknown option {unknown[0]!r}; known: {', '.join(_KEYS)}")
        if "preempt_rate" not in value:
            raise SpecError("chaos", value, "preempt_rate is required")
        return cls(**value)


def preemptible_groups(backend) -> tuple:
    """The node groups ``backend`` can preempt: its ``preemptible_groups`` (spot only, as on Azure,
    unless a backend says otherwise), none if it cannot preempt."""
    if not getattr(backend, "can_preempt", False):
        return ()
    return tuple(getattr(backend, "preemptible_groups", None) or ())


class ChaosExtension(PoolExtension):
    """Preempts busy nodes at random while chaos is on (a thread of its own, as evictions come from outside).

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=0, spot=2) as pool:
    ...     job = pool.job("under-fire", max_task_retries=0)
    ...     t = job.add_task("t1", "sleep 1.5")
    ...     with pool.chaos(preempt_rate=600, max_preemptions=1, seed=1):
    ...         print(job.wait())
    ...     print(len(pool.extension(ChaosExtension).preemptions), [a["state"] for a in t.attempts])
    job under-fire: all_tasks_complete in ...s (1 succeeded)
    1 ['requeued', 'succeeded']
    """

    def __init__(self, engine):
        super().__init__(engine)
        self.options: ChaosOptions | None = ChaosOptions.from_value(engine.chaos_options)
        self.preemptions: list[tuple[float, str]] = []
        # Preemptions under the current options (max_preemptions counts these), and which
        # options those are: a preemption in flight when the options change counts for neither.
        self._count = 0
        self._generation = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.options is not None:
            self.set(self.options)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def set(self, options) -> None:
        """Turn chaos on with these options (a dict or ChaosOptions), or off with None."""
        options = ChaosOptions.from_value(options)
        if options is not None and not self.engine.backend.can_preempt:
            raise BatchError(f"backend {self.engine.backend.name!r} cannot preempt nodes, so chaos cannot either")
        if options is not None:
            options.check_backend(self.engine.backend)
        self._apply(options, 0)

    def _apply(self, options, count: int) -> None:
        with self._lock:
            self.options, self._count = options, count
            self._generation += 1
            if options is not None and self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"batchnb-chaos-{self.engine.name}",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        rng, seeded = random.Random(), None
        while not self._stop.is_set():
            with self._lock:
                opts, generation = self.options, self._generation
            if opts is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if opts.seed != seeded:
                rng, seeded = random.Random(opts.seed), opts.seed
            if self._stop.wait(opts.tick):
                return
            p = 1.0 - math.exp(-opts.preempt_rate * opts.tick / 60.0)
            try:
                busy = [n.id for n in self.engine.nodes() if n.group in opts.groups and n.state == "running"]
            except Exception:  # noqa: BLE001 - the pool is closing
                return
            for node_id in busy:
                if self._stop.is_set() or not self._may_preempt(opts, generation):
                    break       # the limit is checked per node: several may be busy in one tick
                if rng.random() >= p:
                    continue
                try:
                    self.engine.preempt(node_id)
                except Exception as exc:  # noqa: BLE001 - chaos must not take the pool down
                    log.debug("chaos could not preempt %s: %s", node_id, exc)
                    continue
                with self._lock:
                    self.preemptions.append((time.time(), node_id))
                    if self._generation == generation:
                        self._count += 1
                log.info("chaos: preempted %s", node_id)

    def _may_preempt(self, opts: ChaosOptions, generation: int) -> bool:
        with self._lock:
            return self._generation == generation and (opts.max_preemptions is None
                                                       or self._count < opts.max_preemptions)


class chaos_context:
    """``with pool.chaos(preempt_rate=...):`` — chaos on inside (its ``max_preemptions`` counted
    from zero), back to what it was after (with the count it had)."""

    def __init__(self, ext: ChaosExtension, options):
        self.ext = ext
        with ext._lock:
            self.before = (ext.options, ext._count)
        ext.set(options)

    def __enter__(self):
        return self.ext

    def __exit__(self, *exc):
        self.ext._apply(*self.before)
