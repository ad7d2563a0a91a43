"""dask-gateway: ``bnb.Pool("team", backend="gateway", address="http://127.0.0.1:8000", dedicated=2)``.

A pool on a cluster of a `dask-gateway <https://gateway.dask.org>`_ server
(``pip install batchnb[gateway]``): a new cluster, made with the gateway's
``cluster_options``, or a running one by ``cluster_name`` (what a notebook
does after its kernel restarted). The gateway starts and stops the workers;
batchnb drives how many there are with ``cluster.scale`` from its own target
(``dedicated=``, ``pool.resize``, an autoscale formula) — never the gateway's
``adapt``, whose scheduler sees only the few tasks batchnb keeps in flight,
not the queue.

Nodes are the cluster's workers, under the names the gateway gives them,
and all are dedicated: a gateway has no spot workers, so ``spot=`` is refused
and so is ``pool.preempt``. A node's task slots are its worker's threads (the
gateway's ``worker_cores``/``worker_threads``; ``task_slots_per_node`` must stay 1). When the pool shrinks, the
nodes it chose leave (they are retired first, then the gateway's count is
lowered), not whichever the gateway's scheduler would pick.

Closing the pool shuts the gateway cluster down only if the pool made it
(``shutdown_on_close=`` says otherwise either way); the same holds when the
interpreter exits with the pool open. A cluster that outlives its driver (a
pool made with ``shutdown_on_close=False``, or a kernel that died) is found
again with ``cluster_name=``; its name is ``pool.client.cluster.name``.

Options are checked when given:

>>> from batchnb.spec import PoolSpec
>>> GatewayBackend(PoolSpec("team", backend="gateway"), address="127.0.0.1:8000")
Traceback (most recent call last):
...
batchnb.SpecError: address: '127.0.0.1:8000' is invalid: expected the gateway's URL, such as 'http://127.0.0.1:8000'
>>> GatewayBackend(PoolSpec("team", backend="gateway", spot=2), address="http://127.0.0.1:8000")
Traceback (most recent call last):
...
batchnb.SpecError: spot: 2 is invalid: a dask-gateway cluster's workers are all dedicated nodes; use dedicated=
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import threading
import time
from collections.abc import Mapping

import dask
import dask_gateway  # noqa: F401 - imported here so that the registry names the extra when it is missing

from ..errors import BackendError, SpecError
from ..states import NodeGroup
from .base import Backend

log = logging.getLogger("batchnb.backends.gateway")

_DEDICATED = NodeGroup.DEDICATED.value


class GatewayBackend(Backend):
    """Nodes from a dask-gateway server; see the module's text.

    Options: ``address`` (the gateway's URL; default ``dask.config`` ``gateway.address``),
    ``cluster_name`` (attach to this running cluster instead of making one),
    ``cluster_options`` (a mapping of the gateway's cluster options, for a new cluster),
    ``auth`` (``"basic"``, ``"kerberos"``, ``"jupyterhub"`` or a ``dask_gateway`` auth
    object; default from ``dask.config``), ``proxy_address``, ``shutdown_on_close``
    (default: whether the pool made the cluster), ``start_timeout`` (seconds for the
    cluster and its first workers to come up) and ``agent_on_scheduler`` (with
    ``detached=True``: the pool's agent runs in the cluster's scheduler, :mod:`batchnb.agent.beside`).
    """

    name = "gateway"
    can_scale = True
    can_preempt = False

    def __init__(self, spec, *, address: str | None = None, cluster_name: str | None = None,
                 cluster_options: Mapping | None = None, auth=None, proxy_address: str | int | None = None,
                 shutdown_on_close: bool | None = None, start_timeout: float = 120.0,
                 agent_on_scheduler: bool = False, **options):
        super().__init__(spec, **options)
        if options:
            raise BackendError(f"the gateway backend does not take option(s) {sorted(options)}")
        if agent_on_scheduler is not False:
            raise SpecError("agent_on_scheduler", agent_on_scheduler, "puts a detached pool's agent in its "
                            "cluster's scheduler: it needs detached=True")
        address = address if address is not None else dask.config.get("gateway.address", None)
        if not isinstance(address, str) or not address.startswith(("http://", "https://")):
            raise SpecError("address", address, "expected the gateway's URL, such as 'http://127.0.0.1:8000'")
        if cluster_name is not None and (not isinstance(cluster_name, str) or not cluster_name.strip()):
            raise SpecError("cluster_name", cluster_name, "expected the name of a running gateway cluster")
        if cluster_options is not None:
            if not isinstance(cluster_options, Mapping) or not all(isinstance(k, str) for k in cluster_options):
                raise SpecError("cluster_options", cluster_options, "expected a mapping of option name to value")
            if cluster_name is not None and cluster_options:
                raise SpecError("cluster_options", dict(cluster_options), "options make a new cluster; "
                                f"cluster {cluster_name!r} runs with the options it was made with")
        if shutdown_on_close is not None and not isinstance(shutdown_on_close, bool):
            raise SpecError("shutdown_on_close", shutdown_on_close, "expected True, False or None")
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float)) \
                or not math.isfinite(start_timeout) or start_timeout <= 0:
            raise SpecError("start_timeout", start_timeout, "expected a positive number of seconds")
        if spec.spot:
            raise SpecError("spot", spec.spot, "a dask-gateway cluster's workers are all dedicated nodes; "
                                               "use dedicated=")
        if spec.task_slots_per_node != 1:
            raise SpecError("task_slots_per_node", spec.task_slots_per_node, "a gateway node's task slots are its "
                            "worker's threads, which the gateway sets (cluster_options such as worker_cores)")
        self.auth = _check_auth(auth)
        self.address, self.cluster_name, self.proxy_address = address.rstrip("/"), cluster_name, proxy_address
        self.cluster_options = dict(cluster_options or {})
        self.shutdown_on_close, self.start_timeout = shutdown_on_close, float(start_timeout)
        self.made = False
        self.cluster = self.client = self._gateway = None
        self._lock = threading.Lock()
        self._target = 0
        self._released: set[str] = set()          # workers the pool let go that may still be listed
        self._let_go: set[str] = set()            # every worker the pool let go (see released())
        self._last: dict[str, str] = {}
        # Gateway calls leave the dispatcher's thread, one at a time and in order (retire, then scale).
        self._calls = cf.ThreadPoolExecutor(1, thread_name_prefix="batchnb-gateway")

    # -- starting ---------------------------------------------------------------------
    def start(self):
        from dask_gateway import Gateway, GatewayCluster
        self._gateway = Gateway(address=self.address, proxy_address=self.proxy_address, auth=self.auth)
        try:
            if self.cluster_name is not None:
                running = {c.name for c in self._call(self._gateway.list_clusters)}
                if self.cluster_name not in running:
                    raise SpecError("cluster_name", self.cluster_name, f"no running cluster of that name on the "
                                    f"gateway at {self.address} (running: {', '.join(sorted(running)) or 'none'})")
                self.cluster = self._call(GatewayCluster.from_name, self.cluster_name, address=self.address,
                                          proxy_address=self.proxy_address, auth=self.auth, shutdown_on_close=False)
            else:
                options = self._options()
                self.cluster = self._call(GatewayCluster, address=self.address, proxy_address=self.proxy_address,
                                          auth=self.auth, cluster_options=options, shutdown_on_close=False)
                self.made = True
            # The client's periodic scheduler-info update (n_workers=0) may overwrite the answer of
            # a scheduler_info(n_workers=-1) call before it is returned: a poll would then see no
            # workers and take live nodes for lost ones. The pool asks when it needs to know.
            with dask.config.set({"distributed.client.scheduler-info-interval": "7d"}):
                self.client = self.cluster.get_client(set_as_default=False)
            have = len(self._names() or ())
            target = self._initial(have)
            with self._lock:
                self._target = target
            if target != have or self.made:
                self._call(self.cluster.scale, target)
            self._wait_for_workers(target)
        except BaseException:
            self.close()
            raise
        log.info("pool %s: on dask-gateway cluster %s (%s)", self.spec.name, self.cluster.name,
                 "made by this pool" if self.made else "attached")
        return self.client

    def _initial(self, have: int) -> int:
        if self.spec.autoscale is not None:
            return self.spec.dedicated or 0
        if self.spec.dedicated is not None:
            return self.spec.dedicated
        return 1 if self.made else have       # an attached cluster keeps its size unless told

    def _options(self):
        """The gateway's cluster options with ours set: a name it does not offer is a SpecError."""
        if not self.cluster_options:
            return None
        offered = self._call(self._gateway.cluster_options)
        for key, value in self.cluster_options.items():
            try:
                offered[key] = value
            except KeyError:
                raise SpecError(f"cluster_options[{key!r}]", value, f"the gateway at {self.address} offers "
                                f"{', '.join(sorted(offered)) or 'no options'}") from None
            except (TypeError, ValueError) as exc:
                raise SpecError(f"cluster_options[{key!r}]", value, str(exc)) from None
        return offered

    def _call(self, fn, *args, **kwargs):
        """A call to the gateway; what fails on its side is a BackendError naming the gateway."""
        try:
            return fn(*args, **kwargs)
        except (SpecError, BackendError):
            raise
        except Exception as exc:  # noqa: BLE001 - aiohttp, dask_gateway and OS errors alike
            raise BackendError(f"the dask-gateway server at {self.address} refused or failed: "
                               f"{type(exc).__name__}: {exc}") from None

    def _wait_for_workers(self, count: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        next_check = 0.0
        while len(self._names() or ()) < count:
            now = time.monotonic()
            if now > deadline:
                raise BackendError(f"dask-gateway cluster {self.cluster.name}: {len(self._names() or ())} of {count} "
                                   f"workers joined within {self.start_timeout:.0f}s (start_timeout); see the "
                                   "gateway's logs")
            if now >= next_check:       # a cluster the gateway gave up on will not get workers
                next_check = now + 1.0
                status = self._call(self._gateway.get_cluster, self.cluster.name).status
                if status.name not in ("PENDING", "RUNNING"):
                    raise BackendError(f"dask-gateway cluster {self.cluster.name} is {status.name.lower()}; "
                                       "see the gateway's logs")
            time.sleep(0.1)

    # -- what the engine asks --------------------------------------------------------
    def _names(self) -> set[str] | None:
        """The names of the workers the cluster's scheduler lists now, or None if it cannot be
        asked. Asked, not cached: the dispatcher's own view is at most as new, so a worker it
        sees gone is gone here too (a node is never left behind as listed but lost)."""
        try:
            workers = self._workers()
        except Exception as exc:  # noqa: BLE001 - a brief disconnection
            log.debug("gateway: cannot list workers: %s", exc)
            return None
        return {str(w.get("name", a)) for a, w in workers.items()}

    def _workers(self) -> dict:
        # The scheduler's answer itself, not the client's shared copy of it (see start()).
        return self.client.sync(self.client.scheduler.identity, n_workers=-1).get("workers", {})

    def requested(self) -> dict[str, str]:
        names = self._names() if self.client is not None else None
        with self._lock:
            if names is not None:
                self._released &= names           # names are never reused: forget those gone
                self._last = {n: _DEDICATED for n in names - self._released}
            return dict(self._last)

    def released(self, node_id: str) -> bool:
        with self._lock:
            return node_id in self._let_go

    def group(self, node_id: str) -> str:
        return _DEDICATED

    def scale(self, group: str, count: int) -> list[str]:
        if group != _DEDICATED:
            if count:
                raise BackendError("the gateway backend cannot make spot nodes: a dask-gateway cluster's "
                                   "workers are all dedicated")
            return []
        with self._lock:
            self._target = count
        self._calls.submit(self._apply, [])
        return []          # the gateway names its workers when they start; they appear as they join

    def remove(self, node_ids: list[str]) -> None:
        with self._lock:
            leaving = [n for n in node_ids if n in self._last and n not in self._released]
            self._released.update(leaving)
            self._let_go.update(leaving)
            self._target = max(0, self._target - len(leaving))
        if leaving:
            self._calls.submit(self._apply, leaving)

    def _apply(self, leaving: list[str]) -> None:
        """Retire the workers the pool chose, then set the gateway's count (the gateway would
        otherwise pick which workers to close itself)."""
        try:
            if leaving:
                workers = self._workers()
                addresses = [a for a, w in workers.items() if str(w.get("name")) in leaving]
                if addresses:
                    self.client.retire_workers(addresses, close_workers=True, remove=True)
            with self._lock:
                target = self._target
            self.cluster.scale(target)
        except Exception as exc:  # noqa: BLE001 - on the gateway's thread: reported, not raised
            log.warning("pool %s: dask-gateway cluster %s did not take the new size: %s", self.spec.name,
                        getattr(self.cluster, "name", "?"), exc)

    # -- closing ------------------------------------------------------------------------
    def close(self) -> None:
        self._calls.shutdown(wait=True, cancel_futures=True)
        cluster, gateway = self.cluster, self._gateway
        self.cluster = self._gateway = None
        shutdown = self.made if self.shutdown_on_close is None else self.shutdown_on_close
        try:
            if cluster is not None:
                try:
                    cluster.close(shutdown=False)
                except Exception as exc:  # noqa: BLE001 - its connections may be gone already
                    log.debug("gateway: closing the cluster object: %s", exc)
                if shutdown:
                    try:
                        gateway.stop_cluster(cluster.name)
                        log.info("pool %s: dask-gateway cluster %s shut down", self.spec.name, cluster.name)
                    except Exception as exc:  # noqa: BLE001 - say so; the gateway's idle timeout may end it
                        log.warning("pool %s: could not shut down dask-gateway cluster %s: %s", self.spec.name,
                                    cluster.name, exc)
        finally:
            for gw in (gateway, getattr(cluster, "gateway", None)):
                _close_gateway(gw)


def _close_gateway(gateway) -> None:
    """Close a ``dask_gateway.Gateway`` once: its ``__del__`` closes it again, which raises
    (its loop is gone) and prints "Exception ignored" at garbage collection."""
    if gateway is None or not hasattr(gateway, "_loop_runner"):
        return
    try:
        gateway.close()
    except Exception as exc:  # noqa: BLE001 - closed already
        log.debug("gateway: closing its client: %s", exc)
    del gateway._loop_runner


def _check_auth(auth):
    """The gateway auth object for ``auth``; SpecError for one dask-gateway does not know.
    The value is not shown: it may hold a password."""
    from dask_gateway.auth import GatewayAuth, get_auth
    if auth is None or isinstance(auth, GatewayAuth):
        return auth
    if not isinstance(auth, str):
        raise SpecError("auth", type(auth).__name__, "expected 'basic', 'kerberos', 'jupyterhub' or a "
                        "dask_gateway auth object such as dask_gateway.BasicAuth(user, password)")
    try:
        return get_auth(auth)
    except Exception as exc:  # noqa: BLE001 - an unknown name, or a method missing its package
        raise SpecError("auth", auth, f"dask-gateway cannot use it ({exc})") from None
