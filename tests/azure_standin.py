"""A recording stand-in for the Azure management SDK, and a host that boots its "VMs" locally.

No Azure account is reachable from the test machines, so the Azure backend is
tested at the boundary of the Azure management SDK:

- :class:`RecordingAzureSDK` stands in for ``DefaultAzureCredential``,
  ``ComputeManagementClient`` and ``NetworkManagementClient``: every call the
  backend (through dask-cloudprovider) makes is recorded with its arguments,
  so tests assert the exact VM requests that would be sent.
- :class:`LocalVMHost` (optional) plays the VMs: from a VM request's custom
  data (cloud-init) it runs every ``runcmd`` line — batchnb's bootstrap, the
  start task, then the TLS-secured Dask scheduler or worker — as local
  processes on 127.0.0.1, in a clean environment like a fresh VM's: a
  temporary HOME and working folder, a PATH of the system folders only (not
  the test's Python, not its site-packages, not this checkout), so batchnb
  is there only if the bootstrap installed it. It also serves Azure's
  scheduled-events endpoint and, on ``simulate_eviction``, announces a
  ``Preempt`` and then kills the VM, as Azure does.

What it cannot play: apt (cloud-init's ``packages:`` and the bootstrap's
apt-get, which runs only when the interpreter is missing — it is not, here),
systemd, a VM's own disk (the VMs of one host share ``bootstrap_dir``, hence
the bootstrap's flock), Azure's network and its custom-data limit, and a
``docker run`` (it runs the container's command on the host, as before).
:func:`vm_bootstrap_dir` gives a session's ``bootstrap_dir`` whose venv
already holds the pinned dependencies (made once per pins, by the
bootstrap's own venv lines, then copied), and :func:`vm_wheel_store` an
Azurite container for the wheel.

Both pickle (a detached pool's agent gets the pool's ``azure_sdk`` in its boot
message): the copy in the other process records and boots VMs there, so the
VMs' processes belong to that process. Given a ``journal`` file, the SDK
appends every call to it and the host every process it starts, so a test
reads what another process did and stops what it left behind by pid
(tests/azure_journal.py).
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace

import yaml
from azure_journal import append as _append
from azure_journal import created as _created
from azure_journal import kill_journaled_vm as _kill_journaled_vm


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

    def __init__(self, host: "LocalVMHost | None" = None, private_ip: str = "127.0.0.1",
                 journal: str | None = None):
        self.calls: list[tuple[str, tuple, dict]] = []
        self._lock = threading.Lock()
        self.host = host
        self.ip = private_ip
        self.journal = journal
        self.credential = _Credential()
        self._nics: dict[str, SimpleNamespace] = {}
        self._vms: dict[str, dict] = {}
        #: disk name -> the VM it is attached to (None once that VM is deleted), as Azure keeps them
        self.disks: dict[str, str | None] = {}
        sub = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers"
        self.compute_client = SimpleNamespace(
            virtual_machines=_Group(self, "virtual_machines", {
                "begin_create_or_update": self._create_vm,
                "get": lambda rg, name: SimpleNamespace(name=name, id=f"{sub}/Microsoft.Compute/virtualMachines/{name}",
                                                        identity=self._identity(name)),
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
        #: stands in for azure.mgmt.authorization's AuthorizationManagementClient (role assignments)
        self.authorization_client = SimpleNamespace(role_assignments=_Group(self, "role_assignments", {
            "create": lambda scope, name, params: SimpleNamespace(name=name, scope=scope, **params["properties"])}))

    def _identity(self, name):
        """A VM's system-assigned identity, if its request asked for one (its principal id is made up)."""
        with self._lock:
            asked = (self._vms.get(name) or {}).get("identity")
        if not asked:
            return None
        return SimpleNamespace(type=asked["type"], principal_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)))

    def __getstate__(self) -> dict:
        # Locks and the bound handlers do not travel: the copy is rebuilt, with what was made so far.
        with self._lock:
            return {"host": self.host, "ip": self.ip, "journal": self.journal, "calls": list(self.calls),
                    "nics": dict(self._nics), "vms": dict(self._vms), "disks": dict(self.disks)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["host"], state["ip"], state["journal"])
        self.calls, self._nics, self._vms, self.disks = state["calls"], state["nics"], state["vms"], state["disks"]

    def record(self, op, args, kwargs):
        with self._lock:
            self.calls.append((op, args, kwargs))
            if self.journal is not None:
                # Who asked: the process and its group (a VM's processes are one group, see LocalVMHost.boot).
                _append(self.journal, {"op": op, "args": list(args), "caller": os.getpid(),
                                       "caller_group": os.getpgid(0)})

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

    def __init__(self, image: str | None = None, evict_after: float = 1.0, boot_timeout: float = 300.0,
                 journal: str | None = None, boot_gate: str | None = None, *, _home: str | None = None,
                 _port: int | None = None):
        self.image = image
        #: a file that must exist before a VM boots: a test holds VMs in "being provisioned" with it
        self.boot_gate = boot_gate
        self.boot_timeout = boot_timeout
        # Under the test session's home, which a failing session keeps: the VMs' consoles are
        # what tells why a VM's worker never joined.
        self.home = _home or tempfile.mkdtemp(prefix="bnb-vmhost-", dir=os.environ.get("BATCHNB_TEST_SESSION"))
        os.makedirs(self.home, exist_ok=True)
        self.evict_after = evict_after
        self.journal = journal
        self.procs: dict[str, list[subprocess.Popen]] = {}
        self.events: list[dict] = []
        self.booted: list[str] = []
        self._lock = threading.Lock()
        # The endpoint's port is fixed now, its server started by the first boot: a pickled copy
        # (a detached pool's agent) serves it from the process whose VMs poll it.
        self.port = _port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/metadata/scheduledevents?api-version=2020-07-01"
        self.server = None

    def __getstate__(self) -> dict:
        with self._lock:
            if self.procs:
                raise TypeError("a LocalVMHost with running VMs cannot be copied to another process")
        return {"image": self.image, "evict_after": self.evict_after, "boot_timeout": self.boot_timeout,
                "journal": self.journal, "boot_gate": self.boot_gate, "_home": self.home, "_port": self.port}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _serve(self) -> None:
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
        with self._lock:
            if self.server is None:
                self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def boot(self, name: str, params: dict) -> None:
        """Run what the VM's cloud-init would: its runcmd lines in order, the Dask process left running."""
        doc = RecordingAzureSDK.cloud_init(params)
        if not any("distributed.cli.dask_scheduler" in str(cmd) for cmd in doc.get("runcmd") or []):
            # Only nodes poll scheduled events: the host copy that boots the scheduler VM (the
            # creator's, when the agent runs on that VM) leaves the port to the one that boots nodes.
            self._serve()
        deadline = time.monotonic() + self.boot_timeout
        while self.boot_gate and not os.path.exists(self.boot_gate) and time.monotonic() < deadline:
            time.sleep(0.05)        # the test opens the gate from another process: a file is all it has
        env = clean_env(self.home)
        procs = []
        console = os.path.join(self.home, f"{name}.log")      # cloud-init-output.log: every line's output
        for cmd in doc.get("runcmd") or []:
            cmd = str(cmd)
            if cmd.startswith("shutdown"):
                continue
            with open(console, "ab") as log:
                log.write(f"{time.strftime('%H:%M:%S')} runcmd: {cmd[:200]}\n".encode())
                log.flush()
                if " -m distributed.cli.dask_" in cmd:
                    if self.image and cmd.split(" && ")[-1].startswith("docker run"):
                        inner_env, cmd = self._container(cmd)
                        env = {**env, **inner_env}
                    proc = subprocess.Popen(cmd, shell=True, env=env, cwd=self.home, start_new_session=True,
                                            stdout=log, stderr=subprocess.STDOUT)
                    procs.append(proc)
                    if self.journal is not None:
                        _append(self.journal, {"vm": name, "pid": proc.pid, "created": _created(proc.pid)})
                else:      # the bootstrap, the start task: in order, to completion
                    done = subprocess.run(cmd, shell=True, env=env, cwd=self.home, timeout=self.boot_timeout,
                                          stdout=log, stderr=subprocess.STDOUT)
                    log.write(f"{time.strftime('%H:%M:%S')} exit {done.returncode}\n".encode())
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
        if not procs and self.journal is not None:
            # Booted by another copy of this host (the creator's made the scheduler VM its agent
            # runs on): its processes are found in the journal. The caller may be one of them (a
            # VM deleting itself): they end a moment later, as Azure ends a VM after the request.
            threading.Timer(0.5, _kill_journaled_vm, (self.journal, name)).start()
            return
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
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if not os.environ.get("BATCHNB_TEST_SESSION"):
            shutil.rmtree(self.home, ignore_errors=True)   # else the session's end removes it, if it passed


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The system folders of a fresh VM's PATH: not this test's Python (pyenv), nor ~/.local.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def clean_env(home: str) -> dict:
    """A fresh VM's environment: HOME, the system PATH, and pip's registry settings (the machine's mirror).

    No PYTHONPATH, no VIRTUAL_ENV, no test Python on PATH; commands run in ``home``
    (a working folder of this checkout would put its batchnb on ``sys.path``).
    """
    env = {"HOME": home, "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "USER": os.environ.get("USER", "root")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_") and k != "PIP_REQUIRE_VIRTUALENV"})
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    return env


