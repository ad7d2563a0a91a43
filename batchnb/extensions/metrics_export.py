"""The ``batchnb_*`` metric families, made from one snapshot of :class:`~.metrics.MetricsExtension`.

Imported only when a pool's metrics endpoint starts: prometheus_client is the
``monitoring`` extra. Every family carries a ``pool`` label, so one
Prometheus can scrape several pools.

========================================  =========  ===========================================
family                                    type       what
========================================  =========  ===========================================
batchnb_tasks{pool,job,state}             gauge      tasks of each live job in each state
batchnb_task_seconds                      histogram  run time of attempts (start to end)
batchnb_task_wait_seconds                 histogram  time a ready task waited for a slot
batchnb_task_retries_total                counter    failed attempts that were retried
batchnb_task_requeues_total               counter    attempts requeued after their node was lost
batchnb_preemptions_total                 counter    spot nodes taken back
batchnb_nodes{pool,group,state}           gauge      nodes by group (dedicated, spot) and state
batchnb_slots_used                        gauge      task slots held by running attempts
batchnb_staged_bytes_total{direction}     counter    bytes staged in and out by tasks
batchnb_cost_usd_total                    counter    what the pool's nodes cost so far
batchnb_spend_rate_usd_per_hour           gauge      the pool's burn now
batchnb_budget_used_ratio{job}            gauge      spent / budget of each live budgeted job
========================================  =========  ===========================================
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..states import NodeGroup, NodeState


class PoolCollector:
    """A prometheus_client collector: ``snapshot()`` is called once per scrape."""

    def __init__(self, pool: str, snapshot: Callable[[], dict]):
        self.pool, self.snapshot = pool, snapshot

    def describe(self):
        return []      # families are known only when collected (jobs come and go)

    def collect(self):
        s, pool = self.snapshot(), self.pool
        tasks = GaugeMetricFamily("batchnb_tasks", "Tasks of each live job by state", labels=["pool", "job", "state"])
        for job, counts in sorted(s["tasks"].items()):
            for state, n in counts.items():
                tasks.add_metric([pool, job, state], n)
        yield tasks
        for name, key, doc in (("batchnb_task_seconds", "run", "Run time of task attempts"),
                               ("batchnb_task_wait_seconds", "wait", "Time a ready task waited for a slot")):
            buckets, total = s[key]
            family = HistogramMetricFamily(name, doc, labels=["pool"])
            family.add_metric([pool], buckets, total)
            yield family
        for name, key, doc in (("batchnb_task_retries", "retries", "Failed attempts that were retried"),
                               ("batchnb_task_requeues", "requeues", "Attempts requeued after their node was lost"),
                               ("batchnb_preemptions", "preemptions", "Spot nodes taken back")):
            yield _counter(name, doc, pool, s[key])
        nodes = GaugeMetricFamily("batchnb_nodes", "Nodes by group and state", labels=["pool", "group", "state"])
        for group in NodeGroup:
            for state in NodeState:
                nodes.add_metric([pool, group.value, state.value], s["nodes"].get((group.value, state.value), 0))
        yield nodes
        yield _gauge("batchnb_slots_used", "Task slots held by running attempts", pool, s["slots_used"])
        staged = CounterMetricFamily("batchnb_staged_bytes", "Bytes staged by tasks", labels=["pool", "direction"])
        for direction in ("in", "out"):
            staged.add_metric([pool, direction], s["staged"].get(direction, 0))
        yield staged
        yield _counter("batchnb_cost_usd", "What the pool's nodes cost so far (USD)", pool, s["cost"])
        yield _gauge("batchnb_spend_rate_usd_per_hour", "The pool's spend rate now (USD per hour)", pool, s["rate"])
        budget = GaugeMetricFamily("batchnb_budget_used_ratio", "Spent / budget of each live budgeted job",
                                   labels=["pool", "job"])
        for job, ratio in sorted(s["budget"].items()):
            budget.add_metric([pool, job], ratio)
        yield budget


def _counter(name: str, doc: str, pool: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["pool"])
    family.add_metric([pool], value)
    return family


def _gauge(name: str, doc: str, pool: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["pool"])
    family.add_metric([pool], value)
    return family
