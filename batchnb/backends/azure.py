"""Azure VMs through dask-cloudprovider: ``bnb.Pool("render", backend="azure", spot=8, ...)``.

A pool's scheduler and each of its nodes is an Azure VM made by
``dask_cloudprovider.azure.AzureVMCluster`` (TLS on: its default
``Security.temporary()`` certificate, sent to the VMs in cloud-init). What
batchnb adds on top:

- **Node groups with their own VM requests.** dask-cloudprovider has no spot
  option, and its ``extra_vm_options`` reach the scheduler as well. Here each
  worker spec is made per group: spot nodes ask for ``priority: Spot`` with
  the ``eviction_policy`` and ``billing_profile.max_price`` given; the
  scheduler and the dedicated nodes never do.
- **Nodes named by node id.** The Dask worker on VM ``bnb-<cluster>-spot-3``
  is named ``spot-3``, so the dispatcher's node table, the ledger and
  ``pool.nodes()`` use Azure Batch's names. A VM's disks are those named
  ``<vm>_...`` (Azure's ``<vm>_OsDisk_1_<hex>``): dask-cloudprovider's
  substring match would take ``spot-10``'s disk for ``spot-1``'s.
- **This batchnb on every VM** (:mod:`._azure_bootstrap`). No container by
  default: each VM (Ubuntu 24.04 LTS unless ``vm_image`` says otherwise)
  bootstraps a venv under ``bootstrap_dir`` with the driver's versions of
  batchnb's dependencies and a wheel of the driver's own batchnb, fetched
  from ``wheel_store`` by a signed URL; the Dask process runs from it. A
  ``docker_image`` must hold this batchnb: the VM checks before starting.
- **The start task in the VM's bootstrap, in the tasks' environment**: after
  the bootstrap and before the worker, with the venv on ``PATH`` (or in the
  image), as the tasks' user, under ``node_root`` (``/mnt/batch/tasks``); the
  pool reads its result and keeps nodes whose start task failed out.
- **VMs made in parallel, in time or not at all** (:mod:`._azure_startup`):
  ``create_concurrency`` requests at once; a VM whose Dask process is not up
  within ``start_timeout`` is deleted with its disks, NIC and public IP.
- **Requests in the REST API's shape.** dask-cloudprovider writes its
  requests as snake_case dicts, which the current Azure SDKs would send
  verbatim; ``_azure_rest`` reshapes them at the SDK boundary.
- **An agent on the scheduler VM** (``agent_on_scheduler=True`` with
  ``detached=True``, :mod:`._azure_adopt`): the creator makes the scheduler VM
  with a managed identity, given Contributor on the resource group; the
  agent's backend there (``adopt_scheduler=``, set by the agent) adopts that
  scheduler, makes the node VMs with the identity and, closed, deletes them
  and then its own VM.
- **Eviction notices.** Every worker runs ``ScheduledEventsPlugin``, which
  polls Azure's scheduled events and, on ``Preempt``, has the pool requeue
  the node's tasks while the VM is still up. ``pool.preempt(node)`` asks
  Azure to evict a spot VM now (``virtual_machines.simulate_eviction``).

Options (keyword arguments of ``bnb.Pool``): ``location``, ``resource_group``,
``vnet``, ``subnet``, ``security_group``, ``subscription_id``,
``public_ingress``, ``scheduler_vm_size``, ``vm_image``, ``disk_size``,
``docker_image``, ``bootstrap`` (install what the image lacks with apt), ``bootstrap_dir``,
``wheel_store`` and ``wheel_storage_options``, ``node_packages``, ``create_concurrency``,
``auto_shutdown``, ``env_vars``,
``extra_bootstrap``, ``scheduler_options``, ``worker_options``, ``security``,
``eviction_policy`` (``"Delete"`` or ``"Deallocate"``), ``max_price``
(USD/hour, -1: up to the on-demand price), ``node_root``,
``scheduled_events_url``, ``start_timeout``, ``debug``; ``azure_sdk``
replaces the Azure management clients (tests use a recording stand-in).

>>> spot_vm_options("Delete", -1)
{'priority': 'Spot', 'eviction_policy': 'Delete', 'billing_profile': {'max_price': -1}}
"""

from __future__ import annotations

import base64
import copy
import logging
import math
import threading
import time

import dask.config

