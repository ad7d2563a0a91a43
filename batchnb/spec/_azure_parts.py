"""Pieces of the Azure Batch REST import (:mod:`batchnb.spec.azure`).

What is kept or only warned about (:class:`Ctx`), readers that check each
field's JSON type as they take it (a wrong one is a SpecError naming the
field, never a TypeError from deep inside), and the conversion of resource
files and output files, whose blob URLs become fsspec URLs.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from typing import Any, Mapping
from urllib.parse import urlsplit

from . import model as s
from . import validate as v
from ..errors import AzureImportWarning, SpecError

# Status of a listed object (GET responses), not part of what was asked for.
READ_ONLY = frozenset({
    "odata.metadata", "odata.nextLink", "url", "eTag", "lastModified", "creationTime", "state",
    "stateTransitionTime", "previousState", "previousStateTransitionTime", "executionInfo", "nodeInfo", "stats",
    "allocationState", "allocationStateTransitionTime", "currentDedicatedNodes", "currentLowPriorityNodes",
    "resizeErrors", "autoScaleRun", "currentNodeCommunicationMode", "resizeTimeout"})

# Fields with no batchnb counterpart, and why.
WHY = {
    "displayName": "batchnb ids are the names",
    "userIdentity": "tasks run as the user of the node's Dask worker",
    "registry": "registry credentials are never recorded: log the nodes in (podman login) in the start task",
    "containerHostBatchBindMounts": "the task's own folders are mounted; mount others with containerRunOptions",
    "affinityInfo": "placement follows free slots and node_fill",
    "applicationPackageReferences": "give bnb.AppPackage(name, version, url) to the Pool",
    "authenticationTokenSettings": "tasks get no Batch service token",
    "identityReference": "give credentials in the pool's storage_options",
    "uploadHeaders": "uploads carry no custom headers",
    "jobManagerTask": "drive the job from a notebook or script instead",
    "retentionTime": "the preparation and release folders stay on the node with the job's other folders",
    "resourceFiles": "a job release task takes no inputs: it works on what the preparation task left",
    "networkConfiguration": "networking is the backend's business (bnb.Pool(..., vnet=...))",
    "maxParallelTasks": "not supported yet",
    "allowTaskPreemption": "not supported yet",
    "virtualMachineConfiguration": "VM images are the backend's business",
    "cloudServiceConfiguration": "VM images are the backend's business",
    "certificateReferences": "not supported", "userAccounts": "not supported",
    "mountConfiguration": "mount storage with fsspec URLs instead", "identity": "not supported",
    "targetNodeCommunicationMode": "not supported", "upgradePolicy": "not supported",
    "resourceTags": "use tags=", "poolLifetimeOption": "the Pool lives as long as its process",
    "keepAlive": "the Pool lives as long as its process", "autoPoolIdPrefix": "the pool is named by the job",
}
_BLOB_HOST = re.compile(r"^(?P<account>[a-z0-9]+)\.(?:blob|dfs)\.core\.windows\.net$", re.I)


class Ctx:
    """Collects what was not converted, so that each field is warned about once."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.skipped: dict[str, list[str]] = {}
        self.status: set[str] = set()
        self.notes: list[str] = []

    def take(self, obj: Mapping, where: str, known: set[str], prefix: str = "") -> None:
        for key in obj:
            if key in known:
                continue
            name = key if isinstance(key, str) else repr(key)
            if name in READ_ONLY:
                self.status.add(prefix + name)
                continue
            if self.strict:
                raise SpecError(f"{where}.{prefix}{name}", obj[key],
                                f"batchnb cannot keep this field ({WHY.get(name, 'unknown field')})")
            self.skipped.setdefault(prefix + name, []).append(where)

    def emit(self) -> None:
        for key, where in sorted(self.skipped.items()):
            last = key.rsplit(".", 1)[-1]
            places = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
            warnings.warn(f"from_azure: field {key!r} ({places}) is not supported and was ignored: "
                          f"{WHY.get(last, 'unknown field')}", AzureImportWarning, stacklevel=4)
        if self.status:
            warnings.warn(f"from_azure: read-only status fields ignored: {', '.join(sorted(self.status))}",
                          AzureImportWarning, stacklevel=4)
        for note in self.notes:
            warnings.warn(f"from_azure: {note}", AzureImportWarning, stacklevel=4)