_session: dict = {}


def vm_venv_cache() -> Path:
    """The cached venv with the pinned dependencies (~/.cache/batchnb-tests/vm-venv), made if missing.

    ``make setup-test`` makes it (``python tests/azure_standin.py build-vm-venv``), so the
    suite's first Azure pool does not wait minutes on PyPI; a test makes it only when the
    pins changed since.
    """
    from batchnb.backends._azure_bootstrap import driver_pins, pins_marker, venv_script
    pins = driver_pins()
    cache = Path.home() / ".cache" / "batchnb-tests" / "vm-venv" / pins_marker(pins).lstrip(".")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache / pins_marker(pins)).exists():
            home = tempfile.mkdtemp(prefix="bnb-vmcache-")
            try:
                subprocess.run(["sh", "-ec", venv_script(str(cache), pins, apt=False)], env=clean_env(home),
                               cwd=home, timeout=600, check=True)
            finally:
                shutil.rmtree(home, ignore_errors=True)
    return cache


def vm_bootstrap_dir() -> str:
    """This test session's ``bootstrap_dir`` for the VMs: a venv with the pinned dependencies, no batchnb.

    The venv is made once per set of pins (by the bootstrap's own venv lines, in a
    clean environment, with pip's cache), kept under ~/.cache/batchnb-tests, and copied
    here: PyPI takes about two minutes, a copy about a second. Removed at exit.
    """
    if "root" in _session:
        return _session["root"]
    cache = vm_venv_cache()
    root = tempfile.mkdtemp(prefix="bnb-vm-")
    shutil.copytree(cache, Path(root) / "venv", symlinks=True)
    atexit.register(shutil.rmtree, root, True)
    _session["root"] = root
    return root


def vm_wheel_store() -> tuple[str, dict]:
    """(``wheel_store``, ``wheel_storage_options``): a container on an Azurite of this session's own.

    Started on first use and stopped, by its pid, at exit (module-level, not a fixture:
    plain helpers such as test_azure_backend.azure_options need it).
    """
    if "azurite" not in _session:
        from azurite_fixture import Azurite
        az = Azurite()
        az.start()
        atexit.register(az.stop)
        atexit.register(shutil.rmtree, str(az.location), True)
        container = f"wheels{uuid.uuid4().hex[:12]}"
        az.fs().mkdir(container)
        _session["azurite"] = (f"abfs://{container}/batchnb", az.storage_options)
    return _session["azurite"]


if __name__ == "__main__":      # make setup-test: python tests/azure_standin.py build-vm-venv
    import sys
    if sys.argv[1:] != ["build-vm-venv"]:
        sys.exit("usage: python tests/azure_standin.py build-vm-venv")
    print(vm_venv_cache())
