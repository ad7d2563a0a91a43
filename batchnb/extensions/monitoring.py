"""The pool's monitoring surface: ``metrics_url``, ``alert`` and ``alerts``.

:class:`~batchnb.pool.Pool` inherits these; they ask the pool's engine handle
(``self._engine``) for its metrics and alerts extensions, so the pool module
stays small and the work stays where the engine runs.
"""

from __future__ import annotations

from typing import Any, Callable

from ..alerts import Rule
from ..errors import BatchError
from .alerts import AlertsExtension
from .metrics import MetricsExtension


class PoolMonitoring:
    """Metrics, alerts (mixed into :class:`~batchnb.pool.Pool`)."""

    _engine: Any

    @property
    def metrics_url(self) -> str:
        """The URL of this pool's Prometheus metrics (``batchnb_*`` families, text format).

        Served by the engine on 127.0.0.1 (``batchnb.metrics-port``, 0 picks a
        free port), started the first time this is read: the Dask dashboard's
        ``/metrics`` is the scheduler process's, which does not see the engine.

        >>> import batchnb as bnb, urllib.request
        >>> with bnb.Pool("doc-metrics", dedicated=1) as pool:
        ...     text = urllib.request.urlopen(pool.metrics_url).read().decode()
        >>> 'batchnb_nodes{group="dedicated",pool="doc-metrics",state="idle"} 1.0' in text
        True
        """
        return self._monitor(MetricsExtension).serve()

    def alert(self, name: str, rule: Rule, action: Callable[[dict], Any] | str = "log") -> None:
        """Watch ``rule`` (from :mod:`batchnb.alerts`) and run ``action`` when it fires and resolves.

        ``action``: a callable given the record (a dict: pool, alert, rule,
        state firing | resolved, time, detail), an http(s) URL that gets the
        record as a JSON POST, or ``"log"`` (logger ``batchnb.alerts``). The
        rule is kept in the ledger: the pool made again with this name gets it
        back. An alert of the same name is replaced.

        >>> import batchnb as bnb
        >>> with bnb.Pool("doc-alerts", dedicated=1) as pool:
        ...     pool.alert("stuck", bnb.alerts.no_progress(for_="10m"), action="log")
        ...     print([(a["name"], a["state"]) for a in pool.alerts()])
        [('stuck', 'ok')]
        """
        self._monitor(AlertsExtension).add(name, rule, action)

    def alerts(self) -> list[dict]:
        """The pool's alerts: name, rule, action, ``state`` (ok | firing), ``since`` (its last change), detail."""
        return self._monitor(AlertsExtension).listing()

    def _monitor(self, cls):
        ext = self._engine.extension(cls)
        if ext is None:   # a detached pool's client: its engine, and these, run in the agent
            raise BatchError(f"pool {getattr(self, 'name', '?')!r} runs its engine elsewhere (detached); "
                             "its metrics and alerts are not served through this client yet")
        return ext
