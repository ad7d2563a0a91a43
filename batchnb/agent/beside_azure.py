"""The creator's side of an Azure pool whose agent runs on its scheduler VM (:mod:`.beside`).

``bnb.Pool("p", backend="azure", ..., agent_on_scheduler=True, detached=True)``:
this machine makes the scheduler VM (with its managed identity and that
identity's role, :class:`~batchnb.backends._azure_adopt.SchedulerVM`), then
registers :class:`~.beside.AgentPlugin` on it over the cluster's TLS, with the
pool's arguments as given and what the agent needs to adopt the scheduler;
no Azure credential of this machine's goes. Once the agent serves, this
process lets go of the VM and keeps a registry record with the cluster's
certificate (whoever holds it is the pool's owner). If the agent does not
start, the VM is deleted from here.
"""

from __future__ import annotations

from ..errors import BackendError


def start_azure(pool_class, name, args, kwargs, timeout, idle):
    """Make the scheduler VM and start the agent on it; (record, security, credential texts)."""
    import cloudpickle
    from distributed import Client

    from .. import spec as specs
    from ..backends._azure_adopt import SchedulerVM
    from ..backends.azure import AzureBackend
    from .beside import OPTION, AgentPlugin
    from .beside_start import _wait_started, common_name
    spec_fields = ("vm_size", "dedicated", "spot", "task_slots_per_node", "start_task")
    spec = specs.PoolSpec(name, backend="azure", **{k: kwargs[k] for k in spec_fields if k in kwargs})
    options = AzureBackend.option_names()
    checked = AzureBackend(spec, **{k: v for k, v in kwargs.items() if k in options and k != OPTION})
    given = {k: v for k, v in kwargs.items() if k != OPTION}
    # Pickled as given, before anything is made with them (what they hold may not travel after).
    boot = {"pool_class": pool_class, "name": name, "args": args, "kwargs": cloudpickle.dumps(given)}
    vm = SchedulerVM(checked)
    try:
        handoff = vm.handoff()
        security = handoff["security"]
        boot["adopt"] = handoff
        try:
            client = Client(vm.address, security=security, timeout=kwargs.get("timeout", 60.0),
                            set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise BackendError(f"cannot reach the pool's scheduler VM at {vm.address}: {exc}") from None
        try:
            client.register_plugin(AgentPlugin(cloudpickle.dumps(boot), common_name(security.tls_client_cert),
                                               idle))
        finally:
            client.close()
        status = _wait_started(vm.address, security, timeout)
    except BaseException:
        vm.delete()
        raise
    vm.let_go()
    record = dict(status, address=vm.address, scheduler=vm.address, scheduler_security=None,
                  scheduler_vm=handoff["scheduler_vm"], role_assignment=vm.role_assignment)
    return record, security, {"ca": security.tls_ca_file, "cert": security.tls_client_cert,
                              "key": security.tls_client_key, "kind": "dask"}
