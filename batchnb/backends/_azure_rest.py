"""Azure REST shapes for dask-cloudprovider's resource requests.

dask-cloudprovider 2025.9.0 sends the first request of each create and delete from
its event loop's thread (see :class:`_Deferred`), and writes its VM, network-interface and public-IP
requests as flat snake_case dicts (``{"os_profile": {"custom_data": ...}}``),
the attribute names of the older msrest models. The current Azure management
SDKs (azure-mgmt-compute 39, azure-mgmt-network 33) send a dict as it is,
as the request's JSON body, so those names would reach Azure unchanged. Here
each request is put in the REST API's shape (``{"location", "tags",
"properties": {"osProfile": {"customData": ...}}}``), which both SDK
generations send correctly, before it crosses the SDK boundary.

>>> rest_vm({"location": "westeurope", "priority": "Spot", "tags": {"cluster-id": "a1"},
...          "storage_profile": {"os_disk": {"disk_size_gb": 50}}})
{'location': 'westeurope', 'tags': {'cluster-id': 'a1'}, 'properties': {'priority': 'Spot', 'storageProfile': {'osDisk': {'diskSizeGB': 50}}}}
"""

from __future__ import annotations

import threading
from typing import Any

#: REST names that are not plain camelCase of the snake_case ones.
_SPECIAL = {"disk_size_gb": "diskSizeGB", "public_ip_address": "publicIPAddress",
            "public_ip_allocation_method": "publicIPAllocationMethod",
            "public_ip_address_version": "publicIPAddressVersion"}
#: Keys that stay beside ``properties`` (resource envelope), per resource type.
_ENVELOPE = {"vm": {"location", "tags", "plan", "zones", "identity", "extended_location"},
             "nic": {"location", "tags", "extended_location"},
             "ip": {"location", "tags", "sku", "zones", "extended_location"}}


def _camel(key: str) -> str:
    if key in _SPECIAL:
        return _SPECIAL[key]
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _keys(value: Any) -> Any:
    """camelCase every key, recursively (values are left alone)."""
    if isinstance(value, dict):
        return {_camel(k): _keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(v) for v in value]
    return value


def _shape(params: dict, kind: str) -> dict:
    if not isinstance(params, dict) or "properties" in params:
        return params                     # a model, or already in REST shape
    envelope = {_camel(k): (v if k == "tags" else _keys(v)) for k, v in params.items() if k in _ENVELOPE[kind]}
    props = {k: v for k, v in params.items() if k not in _ENVELOPE[kind]}
    return {**envelope, "properties": _keys(props)} if props else envelope


def rest_vm(params: dict) -> dict:
    """A VM request (``virtual_machines.begin_create_or_update``) in REST shape."""
    return _shape(params, "vm")


def rest_nic(params: dict) -> dict:
    """A network-interface request in REST shape (each IP configuration has its own ``properties``)."""
    if not isinstance(params, dict) or "properties" in params:
        return params
    params = dict(params)
    configs = params.pop("ip_configurations", None)
    out = _shape(params, "nic")
    if configs is not None:
        shaped = [{"name": c["name"], "properties": _keys({k: v for k, v in c.items() if k != "name"})}
                  if isinstance(c, dict) and "properties" not in c else c for c in configs]
        out.setdefault("properties", {})["ipConfigurations"] = shaped
    return out


def rest_public_ip(params: dict) -> dict:
    """A public-IP request in REST shape."""
    return _shape(params, "ip")


class _Deferred:
    """A long-running operation whose first request is sent by its first ``wait()``/``result()``.

    dask-cloudprovider writes ``call_async(ops.begin_create_or_update(...).wait)``: the
    ``begin_*`` call, which sends the request and waits for Azure's answer, runs on the
    event loop's thread, so VM requests went one at a time however many were made at
    once. Deferred, the request is sent from the thread pool that runs ``wait``.
    """

    def __init__(self, start):
        self._start, self._poller, self._lock = start, None, threading.Lock()

    def _get(self):
        with self._lock:
            if self._poller is None:
                self._poller = self._start()
        return self._poller

    def wait(self, timeout=None):
        return self._get().wait(timeout)

    def result(self, timeout=None):
        return self._get().result(timeout)

    def __getattr__(self, attr):
        return getattr(self._get(), attr)


class _Operations:
    """One operations group whose ``begin_*`` calls are deferred and whose requests are reshaped."""

    def __init__(self, ops, shape=None):
        self._ops, self._shape = ops, shape or (lambda params: params)

    def begin_create_or_update(self, resource_group, name, params, *args, **kwargs):
        return _Deferred(lambda: self._ops.begin_create_or_update(resource_group, name, self._shape(params),
                                                                  *args, **kwargs))

    def __getattr__(self, attr):
        op = getattr(self._ops, attr)
        if attr.startswith("begin_"):
            return lambda *args, **kwargs: _Deferred(lambda: op(*args, **kwargs))
        return op


class Client:
    """A management client with some operations groups (``groups``) in place of its own."""

    def __init__(self, client, **groups):
        self._client = client
        vars(self).update(groups)

    def __getattr__(self, attr):
        return getattr(self._client, attr)


class Amended:
    """An operations group whose create requests pass through ``amend(name, params)`` first."""

    def __init__(self, ops, amend):
        self._ops, self._amend = ops, amend

    def begin_create_or_update(self, resource_group, name, params, *args, **kwargs):
        return self._ops.begin_create_or_update(resource_group, name, self._amend(name, params), *args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self._ops, attr)


def RestShapedCompute(client) -> Client:  # noqa: N802 - it stands where a client class would
    """A ComputeManagementClient whose VM requests are sent in REST shape."""
    return Client(client, virtual_machines=_Operations(client.virtual_machines, rest_vm),
                  disks=_Operations(client.disks))


def RestShapedNetwork(client) -> Client:  # noqa: N802
    """A NetworkManagementClient whose NIC and public-IP requests are sent in REST shape."""
    return Client(client, network_interfaces=_Operations(client.network_interfaces, rest_nic),
                  public_ip_addresses=_Operations(client.public_ip_addresses, rest_public_ip))