from ..errors import BackendError, SpecError
from ..node.spotnotice import AZURE_SCHEDULED_EVENTS_URL, ScheduledEventsPlugin
from ..node.starttask import bootstrap_script
from ._azure_adopt import AdoptingAzureVMCluster, adopt, delete_own_vm
from ._azure_bootstrap import BOOTSTRAP_DIR, NODE_EXTRAS, UBUNTU_LTS, driver_pins, prepare_wheel
# BatchnbAzureVMWorker and vm_name moved to _azure_cluster; importers of this module keep them.
from ._azure_cluster import BatchnbAzureVMCluster, BatchnbAzureVMWorker, vm_name  # noqa: F401
from .base import SpecClusterBackend

log = logging.getLogger("batchnb.azure")

EVICTION_POLICIES = ("Delete", "Deallocate")
NODE_ROOT = "/mnt/batch/tasks"          # where Azure Batch keeps a node's folders


def spot_vm_options(eviction_policy: str = "Delete", max_price: float = -1) -> dict:
    """The VM request fields that make a spot VM (as dask-cloudprovider spells VM requests)."""
    return {"priority": "Spot", "eviction_policy": eviction_policy, "billing_profile": {"max_price": max_price}}


class AzureBackend(SpecClusterBackend):
    """Nodes as Azure VMs (see the module's docstring for the options).

    ``bnb.Pool("render", backend="azure", vm_size="Standard_D4s_v5", dedicated=1, spot=8,
    location="westeurope", resource_group="rg", vnet="vnet", security_group="nsg")`` makes one.
    What each group's VMs are asked for is known before any VM is (nothing here calls Azure):

    >>> import base64
    >>> from batchnb.spec import PoolSpec
    >>> spec = PoolSpec("render", backend="azure", vm_size="Standard_D4s_v5", dedicated=1, spot=8,
    ...                 task_slots_per_node=2, start_task="pip install pillow")
    >>> backend = AzureBackend(spec, location="westeurope", resource_group="rg", vnet="vnet", security_group="nsg")
    >>> backend.cluster_kwargs["vm_size"], backend.cluster_kwargs["worker_options"]
    ('Standard_D4s_v5', {'nthreads': 2, 'resources': {'slots': 2}})
    >>> spot = backend._group_options()["spot"]
    >>> spot["vm"]
    {'priority': 'Spot', 'eviction_policy': 'Delete', 'billing_profile': {'max_price': -1}}
    >>> [line] = spot["bootstrap"]("spot-3")        # the VM's cloud-init runs the start task before the worker
    >>> steps = line.split(" && ")
    >>> steps[0], steps[-1]
    ('mkdir -p /mnt/batch/tasks/spot-3/startup', 'sh /mnt/batch/tasks/spot-3/startup/starttask.sh')
    >>> script = base64.b64decode(steps[1].split()[1]).decode()
    >>> for text in script.splitlines():
    ...     if "AZ_BATCH_NODE_IS_DEDICATED" in text or "pillow" in text:
    ...         print(text.strip())
    export AZ_BATCH_NODE_IS_DEDICATED=false
    /bin/sh -c 'pip install pillow' > "$AZ_BATCH_TASK_DIR/stdout.txt" 2> "$AZ_BATCH_TASK_DIR/stderr.txt" < /dev/null
    """

    name = "azure"
    can_scale = True
    can_preempt = True
    preemptible_groups = ("spot",)       # Azure evicts spot VMs only (pool.preempt, chaos)
    start_task_in_bootstrap = True

    def __init__(self, spec, *, location=None, resource_group=None, vnet=None, subnet=None, security_group=None,
                 subscription_id=None, public_ingress=None, scheduler_vm_size=None, vm_image=None, disk_size=None,
                 docker_image=None, bootstrap=None, auto_shutdown=None, env_vars=None, extra_bootstrap=None,
                 scheduler_options=None, worker_options=None, security=True, eviction_policy="Delete",
                 max_price=-1, node_root=NODE_ROOT, scheduled_events_url=AZURE_SCHEDULED_EVENTS_URL,
                 scheduled_events_poll=1.0, eviction_grace=2.0, start_timeout=900.0, debug=False,
                 bootstrap_dir=BOOTSTRAP_DIR, wheel_store=None, wheel_storage_options=None,
                 node_packages=NODE_EXTRAS, create_concurrency=32, azure_sdk=None, agent_on_scheduler=False,
                 adopt_scheduler=None, **options):
        super().__init__(spec, **options)
        if options:
            name = sorted(options)[0]
            raise SpecError(name, options[name], "not an option of the azure backend; see batchnb.backends.azure")
        if agent_on_scheduler is not False:
            # With detached=True the agent takes this option off before the backend is made
            # (batchnb.agent.beside); here it can only be a pool in this kernel.
            raise SpecError("agent_on_scheduler", agent_on_scheduler, "puts a detached pool's agent on its "
                            "scheduler VM: it needs detached=True")
        if eviction_policy not in EVICTION_POLICIES:
            raise SpecError("eviction_policy", eviction_policy, "expected 'Delete' or 'Deallocate'")
        if isinstance(max_price, bool) or not isinstance(max_price, (int, float)) or not math.isfinite(max_price) \
                or (max_price != -1 and max_price <= 0):
            raise SpecError("max_price", max_price, "expected -1 (up to the on-demand price) or a positive USD/hour")
        for field, value in (("location", location), ("resource_group", resource_group)):
            if value is not None and (not isinstance(value, str) or not value):
                raise SpecError(field, value, "expected a non-empty string")
        if not isinstance(node_root, str) or not node_root.startswith("/"):
            raise SpecError("node_root", node_root, "expected an absolute path on the VMs")
        if not isinstance(bootstrap_dir, str) or not bootstrap_dir.startswith("/"):
            raise SpecError("bootstrap_dir", bootstrap_dir, "expected an absolute path on the VMs")
        if wheel_store is not None and (not isinstance(wheel_store, str) or "://" not in wheel_store
                                        or wheel_store.startswith("file://")):
            raise SpecError("wheel_store", wheel_store, "expected a storage folder the VMs can read, such as "
                            "'abfs://container/batchnb' (the wheel is fetched with a signed URL)")
        if docker_image is not None and (not isinstance(docker_image, str) or not docker_image.strip()):
            raise SpecError("docker_image", docker_image, "expected an image name holding this batchnb, or None")
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, (int, float)) or not start_timeout > 0:
            raise SpecError("start_timeout", start_timeout, "expected a positive number of seconds")
        if isinstance(create_concurrency, bool) or not isinstance(create_concurrency, int) or create_concurrency < 1:
            raise SpecError("create_concurrency", create_concurrency, "expected a positive integer")
        self.boot = {"root": bootstrap_dir.rstrip("/") or "/", "docker_image": docker_image,
                     "pins": driver_pins(tuple(node_packages or ()))}
        self.wheel_store, self.wheel_storage_options = wheel_store, wheel_storage_options or {}
        self.create_concurrency = create_concurrency
        self.node_root = node_root
        self.eviction_policy, self.max_price = eviction_policy, max_price
        self.scheduled_events_url = scheduled_events_url
        self.scheduled_events_poll, self.eviction_grace = scheduled_events_poll, eviction_grace
        self.start_timeout = start_timeout
        slots = spec.task_slots_per_node
        self.cluster_kwargs = dict(
            location=location, resource_group=resource_group, vnet=vnet, subnet=subnet,
            security_group=security_group, subscription_id=subscription_id, public_ingress=public_ingress,
            vm_size=spec.vm_size, scheduler_vm_size=scheduler_vm_size, vm_image={**UBUNTU_LTS, **(vm_image or {})},
            disk_size=disk_size, docker_image=docker_image, bootstrap=bootstrap, auto_shutdown=auto_shutdown,
            env_vars=env_vars or {}, extra_bootstrap=extra_bootstrap, debug=debug, security=security,
            scheduler_options=dict(scheduler_options or {}),
            worker_options={"nthreads": slots, "resources": {"slots": slots}, **(worker_options or {})},
            n_workers=0, azure_sdk=azure_sdk)
        if spec.vm_size is None:
            self.cluster_kwargs.pop("vm_size")
        self.cluster = None
        self._config_before = None
        #: what the creator handed the agent on the scheduler VM (batchnb.backends._azure_adopt)
        self.adopted = adopt_scheduler

    # -- what each group's VMs get ---------------------------------------------------
    def _group_options(self) -> dict:
        st = self.spec.start_task
        mount = f"-v {self.node_root}:{self.node_root}"

        def start(group):
            def lines(node_id):
                if st is None:
                    return []
                script = bootstrap_script(st, self.spec.name, node_id, self.node_root, group)
                script = base64.b64encode(script.encode()).decode()
                path = f"{self.node_root}/{node_id}/startup"
                return [f"mkdir -p {path} && echo {script} | base64 -d > {path}/starttask.sh && sh {path}/starttask.sh"]
            return lines
        return {"dedicated": {"vm": {}, "bootstrap": start("dedicated"), "docker_args": mount},
                "spot": {"vm": spot_vm_options(self.eviction_policy, self.max_price), "bootstrap": start("spot"),
                         "docker_args": mount}}

    def notice_plugins(self) -> list:
        """Every worker polls Azure's scheduled events for its own VM (spot evictions)."""
        return [ScheduledEventsPlugin(self.scheduled_events_url,
                                      vm_name_template=vm_name(self.cluster.uuid, "{node_id}"),
                                      poll_interval=self.scheduled_events_poll, grace=self.eviction_grace)]

    def start(self):
        from distributed import Client
        self.started_at = time.time()      # the scheduler VM is billed from its request on
        kwargs, cluster_class = self.cluster_kwargs, BatchnbAzureVMCluster
        if self.adopted is not None:       # on the scheduler VM, by its agent: the nodes only
            kwargs, cluster_class = adopt(self), AdoptingAzureVMCluster
        else:
            prepare_wheel(self.boot, self.wheel_store, self.wheel_storage_options, self.start_timeout)
        self._config_before = copy.deepcopy(dask.config.config)   # AzureVMCluster sets TLS settings globally
        box: dict = {}

        def make():
            try:
                box["cluster"] = cluster_class(
                    group_options=self._group_options(), boot=self.boot, start_timeout=self.start_timeout,
                    create_concurrency=self.create_concurrency, **kwargs)
            except BaseException as exc:
                box["error"] = exc
        thread = threading.Thread(target=make, name="batchnb-azure-start", daemon=True)
        thread.start()
        thread.join(self.start_timeout + 300)     # the scheduler VM's own deadline, then its deletion
        if thread.is_alive():
            raise BackendError(f"the Azure scheduler VM did not come up within {self.start_timeout:g}s "
                               "(start_timeout=) nor was it deleted in 300 s more; check the resource group")
        if "error" in box:
            self._restore_config()
            exc = box["error"]
            raise BackendError(f"cannot start Azure VMs: {type(exc).__name__}: {exc}") from exc
        self.cluster = box["cluster"]
        try:
            client = Client(self.cluster, security=self.cluster.security, set_as_default=False)
            initial = {"dedicated": self.spec.dedicated or 0, "spot": self.spec.spot}
            for group, count in initial.items():
                for _ in range(count):
                    self._add(group)
            self._apply()
        except BaseException:
            self.close()        # no VM is left behind by a pool that failed to start
            raise
        return client

    def _worker_spec(self, group: str, node_id: str) -> dict:
        return self.cluster.group_spec(group, node_id)

    def scheduler_vm_size(self) -> str | None:
        """The scheduler's VM, billed for the pool's life: ``scheduler_vm_size``, else the
        nodes' size, else dask-cloudprovider's configured default (what it then asks Azure for)."""
        return (self.cluster_kwargs.get("scheduler_vm_size") or self.cluster_kwargs.get("vm_size")
                or dask.config.get("cloudprovider.azure.azurevm.scheduler_vm_size", None)
                or dask.config.get("cloudprovider.azure.azurevm.vm_size", None))

    def preemptible(self, node_id: str) -> bool:
        return self.requested().get(node_id) == "spot"

    def preempt(self, node_id: str) -> None:
        """Ask Azure to evict a spot VM now (what Azure does on its own when it needs the capacity)."""
        if self.requested().get(node_id) != "spot":
            raise BackendError(f"only spot nodes can be evicted; {node_id!r} is not a spot node of this pool")
        self.cluster.compute_client.virtual_machines.simulate_eviction(
            self.cluster.resource_group, vm_name(self.cluster.uuid, node_id))

    def restore(self, node_id: str) -> None:
        """A new VM for an evicted node (the old one is gone or going: its deletion errors are ignored)."""
        group = self.requested().get(node_id)
        if group is None:
            return
        self.cluster.loop.add_callback(self._restore_on_loop, node_id, group)

    async def _restore_on_loop(self, node_id: str, group: str) -> None:
        old = self.cluster.workers.pop(node_id, None)
        if old is not None:
            try:
                await old.close()
            except Exception as exc:
                log.info("node %s: cleaning up the evicted VM: %s", node_id, exc)
        self._add(group, node_id)
        await self.cluster._correct_state()

    def _restore_config(self) -> None:
        if self._config_before is not None:
            dask.config.config.clear()
            dask.config.config.update(self._config_before)
            self._config_before = None

    def close(self) -> None:
        try:
            if self.cluster is not None:
                self.cluster.close(timeout=120)
        finally:
            self._restore_config()

    def leave_scheduler(self) -> None:
        """The agent on the scheduler VM is done (its pool closed): it deletes that VM, last."""
        if self.adopted is not None and self.cluster is not None:
            delete_own_vm(self)
