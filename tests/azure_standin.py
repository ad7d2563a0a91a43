"""A recording stand-in for the Azure management SDK, and a host that boots its "VMs" locally.

No Azure account is reachable from the test machines, so the Azure backend is
tested at the boundary of the Azure management SDK:

- :class:`RecordingAzureSDK` stands in for ``DefaultAzureCredential``,
  ``ComputeManagementClient`` and ``NetworkManagementClient``: every call the
  backend (through dask-cloudprovider) makes is recorded with its arguments,
  so tests assert the exact VM requests that would be sent.
- :class:`LocalVMHost` (optional) plays the VMs: from a VM request's custom
  data (cloud-init) it runs the bootstrap commands and then the command the
  VM's container would run — the TLS-secured Dask scheduler or worker — as
  local processes on 127.0.0.1. It also serves Azure's scheduled-events
  endpoint and, on ``simulate_eviction``, announces a ``Preempt`` and then
  kills the VM, as Azure does.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from email.utils import formatdate
from types import SimpleNamespace

import yaml


class _Poller:
    def __init__(self, result=None):
        self._result = result

    def result(self, timeout=None):
        return self._result

    def wait(self, timeout=None):
        return None

    def done(self):
        return True


class _Credential:
    """Stands in for DefaultAzureCredential; never asked for a token since no request leaves."""

    def get_token(self, *scopes, **kwargs):
        return SimpleNamespace(token="recording-stand-in", expires_on=int(time.time()) + 3600)

    def close(self):
        pass


class _Group:
    """One operations group (``virtual_machines``, ``network_interfaces``...): records every call."""

    def __init__(self, sdk, name, handlers):
        self._sdk, self._name, self._handlers = sdk, name, handlers

    def __getattr__(self, op):
        if op.startswith("_"):
            raise AttributeError(op)

        def call(*args, **kwargs):
            self._sdk.record(f"{self._name}.{op}", args, kwargs)
            handler = self._handlers.get(op)
            if handler is None:
                raise AttributeError(f"RecordingAzureSDK has no {self._name}.{op}")
            return handler(*args, **kwargs)
        return call


class RecordingAzureSDK:
    """A recording stand-in for the Azure management clients the Azure backend uses.

    >>> sdk = RecordingAzureSDK()
    >>> sdk.network_client.subnets.list("rg", "vnet")[0].id.endswith("/subnets/default")
    True
    >>> sdk.calls[0][0]
    'subnets.list'
    """

    def __init__(self, host: "LocalVMHost | None" = None, private_ip: str = "127.0.0.1"):
        self.calls: list[tuple[str, tuple, dict]] = []
        self._lock = threading.Lock()
        self.host = host
        self.ip = private_ip
        self.credential = _Credential()
        self._nics: dict[str, SimpleNamespace] = {}
        self._vms: dict[str, dict] = {}
        #: disk name -> the VM it is attached to (None once that VM is deleted), as Azure keeps them
        self.disks: dict[str, str | None] = {}
        sub = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers"
        self.compute_client = SimpleNamespace(
            virtual_machines=_Group(self, "virtual_machines", {
                "begin_create_or_update": self._create_vm,
                "get": lambda rg, name: SimpleNamespace(name=name, id=f"{sub}/Microsoft.Compute/virtualMachines/{name}"),
                "begin_delete": self._delete_vm,
                "simulate_eviction": self._evict_vm,
            }),
            disks=_Group(self, "disks", {"list_by_resource_group": self._list_disks,
                                         "begin_delete": self._delete_disk}),
        )
        self.network_client = SimpleNamespace(
            subnets=_Group(self, "subnets", {
                "list": lambda rg, vnet: [SimpleNamespace(id=f"{sub}/Microsoft.Network/virtualNetworks/{vnet}/subnets/default")]}),
            network_security_groups=_Group(self, "network_security_groups", {
                "get": lambda rg, name: SimpleNamespace(id=f"{sub}/Microsoft.Network/networkSecurityGroups/{name}")}),
            public_ip_addresses=_Group(self, "public_ip_addresses", {
                "begin_create_or_update": lambda rg, name, params: _Poller(SimpleNamespace(
                    id=f"{sub}/Microsoft.Network/publicIPAddresses/{name}", name=name, ip_address=self.ip)),
                "begin_delete": lambda rg, name: _Poller()}),
            network_interfaces=_Group(self, "network_interfaces", {
                "begin_create_or_update": self._create_nic,
                "get": lambda rg, name: self._nics[name],
                "begin_delete": lambda rg, name: _Poller()}),
        )

    def record(self, op, args, kwargs):
        with self._lock:
            self.calls.append((op, args, kwargs))

    def ops(self, op: str) -> list[tuple]:
        with self._lock:
            return [args for name, args, _ in self.calls if name == op]

    def _create_nic(self, rg, name, params):
        nic = SimpleNamespace(id=f"/nics/{name}", name=name,
                              ip_configurations=[SimpleNamespace(private_ip_address=self.ip)])
        self._nics[name] = nic
        return _Poller(nic)

    def _create_vm(self, rg, name, params):
        with self._lock:
            self._vms[name] = params
            # Azure names a VM's implicit OS disk <vm>_OsDisk_1_<32 hex>; it outlives the VM.
            self.disks[f"{name}_OsDisk_1_{uuid.uuid4().hex}"] = name
        if self.host is not None:
            self.host.boot(name, params)
        return _Poller()

    def _delete_vm(self, rg, name):
        with self._lock:
            self._vms.pop(name, None)
            for disk, vm in self.disks.items():
                if vm == name:
                    self.disks[disk] = None
        if self.host is not None:
            self.host.kill(name)
        return _Poller()

    def _list_disks(self, rg):
        with self._lock:
            return [SimpleNamespace(name=disk, managed_by=vm) for disk, vm in self.disks.items()]

    def _delete_disk(self, rg, name):
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        with self._lock:
            if name not in self.disks:
                raise ResourceNotFoundError(f"(ResourceNotFound) The Resource 'Microsoft.Compute/disks/{name}' "
                                            "under resource group 'rg' was not found.")
            vm = self.disks[name]
            if vm is not None:      # what Azure answers for a disk still attached to a VM
                raise HttpResponseError(f"(OperationNotAllowed) Disk {name} is attached to VM "
                                        f"/subscriptions/.../virtualMachines/{vm}.")
            del self.disks[name]
        return _Poller()

    def _evict_vm(self, rg, name):
        if self.host is not None:
            self.host.evict(name)

    # -- what the tests read -------------------------------------------------------
    def vm_requests(self) -> dict[str, dict]:
        """VM name -> the parameters of its ``virtual_machines.begin_create_or_update``."""
        return {args[1]: args[2] for args in self.ops("virtual_machines.begin_create_or_update")}

    @staticmethod
    def cloud_init(params: dict) -> dict:
        """The decoded cloud-init document of a VM request."""
        return yaml.safe_load(base64.b64decode(params["properties"]["osProfile"]["customData"]).decode())


class LocalVMHost:
    """Boots the recorded VMs as local processes and serves their scheduled events on 127.0.0.1."""

    def __init__(self, image: str = "daskdev/dask:latest", evict_after: float = 1.0):
        self.image = image
        self.evict_after = evict_after
        self.procs: dict[str, list[subprocess.Popen]] = {}
        self.events: list[dict] = []
        self.booted: list[str] = []
        self._lock = threading.Lock()
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with host._lock:
                    body = json.dumps({"DocumentIncarnation": len(host.events), "Events": list(host.events)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metadata/scheduledevents?api-version=2020-07-01"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def boot(self, name: str, params: dict) -> None:
        """Run what the VM's cloud-init would: its bootstrap commands, then its container's command."""
        doc = RecordingAzureSDK.cloud_init(params)
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        procs = []
        for cmd in doc.get("runcmd") or []:
            cmd = str(cmd)
            if cmd.startswith("docker run"):
                inner_env, inner = self._container(cmd)
                procs.append(subprocess.Popen(inner, shell=True, env={**env, **inner_env}, start_new_session=True,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            elif not cmd.startswith(("shutdown", "apt-get", "curl", "add-apt-repository", "systemctl")):
                subprocess.run(cmd, shell=True, env=env, timeout=60)   # bootstrap: the start task
        with self._lock:
            self.procs[name] = procs
            self.booted.append(name)

    def _container(self, cmd: str) -> tuple[dict, str]:
        head, sep, inner = cmd.partition(f" {self.image} ")
        assert sep, f"no image {self.image!r} in {cmd!r}"
        return dict(re.findall(r'-e (\w+)="([^"]*)"', head)), inner

    def kill(self, name: str) -> None:
        with self._lock:
            procs = self.procs.pop(name, [])
        self._kill(procs)

    @staticmethod
    def _kill(procs) -> None:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait(timeout=10)

    def evict(self, name: str) -> None:
        """Announce a Preempt for ``name`` now, and take the VM away ``evict_after`` seconds later."""
        event = {"EventId": str(uuid.uuid4()), "EventType": "Preempt", "ResourceType": "VirtualMachine",
                 "Resources": [name], "EventStatus": "Scheduled",
                 "NotBefore": formatdate(time.time() + self.evict_after, usegmt=True),
                 "EventSource": "Platform", "Description": "Spot eviction"}
        with self._lock:
            self.events.append(event)
            doomed = list(self.procs.get(name, []))   # this VM's processes: a new VM may reuse the name

        def gone():
            # The evicted VM is gone, and with it its events: a new VM of the same name starts clean.
            with self._lock:
                self.events.remove(event)
                if self.procs.get(name) == doomed:
                    self.procs.pop(name)
            self._kill(doomed)
        timer = threading.Timer(self.evict_after, gone)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        self.server.shutdown()