# -- fields read with their JSON type checked ------------------------------------------
def obj(value: Any, field: str) -> Mapping:
    """A JSON object (None: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(field, value, "expected a JSON object")
    return value


def array(value: Any, field: str) -> list:
    """A JSON array (None: an empty one). A string is refused: it would be read as its characters."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise SpecError(field, value, "expected a JSON array")
    return list(value)


def text(value: Any, field: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise SpecError(field, value, "expected a string" + (" (required)" if required else ""))
    return value


def flag(value: Any, field: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(field, value, "expected true or false")
    return value


def whole(value: Any, field: str, *, minimum: int | None = None) -> int | None:
    return v.integer(value, field, minimum=minimum, allow_none=True)


def env(items: Any, field: str) -> dict:
    """``[{name, value}, ...]`` (environmentSettings, metadata) -> a dict of strings."""
    out = {}
    for i, item in enumerate(array(items, field)):
        item = obj(item, f"{field}[{i}]")
        name = text(item.get("name"), f"{field}[{i}].name", required=True)
        value = item.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            raise SpecError(f"{field}[{i}].value", value, "expected a string")
        out[name] = "" if value is None else str(value)
    return out


# -- resource files and output files ---------------------------------------------------
def _host(url: str, field: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError as exc:       # e.g. an unclosed '[' of an IPv6 address
        raise SpecError(field, url, f"not a URL ({exc})") from None


def blob(url: str, field: str, ctx: Ctx) -> tuple[str, str]:
    """(fsspec URL of the container, path inside it) for an Azure blob URL; SAS tokens dropped."""
    host = _host(url, field)
    parts = urlsplit(url)
    if parts.query:
        ctx.notes.append(f"{field}: the query (SAS token) of {parts.scheme}://{parts.netloc}{parts.path} is not "
                         "kept, as specs are recorded; give credentials in the pool's storage_options")
    m = _BLOB_HOST.match(host)
    path = parts.path.lstrip("/")
    if m:
        container, _, rest = path.partition("/")
        return f"abfs://{container}@{m['account']}.dfs.core.windows.net", rest
    if not parts.scheme or not parts.netloc:
        raise SpecError(field, url, "expected a blob URL such as 'https://account.blob.core.windows.net/container'")
    # Path-style (Azurite, Azure Stack): http://host:port/account/container/...
    _account, _, path = path.partition("/")
    container, _, rest = path.partition("/")
    ctx.notes.append(f"{field}: the endpoint {parts.scheme}://{parts.netloc} of {url.split('?')[0]} is not kept "
                     "in the URL; give it in storage_options (e.g. {'abfs': {'connection_string': ...}})")
    return f"abfs://{container}", rest


def join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/") if path else base.rstrip("/") + "/"


def inputs(items: Any, ctx: Ctx, where: str, field: str) -> tuple:
    out = []
    for i, rf in enumerate(array(items, f"{where} {field}")):
        f = f"{where} {field}[{i}]"
        rf = obj(rf, f)
        ctx.take(rf, where, {"httpUrl", "storageContainerUrl", "autoStorageContainerName", "blobPrefix",
                             "filePath", "fileMode"}, f"{field}.")
        mode, path = rf.get("fileMode"), text(rf.get("filePath"), f"{f}.filePath")
        if rf.get("httpUrl"):
            if not path:
                raise SpecError(f"{f}.filePath", path, "is required with httpUrl")
            url = text(rf["httpUrl"], f"{f}.httpUrl")
            # Only Azure blob URLs become abfs:// (their SAS dropped); any other http(s)
            # URL, query string included (pre-signed S3, versioned files), is kept as it is.
            if _BLOB_HOST.match(_host(url, f"{f}.httpUrl")):
                base, name = blob(url, f, ctx)
                url = join(base, name)
            out.append(s.ResourceFile(path, url, mode))
            continue
        if rf.get("storageContainerUrl"):
            base, rest = blob(text(rf["storageContainerUrl"], f"{f}.storageContainerUrl"), f, ctx)
            base = join(base, rest).rstrip("/")
        elif rf.get("autoStorageContainerName"):
            base = f"az://{text(rf['autoStorageContainerName'], f'{f}.autoStorageContainerName')}"
        else:
            raise SpecError(f, rf, "needs httpUrl, storageContainerUrl or autoStorageContainerName")
        prefix = (text(rf.get("blobPrefix"), f"{f}.blobPrefix") or "").lstrip("/")
        folder = prefix if prefix.endswith("/") or not prefix else posixpath.dirname(prefix) + "/"
        if prefix and folder != prefix:
            ctx.notes.append(f"{f}: blobPrefix {prefix!r} is not a folder; all of {folder or '/'!r} is fetched")
        folder = folder.lstrip("/")
        # Azure keeps each blob's full name below filePath; a prefix URL keeps names below the prefix.
        target = posixpath.join(path or ".", folder.rstrip("/")) if folder else (path or ".")
        out.append(s.ResourceFile(posixpath.normpath(target), join(base, folder), mode))
    return tuple(out)


_CONDITIONS = {"tasksuccess": "success", "taskfailure": "failure", "taskcompletion": "completion"}


def outputs(items: Any, ctx: Ctx, where: str) -> tuple:
    out = []
    for i, of in enumerate(array(items, f"{where} outputFiles")):
        f = f"{where} outputFiles[{i}]"
        of = obj(of, f)
        ctx.take(of, where, {"filePattern", "destination", "uploadOptions"}, "outputFiles.")
        pattern = text(of.get("filePattern"), f"{f}.filePattern", required=True)
        for head in ("$AZ_BATCH_TASK_WORKING_DIR/", "${AZ_BATCH_TASK_WORKING_DIR}/"):
            pattern = pattern[len(head):] if pattern.startswith(head) else pattern
        if pattern.startswith("../") and "/" not in pattern[3:]:
            pattern = pattern[3:]     # the task dir's stdout.txt/stderr.txt: batchnb matches them at top level
        dest = obj(of.get("destination"), f"{f}.destination")
        ctx.take(dest, where, {"container"}, "outputFiles.destination.")
        container = obj(dest.get("container"), f"{f}.destination.container")
        ctx.take(container, where, {"containerUrl", "path"}, "outputFiles.destination.container.")
        url = text(container.get("containerUrl"), f"{f}.destination.container.containerUrl", required=True)
        base, rest = blob(url, f, ctx)
        base = join(base, rest).rstrip("/")
        name = (text(container.get("path"), f"{f}.destination.container.path") or "").strip("/")
        wildcard = any(c in pattern for c in "*?[")
        destination = join(base, name) + ("/" if wildcard and name else "") if (wildcard or not name) \
            else join(base, name)
        opts = obj(of.get("uploadOptions"), f"{f}.uploadOptions")
        ctx.take(opts, where, {"uploadCondition"}, "outputFiles.uploadOptions.")
        cond = text(opts.get("uploadCondition"), f"{f}.uploadOptions.uploadCondition") or "taskCompletion"
        if cond.lower() not in _CONDITIONS:
            raise SpecError(f"{f}.uploadOptions.uploadCondition", cond,
                            "expected taskSuccess, taskFailure or taskCompletion")
        out.append(s.OutputFile(pattern, destination, _CONDITIONS[cond.lower()]))
    return tuple(out)


# -- container settings ----------------------------------------------------------------
def container(value: Any, ctx: Ctx, where: str) -> s.Container | None:
    """``containerSettings`` -> :class:`~batchnb.spec.Container` (its ``registry`` is not kept)."""
    if value is None:
        return None
    f = f"{where} containerSettings"
    cs = obj(value, f)
    if cs.get("registry") is not None:
        # Not through ctx.take: a strict import's error would show the value, password and all.
        if ctx.strict:
            raise SpecError(f"{f}.registry", "<hidden>", f"batchnb cannot keep this field ({WHY['registry']})")
        ctx.skipped.setdefault("containerSettings.registry", []).append(where)
    ctx.take(cs, where, {"imageName", "containerRunOptions", "workingDirectory", "registry"}, "containerSettings.")
    return s.Container(text(cs.get("imageName"), f"{f}.imageName", required=True),
                       options=text(cs.get("containerRunOptions"), f"{f}.containerRunOptions"),
                       working_dir=text(cs.get("workingDirectory"), f"{f}.workingDirectory"))
