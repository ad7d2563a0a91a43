"""Alerts while a pool runs: its rules evaluated every ``batchnb.alert-interval``, actions taken.

The rules are pure (:mod:`batchnb.alerts`); this extension gathers their
:class:`~batchnb.alerts.Facts` from the metrics extension's record and the
dispatcher's tables, on the dispatcher's thread, and acts on each change of
state. Every firing and resolution is a ledger event (kind ``alert``) before
its action runs; every rule set with ``pool.alert`` is one too (kind
``alert_rule``), so a pool made again with the same name and ledger — or a
detached agent that restarts — gets its rules back. A rule whose action was a
Python callable comes back with the action ``"log"`` (a callable cannot be
kept in the ledger): give it again with ``pool.alert`` to replace it.

Actions run off the dispatcher's thread, one at a time: a callable gets the
record (a dict); a URL gets it as a JSON POST (``batchnb.alert-webhook-timeout``;
failures are logged, never raised); ``"log"`` writes a record on the logger
``batchnb.alerts`` (WARNING when firing, INFO when resolved).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from .. import _config
from ..alerts import AlertState, Facts, Rule, rule_from_dict
from ..engine.extension import PoolExtension
from ..errors import SpecError
from ..states import NodeState
from .metrics import MetricsExtension

log = logging.getLogger("batchnb.alerts")


@dataclass(frozen=True, slots=True)
class AlertChanged:
    """An alert of ``pool`` fired (``state`` "firing") or resolved ("resolved"): a bus event for the views."""

    pool: str
    alert: str
    state: str
    time: float
    detail: str | None = None


def check_action(action: Any) -> Any:
    """A callable, an http(s) URL or ``"log"``; anything else is a SpecError naming it."""
    if callable(action) or action == "log":
        return action
    if isinstance(action, str) and action.startswith(("http://", "https://")):
        return action
    raise SpecError("action", action, "expected a callable(record), an http(s):// webhook URL or 'log'")


def _describe(action: Any) -> str:
    return action if isinstance(action, str) else f"callable {getattr(action, '__qualname__', repr(action))}"


class AlertsExtension(PoolExtension):
    """Evaluates the pool's alert rules and runs their actions."""

    def __init__(self, engine):
        super().__init__(engine)
        self.alerts: dict[str, tuple[AlertState, Any]] = {}     # name (lower) -> (state, action)
        self._actions = cf.ThreadPoolExecutor(1, thread_name_prefix=f"batchnb-alerts-{engine.name}")
        self._stopped = False

    def start(self) -> None:
        for row in self.engine.ledger.alert_events(self.engine.name):
            data = row["data"]
            if row["kind"] == "alert_rule":
                action = data.get("action") or "log"
                self.alerts[data["name"].lower()] = (AlertState(data["name"], rule_from_dict(data["rule"]),
                                                                since=row["time"]), action)
        every = _config.seconds("alert-interval")
        self.engine.dispatcher.post(lambda: self.engine.dispatcher.at(time.time() + every, self._tick))

    def stop(self) -> None:
        self._stopped = True
        self._actions.shutdown(wait=False)

    # -- what pool.alert and pool.alerts ask (from the user's thread) -------------------
    def add(self, name: str, rule: Rule, action: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise SpecError("alert name", name, "expected a non-empty string")
        if not isinstance(rule, Rule):
            raise SpecError("rule", rule, "expected a rule from bnb.alerts, e.g. bnb.alerts.failure_rate()")
        action = check_action(action)
        disp = self.engine.dispatcher

        def put():
            now = time.time()
            self.alerts[name.lower()] = (AlertState(name, rule, since=now), action)
            disp.batch.event(now, "alert_rule", data={
                "pool": self.engine.name, "name": name, "rule": rule.to_dict(),
                "action": action if isinstance(action, str) else None})
        disp.call(put, timeout=30.0)

    def listing(self) -> list[dict]:
        def take():
            return [{"name": st.name, "rule": str(st.rule), "action": _describe(action), "state": st.state,
                     "since": st.since, "detail": st.detail} for st, action in self.alerts.values()]
        return self.engine.dispatcher.call(take, timeout=30.0)

    # -- evaluation, on the dispatcher's thread ------------------------------------------
    def _tick(self) -> None:
        if self._stopped or self.engine.closed:
            return
        try:
            if self.alerts:
                self._evaluate(time.time())
        except Exception:  # noqa: BLE001 - alerts must never disturb the dispatcher
            log.exception("batchnb alert evaluation of pool %s failed", self.engine.name)
        finally:
            self.engine.dispatcher.at(time.time() + _config.seconds("alert-interval"), self._tick)

    def facts(self, now: float) -> Facts:
        disp = self.engine.dispatcher
        metrics = self.engine.extension(MetricsExtension)
        with metrics.lock:
            ends = tuple(metrics.ends)
            progress = {j: t for j, t in metrics.progress.items()
                        if (job := disp.jobs.get(j.lower())) is not None and not job.idle}
        names = {job.key: job.spec.id for job in disp.jobs.values()}
        waits = {names.get(j, j): w for j, w in metrics.oldest_wait(now).items()}
        unusable = tuple(n.node_id for n in disp.nodes.nodes.values() if n.state == NodeState.UNUSABLE)
        return Facts(now=now, ends=ends, progress=progress, unusable=unusable,
                     budget_used=metrics._money(disp)["budget"], queue_wait=waits)

    def _evaluate(self, now: float) -> None:
        facts = self.facts(now)
        for st, action in list(self.alerts.values()):
            change = st.step(facts)
            if change is None:
                continue
            record = {"pool": self.engine.name, "alert": st.name, "rule": str(st.rule), "state": change,
                      "time": now, "detail": st.detail if change == "firing" else None}
            self.engine.dispatcher.batch.event(now, "alert", state=change, data=record)
            # shown (views) only after the turn's commit, as every engine event
            self.engine.dispatcher.events.append(AlertChanged(self.engine.name, st.name, change, now, record["detail"]))
            self._actions.submit(self._act, action, record)

    @staticmethod
    def _act(action: Any, record: dict) -> None:
        try:
            if action == "log":
                level = logging.WARNING if record["state"] == "firing" else logging.INFO
                log.log(level, "alert %s %s on pool %s%s", record["alert"], record["state"], record["pool"],
                        f": {record['detail']}" if record["detail"] else "", extra={"alert": record})
            elif isinstance(action, str):
                request = urllib.request.Request(action, data=json.dumps(record).encode(), method="POST",
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=_config.seconds("alert-webhook-timeout")) as reply:
                    reply.read()
            else:
                action(record)
        except Exception as exc:  # noqa: BLE001 - a failing action is reported, never raised
            log.warning("alert %s: its action %s failed: %s", record["alert"], _describe(action), exc)

