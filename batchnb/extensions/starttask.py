"""Start tasks, the pool's side: run the start task on each node as it joins, hold the results.

What runs on the node is :mod:`batchnb.node.starttask`.

A start task has Azure's defaults: no retries, and the node takes no task until it succeeded.

>>> import batchnb as bnb
>>> bnb.StartTask("pip install pillow")
StartTask(command='pip install pillow', max_retries=0, wait_for_success=True, env={}, inputs=(), max_wall_clock=None)
"""

from __future__ import annotations

import logging
import threading
import time

from ..engine.extension import PoolExtension
from ..node import runner
from ..node.starttask import StartTaskResult, off_the_loop, prepare_node
from ..states import NodeState

log = logging.getLogger("batchnb.starttask")


class StartTaskExtension(PoolExtension):
    """Runs the pool's start task on each node as it joins; holds the results per node.

    App packages always hold a node ``starting`` until they are unpacked, as in
    Azure, whatever the start task's ``wait_for_success``; a package that
    cannot be installed makes the node ``start_task_failed``.

    >>> import batchnb as bnb
    >>> with bnb.Pool("doc", dedicated=1, start_task="echo ready > $AZ_BATCH_NODE_SHARED_DIR/ready") as pool:
    ...     job = pool.job("after-start")
    ...     t = job.add_task("t1", "cat $AZ_BATCH_NODE_SHARED_DIR/ready")
    ...     result = job.wait()
    ...     started = pool.extension(StartTaskExtension).results["dedicated-0"]
    ...     print(started.succeeded, started.exit_code, started.attempts, t.stdout().strip())
    True 0 1 ready
    """

    def __init__(self, engine):
        super().__init__(engine)
        self.spec = engine.spec.start_task
        #: node id -> the latest StartTaskResult
        self.results: dict[str, StartTaskResult] = {}
        self._waits = self.spec.wait_for_success if self.spec is not None else True

    def node_joined(self, worker, now: float) -> bool:
        engine = self.engine
        packages = engine.spec.app_packages
        if self.spec is None and not packages:
            return True
        # A backend that boots nodes from a script (Azure's cloud-init) ran the start task there;
        # then only its result is read on the node. The node's group is what its backend declares
        # (WorkerInfo.group): the start task's AZ_BATCH_NODE_IS_DEDICATED says the same as its tasks'.
        common = (engine.name, engine.node_root, engine.storage_options, worker.name)
        bootstrap = bool(getattr(engine.backend, "start_task_in_bootstrap", False))
        disp = engine.dispatcher

        def on_node(fn, *args):
            # Through client.run, off the worker's task threads: the start task takes no task
            # slot, so with wait_for_success=False tasks run beside it, as in Azure.
            try:
                out = engine.client.run(off_the_loop, fn, *args, workers=[worker.address])
                return out.get(worker.address), None
            except Exception as exc:  # noqa: BLE001 - a lost node or result is a failed start task
                return None, f"{type(exc).__name__}: {exc}"

        def run():
            if packages:
                # First the packages alone: the node may take tasks once they are unpacked.
                result, problem = on_node(prepare_node, None, packages, *common, False, worker.group)
                ok = result is not None and result.succeeded
                disp.post(self._packages_done if ok and self.spec is not None else self._done,
                          worker.name, worker.address, result, problem, True)
                if not ok or self.spec is None:
                    return
            # prepare_node finds the packages unpacked already (they are not fetched again).
            result, problem = on_node(prepare_node, self.spec, packages, *common, bootstrap, worker.group)
            disp.post(self._done, worker.name, worker.address, result, problem)
        threading.Thread(target=run, name=f"batchnb-starttask-{worker.name}", daemon=True).start()
        return not self._waits and not packages

    def _packages_done(self, node_id: str, address: str, result, problem, fatal) -> None:
        """On the dispatcher's thread: the app packages of ``node_id`` are unpacked; its start task runs."""
        node = self.engine.dispatcher.nodes.nodes.get(node_id)
        if node is None or node.address != address:
            return
        if not self._waits and node.state == NodeState.STARTING:
            self.engine.dispatcher.set_node_state(node_id, NodeState.IDLE, "application packages installed")

    def _done(self, node_id: str, address: str, result, problem, fatal: bool = False) -> None:
        """On the dispatcher's thread: the start task of ``node_id`` at ``address`` ended.

        ``fatal``: a failure fails the node even without ``wait_for_success`` (app packages).
        """
        disp = self.engine.dispatcher
        node = disp.nodes.nodes.get(node_id)
        if node is None or node.address != address:
            return  # the node went away (preempted, removed) while its start task ran
        if result is None:
            now = time.time()
            result = StartTaskResult(node_id, None, 0, runner.CRASH, problem, "", "", now, now)
        self.results[node_id] = result
        disp.batch.event(result.end, "starttask", None, node_id, "succeeded" if result.succeeded else "failed",
                         {"exit_code": result.exit_code, "attempts": result.attempts, "category": result.category,
                          "message": result.message, "task_dir": result.task_dir})
        if result.succeeded:
            if node.state == NodeState.STARTING:
                disp.set_node_state(node_id, NodeState.IDLE, "start task succeeded")
            return
        what = "application packages failed" if fatal else f"start task failed after {result.attempts} attempt(s)"
        reason = (f"{what}: {result.message}"
                  + (f"; stderr: {result.stderr_tail.strip()[-300:]}" if result.stderr_tail.strip() else ""))
        log.warning("node %s: %s", node_id, reason)
        if self._waits or fatal:
            disp.set_node_state(node_id, NodeState.START_TASK_FAILED, reason)
