"""How long and how often a transfer that cannot reach its store tries again.

A pure policy (no I/O, no clock of its own), so that its schedule and its
bound on time are tested without a store; :class:`~batchnb.staging.storage.Transfers`
applies it. The settings are ``batchnb.staging-retry-*`` in ``dask.config``,
read where the transfer runs (on the node).

>>> p = RetryPolicy(retry_for=10, delay=0.5, backoff=2.0, max_delay=4, jitter=0)
>>> p.schedule()
[0.5, 1.0, 2.0, 4.0, 2.5]
>>> sum(p.schedule())
10.0
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .. import _config
from ..errors import SpecError
from ..spec import validate as v

# The settings behind each field, for from_config and for the messages of bad values.
SETTINGS = {"retry_for": "staging-retry-for", "delay": "staging-retry-delay", "backoff": "staging-retry-backoff",
            "max_delay": "staging-retry-max-delay", "jitter": "staging-retry-jitter"}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one transfer through a storage outage: a time window, backoff, capped sleeps.

    After the first failure the transfer tries again for ``retry_for``
    seconds: the first sleep is ``delay``, each next one ``backoff`` times
    longer, none longer than ``max_delay``, and each shortened by up to
    ``jitter`` (a fraction) so that the transfers of many tasks do not knock
    together. The last sleep is cut so that the last try starts at the end of
    the window, never after it: a transfer gives up at most ``retry_for``
    seconds after its first failure, plus the time its last try takes.

    >>> RetryPolicy(retry_for=3, delay=1, backoff=2, max_delay=10, jitter=0).schedule()
    [1.0, 2.0]
    """

    retry_for: float = 60.0
    delay: float = 0.5
    backoff: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.2

    def __post_init__(self):
        def name(attr):
            return f"batchnb.{SETTINGS[attr]}"
        for attr in ("retry_for", "delay", "max_delay"):
            object.__setattr__(self, attr, v.duration(getattr(self, attr), name(attr), allow_none=False))
        object.__setattr__(self, "backoff", v.number(self.backoff, name("backoff"), minimum=1.0))
        jitter = v.number(self.jitter, name("jitter"), minimum=0.0)
        if jitter >= 1:
            raise SpecError(name("jitter"), self.jitter, "must be a fraction below 1")
        object.__setattr__(self, "jitter", jitter)
        # Sleeps of 0 would hammer a store that is down for the whole window.
        if self.retry_for > 0 and (self.delay <= 0 or self.max_delay <= 0):
            field = "delay" if self.delay <= 0 else "max_delay"
            raise SpecError(name(field), getattr(self, field), "must be above 0 when retries are on; "
                            "set batchnb.staging-retry-for to 0 to turn them off")

    @classmethod
    def from_config(cls) -> "RetryPolicy":
        """The policy of ``batchnb.staging-retry-*`` in dask.config, as this process sees it."""
        return cls(**{attr: _config.get(key) for attr, key in SETTINGS.items()})

    def sleep_before(self, tries: int, waited: float, rng: Callable[[], float] = random.random) -> float | None:
        """Seconds to sleep before the next try, or None to give up.

        ``tries`` failed so far (1 after the first failure); ``waited``
        seconds have passed since the first failure.
        """
        remaining = self.retry_for - waited
        if remaining <= 1e-9:   # what sums of float sleeps leave of a spent window
            return None
        # The exponent is capped: 2.0**1025 overflows, and the cap has long applied by then.
        base = min(self.max_delay, self.delay * self.backoff ** min(max(0, tries - 1), 64))
        return min(remaining, base * (1 - self.jitter * rng()))

    def schedule(self, rng: Callable[[], float] = random.random) -> list[float]:
        """Every sleep through an outage longer than the window, when tries take no time."""
        sleeps: list[float] = []
        waited = 0.0
        while (sleep := self.sleep_before(len(sleeps) + 1, waited, rng)) is not None:
            sleeps.append(sleep)
            waited += sleep
        return sleeps
