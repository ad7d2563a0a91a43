"""Azure Batch REST JSON -> batchnb specs (``bnb.spec.from_azure``).

Takes what the Batch REST API (and ``az batch ... --json-file``) takes or
returns: a job, a task, a task collection ``{"value": [...]}`` (or a plain
list of tasks) or a pool, as a dict, JSON text or a path to a JSON file.

Kept: ``commandLine`` (split into argv as Azure does: it runs no shell),
``resourceFiles`` (``httpUrl``, ``storageContainerUrl`` + ``blobPrefix``,
``autoStorageContainerName``; ``filePath``, ``fileMode``), ``outputFiles``
(``filePattern``, ``destination.container.containerUrl`` + ``path``,
``uploadOptions.uploadCondition``), ``environmentSettings``, ``constraints``
(ISO 8601 durations such as ``PT1H30M``), ``dependsOn`` (``taskIds``,
``taskIdRanges``), ``exitConditions``, ``requiredSlots``,
``multiInstanceSettings``, ``priority``; for pools ``vmSize``, node targets,
autoscale, ``taskSlotsPerNode``, ``taskSchedulingPolicy`` and ``startTask``.

Blob URLs become ``abfs://container@account.dfs.core.windows.net/path``.
A SAS token is never kept (specs are recorded in the ledger): give
credentials in the pool's ``storage_options``. Every field that is not
converted - unsupported, or a read-only status field of a listed object -
is named in an :class:`AzureImportWarning`; ``strict=True`` makes an
unsupported field a :class:`~batchnb.SpecError` instead.

>>> spec = from_azure({"id": "t1", "commandLine": "/bin/sh -c 'echo hi'",
...                    "constraints": {"maxWallClockTime": "PT1H30M"}})
>>> spec.command, spec.max_wall_clock
(('/bin/sh', '-c', 'echo hi'), 5400.0)
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import warnings
from typing import Any, Mapping
from urllib.parse import urlsplit

from . import model as s
from .codec import to_dict
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
    "containerSettings": "tasks run on the node itself, not in a container",
    "affinityInfo": "placement follows free slots and node_fill",
    "applicationPackageReferences": "give bnb.AppPackage(name, version, url) to the Pool",
    "authenticationTokenSettings": "tasks get no Batch service token",
    "identityReference": "give credentials in the pool's storage_options",
    "uploadHeaders": "uploads carry no custom headers",
    "jobManagerTask": "drive the job from a notebook or script instead",
    "jobPreparationTask": "not supported yet",
    "jobReleaseTask": "not supported yet",
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
_INFINITE = 10_000 * 86400.0        # TimeSpan.MaxValue in GET responses means "no limit"
_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_BLOB_HOST = re.compile(r"^(?P<account>[a-z0-9]+)\.(?:blob|dfs)\.core\.windows\.net$", re.I)


def iso_duration(value: Any, field: str) -> float | None:
    """Seconds from an ISO 8601 duration (``PT1H30M``, ``P1DT2H``, ``PT0.5S``).

    >>> iso_duration("PT1H30M", "maxWallClockTime")
    5400.0
    """
    if value is None:
        return None
    m = _ISO.match(value.strip().upper()) if isinstance(value, str) else None
    if not m or not any(m.groups()):
        raise SpecError(field, value, "expected an ISO 8601 duration such as 'PT1H30M' or 'P1D'")
    d, h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
    seconds = d * 86400 + h * 3600 + mi * 60 + sec
    return None if seconds >= _INFINITE else seconds


class _Ctx:
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
            if key in READ_ONLY:
                self.status.add(prefix + key)
                continue
            if self.strict:
                raise SpecError(f"{where}.{prefix}{key}", obj[key],
                                f"batchnb cannot keep this field ({WHY.get(key, 'unknown field')})")
            self.skipped.setdefault(prefix + key, []).append(where)

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


def _read(obj: Any) -> Any:
    if isinstance(obj, (str, bytes, os.PathLike)):
        text = os.fspath(obj) if not isinstance(obj, bytes) else obj.decode()
        if isinstance(obj, (bytes, os.PathLike)) or not text.lstrip().startswith(("{", "[")):
            try:
                with open(text if not isinstance(obj, bytes) else obj, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise SpecError("from_azure", obj, f"cannot be read: {exc.strerror}") from None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SpecError("from_azure", text[:80], f"not valid JSON: {exc}") from None
    return obj


def from_azure(obj: Any, *, tasks: Any = None, strict: bool = False):
    """Specs from Azure Batch REST JSON.

    Returns a :class:`~batchnb.spec.TaskSpec` for a task, a list of them for
    a task collection, a :class:`~batchnb.spec.JobSpec` for a job (holding
    ``tasks`` converted too, when given) and a :class:`~batchnb.spec.PoolSpec`
    for a pool.
    """
    obj = _read(obj)
    ctx = _Ctx(strict)
    if isinstance(obj, list) or (isinstance(obj, Mapping) and isinstance(obj.get("value"), list)):
        out = _tasks(obj, ctx)
    elif not isinstance(obj, Mapping):
        raise SpecError("from_azure", obj, "expected a job, a task, {'value': [tasks]} or a pool (a JSON object)")
    elif "commandLine" in obj:
        out = _task(obj, ctx, env={})
    elif any(k in obj for k in ("vmSize", "targetDedicatedNodes", "targetLowPriorityNodes", "enableAutoScale",
                                "virtualMachineConfiguration", "taskSlotsPerNode")):
        out = _pool(obj, ctx, "pool")
    elif "id" in obj:
        out = _job(obj, ctx, tasks)
    else:
        raise SpecError("from_azure", sorted(obj)[:8], "not a job, task, task collection or pool: "
                        "a task has 'commandLine', a pool 'vmSize', a job 'id' and 'poolInfo'")
    if tasks is not None and not isinstance(out, s.JobSpec):
        raise SpecError("tasks", "...", "tasks= goes with a job")
    ctx.emit()
    return out


def _tasks(obj, ctx: _Ctx, env: Mapping | None = None) -> list[s.TaskSpec]:
    items = obj if isinstance(obj, list) else obj["value"]
    if isinstance(obj, Mapping):
        ctx.take(obj, "task collection", {"value"})
    return [_task(t, ctx, env or {}) for t in items]


def _env(items: Any, field: str) -> dict:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise SpecError(field, items, "expected a list of {name, value}")
    out = {}
    for item in items:
        if not isinstance(item, Mapping) or "name" not in item:
            raise SpecError(field, item, "expected {name, value}")
        out[item["name"]] = "" if item.get("value") is None else str(item["value"])
    return out


def _command(line: Any, field: str) -> tuple:
    if not isinstance(line, str) or not line.strip():
        raise SpecError(field, line, "expected a non-empty command line")
    try:
        return tuple(shlex.split(line))
    except ValueError as exc:
        raise SpecError(field, line, f"cannot be split into arguments: {exc}") from None


def _task(t: Any, ctx: _Ctx, env: Mapping) -> s.TaskSpec:
    if not isinstance(t, Mapping) or "id" not in t:
        raise SpecError("task", t, "expected an Azure Batch task with at least 'id' and 'commandLine'")
    where = f"task {t['id']!r}"
    ctx.take(t, where, {"id", "commandLine", "resourceFiles", "outputFiles", "environmentSettings", "constraints",
                        "dependsOn", "exitConditions", "requiredSlots", "multiInstanceSettings", "priority"})
    cons = t.get("constraints") or {}
    ctx.take(cons, where, {"maxWallClockTime", "maxTaskRetryCount", "retentionTime"}, "constraints.")
    retries = cons.get("maxTaskRetryCount")
    deps = []
    dep = t.get("dependsOn") or {}
    ctx.take(dep, where, {"taskIds", "taskIdRanges"}, "dependsOn.")
    deps += list(dep.get("taskIds") or ())
    for r in dep.get("taskIdRanges") or ():
        deps.append(s.TaskIdRange(r.get("start"), r.get("end")))
    multi = None
    if t.get("multiInstanceSettings") is not None:
        m = t["multiInstanceSettings"]
        ctx.take(m, where, {"numberOfInstances", "coordinationCommandLine", "commonResourceFiles"},
                 "multiInstanceSettings.")
        multi = s.MultiInstance(number_of_instances=m.get("numberOfInstances", 1),
                                coordination_command=m.get("coordinationCommandLine"),
                                common_inputs=_inputs(m.get("commonResourceFiles"), ctx, where, "commonResourceFiles"))
    return s.TaskSpec(
        id=t["id"], command=_command(t.get("commandLine"), f"{where} commandLine"),
        inputs=_inputs(t.get("resourceFiles"), ctx, where, "resourceFiles"),
        outputs=_outputs(t.get("outputFiles"), ctx, where),
        env={**env, **_env(t.get("environmentSettings"), f"{where} environmentSettings")},
        depends_on=deps,
        max_wall_clock=iso_duration(cons.get("maxWallClockTime"), f"{where} constraints.maxWallClockTime"),
        retention_time=iso_duration(cons.get("retentionTime"), f"{where} constraints.retentionTime"),
        retry=s.Retry(max=retries) if retries is not None else None,
        required_slots=t.get("requiredSlots", 1), priority=t.get("priority"),
        exit_conditions=_exit_conditions(t.get("exitConditions"), ctx, where), multi_instance=multi)


def _exit_conditions(ec: Any, ctx: _Ctx, where: str):
    if not ec:
        return None

    def opts(item: Mapping, field: str) -> s.ExitOptions:
        o = item.get("exitOptions", item) if field != "default" and "exitOptions" in item else item
        ctx.take(o, where, {"jobAction", "dependencyAction"}, f"exitConditions.{field}.")
        return s.ExitOptions(job_action=o.get("jobAction") or "none", dependency_action=o.get("dependencyAction"))

    ctx.take(ec, where, {"exitCodes", "exitCodeRanges", "preProcessingError", "fileUploadError", "default"},
             "exitConditions.")
    mapping: dict[Any, s.ExitOptions] = {}
    for item in ec.get("exitCodes") or ():
        ctx.take(item, where, {"code", "exitOptions"}, "exitConditions.exitCodes.")
        mapping[int(item["code"])] = opts(item, "exitCodes")
    for item in ec.get("exitCodeRanges") or ():
        ctx.take(item, where, {"start", "end", "exitOptions"}, "exitConditions.exitCodeRanges.")
        mapping[(int(item["start"]), int(item["end"]))] = opts(item, "exitCodeRanges")
    for azure, ours in (("preProcessingError", "pre_processing_error"), ("fileUploadError", "file_upload_error"),
                        ("default", "default")):
        if ec.get(azure) is not None:
            mapping[ours] = opts(ec[azure], azure)
    return s.ExitConditions.from_mapping(mapping)


def _blob(url: str, field: str, ctx: _Ctx) -> tuple[str, str]:
    """(fsspec URL of the container, path inside it) for an Azure blob URL; SAS tokens dropped."""
    parts = urlsplit(url)
    if parts.query:
        ctx.notes.append(f"{field}: the query (SAS token) of {parts.scheme}://{parts.netloc}{parts.path} is not "
                         "kept, as specs are recorded; give credentials in the pool's storage_options")
    m = _BLOB_HOST.match(parts.hostname or "")
    path = parts.path.lstrip("/")
    if m:
        container, _, rest = path.partition("/")
        return f"abfs://{container}@{m['account']}.dfs.core.windows.net", rest
    # Path-style (Azurite, Azure Stack): http://host:port/account/container/...
    _account, _, path = path.partition("/")
    container, _, rest = path.partition("/")
    ctx.notes.append(f"{field}: the endpoint {parts.scheme}://{parts.netloc} of {url.split('?')[0]} is not kept "
                     "in the URL; give it in storage_options (e.g. {'abfs': {'connection_string': ...}})")
    return f"abfs://{container}", rest


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/") if path else base.rstrip("/") + "/"


def _inputs(items: Any, ctx: _Ctx, where: str, field: str) -> tuple:
    out = []
    for i, rf in enumerate(items or ()):
        f = f"{where} {field}[{i}]"
        ctx.take(rf, where, {"httpUrl", "storageContainerUrl", "autoStorageContainerName", "blobPrefix",
                             "filePath", "fileMode"}, f"{field}.")
        mode, path = rf.get("fileMode"), rf.get("filePath")
        if rf.get("httpUrl"):
            if not path:
                raise SpecError(f"{f}.filePath", path, "is required with httpUrl")
            url = rf["httpUrl"]
            if not isinstance(url, str):
                raise SpecError(f"{f}.httpUrl", url, "expected a URL string")
            # Only Azure blob URLs become abfs:// (their SAS dropped); any other http(s)
            # URL, query string included (pre-signed S3, versioned files), is kept as it is.
            if _BLOB_HOST.match(urlsplit(url).hostname or ""):
                base, blob = _blob(url, f, ctx)
                url = _join(base, blob)
            out.append(s.ResourceFile(path, url, mode))
            continue
        if rf.get("storageContainerUrl"):
            if not isinstance(rf["storageContainerUrl"], str):
                raise SpecError(f"{f}.storageContainerUrl", rf["storageContainerUrl"], "expected a URL string")
            base, rest = _blob(rf["storageContainerUrl"], f, ctx)
            base = _join(base, rest).rstrip("/")
        elif rf.get("autoStorageContainerName"):
            base = f"az://{rf['autoStorageContainerName']}"
        else:
            raise SpecError(f, rf, "needs httpUrl, storageContainerUrl or autoStorageContainerName")
        prefix = (rf.get("blobPrefix") or "").lstrip("/")
        folder = prefix if prefix.endswith("/") or not prefix else posixpath.dirname(prefix) + "/"
        if prefix and folder != prefix:
            ctx.notes.append(f"{f}: blobPrefix {prefix!r} is not a folder; all of {folder or '/'!r} is fetched")
        folder = folder.lstrip("/")
        # Azure keeps each blob's full name below filePath; a prefix URL keeps names below the prefix.
        target = posixpath.join(path or ".", folder.rstrip("/")) if folder else (path or ".")
        out.append(s.ResourceFile(posixpath.normpath(target), _join(base, folder), mode))
    return tuple(out)


_CONDITIONS = {"tasksuccess": "success", "taskfailure": "failure", "taskcompletion": "completion"}


def _outputs(items: Any, ctx: _Ctx, where: str) -> tuple:
    out = []
    for i, of in enumerate(items or ()):
        f = f"{where} outputFiles[{i}]"
        ctx.take(of, where, {"filePattern", "destination", "uploadOptions"}, "outputFiles.")
        pattern = of.get("filePattern")
        if not isinstance(pattern, str) or not pattern:
            raise SpecError(f"{f}.filePattern", pattern, "expected a file pattern")
        for head in ("$AZ_BATCH_TASK_WORKING_DIR/", "${AZ_BATCH_TASK_WORKING_DIR}/"):
            pattern = pattern[len(head):] if pattern.startswith(head) else pattern
        if pattern.startswith("../") and "/" not in pattern[3:]:
            pattern = pattern[3:]     # the task dir's stdout.txt/stderr.txt: batchnb matches them at top level
        dest = of.get("destination") or {}
        ctx.take(dest, where, {"container"}, "outputFiles.destination.")
        container = dest.get("container") or {}
        ctx.take(container, where, {"containerUrl", "path"}, "outputFiles.destination.container.")
        if not container.get("containerUrl"):
            raise SpecError(f"{f}.destination.container.containerUrl", container, "is required")
        base, rest = _blob(container["containerUrl"], f, ctx)
        base = _join(base, rest).rstrip("/")
        blob = (container.get("path") or "").strip("/")
        wildcard = any(c in pattern for c in "*?[")
        destination = _join(base, blob) + ("/" if wildcard and blob else "") if (wildcard or not blob) \
            else _join(base, blob)
        opts = of.get("uploadOptions") or {}
        ctx.take(opts, where, {"uploadCondition"}, "outputFiles.uploadOptions.")
        cond = str(opts.get("uploadCondition", "taskCompletion")).lower()
        if cond not in _CONDITIONS:
            raise SpecError(f"{f}.uploadOptions.uploadCondition", opts.get("uploadCondition"),
                            "expected taskSuccess, taskFailure or taskCompletion")
        out.append(s.OutputFile(pattern, destination, _CONDITIONS[cond]))
    return tuple(out)


def _pool(p: Any, ctx: _Ctx, where: str) -> s.PoolSpec:
    ctx.take(p, where, {"id", "vmSize", "targetDedicatedNodes", "targetLowPriorityNodes", "enableAutoScale",
                        "autoScaleFormula", "autoScaleEvaluationInterval", "taskSlotsPerNode", "maxTasksPerNode",
                        "taskSchedulingPolicy", "startTask", "metadata", "enableInterNodeCommunication"})
    policy = p.get("taskSchedulingPolicy") or {}
    ctx.take(policy, where, {"nodeFillType"}, "taskSchedulingPolicy.")
    auto = bool(p.get("enableAutoScale"))
    if auto and not p.get("autoScaleFormula"):
        raise SpecError(f"{where}.autoScaleFormula", None, "is required when enableAutoScale is true")
    interval = iso_duration(p.get("autoScaleEvaluationInterval"), f"{where}.autoScaleEvaluationInterval")
    start = None
    if p.get("startTask"):
        st = p["startTask"]
        ctx.take(st, f"{where} startTask", {"commandLine", "resourceFiles", "environmentSettings",
                                            "maxTaskRetryCount", "waitForSuccess"}, "startTask.")
        start = s.StartTask(_command(st.get("commandLine"), f"{where}.startTask.commandLine"),
                            max_retries=st.get("maxTaskRetryCount", 0), wait_for_success=st.get("waitForSuccess", True),
                            env=_env(st.get("environmentSettings"), f"{where}.startTask.environmentSettings"),
                            inputs=_inputs(st.get("resourceFiles"), ctx, f"{where} startTask", "resourceFiles"))
    return s.PoolSpec(
        name=p.get("id", "local"), vm_size=p.get("vmSize"),
        dedicated=None if auto else p.get("targetDedicatedNodes", 0), spot=0 if auto else p.get("targetLowPriorityNodes", 0),
        autoscale=p.get("autoScaleFormula") if auto else None,
        # Azure evaluates a formula every 15 minutes unless told otherwise.
        autoscale_interval=interval if interval is not None else (900.0 if auto else 30.0),
        task_slots_per_node=p.get("taskSlotsPerNode", p.get("maxTasksPerNode", 1)),
        node_fill=policy.get("nodeFillType", "spread"), start_task=start,
        tags=_env(p.get("metadata"), f"{where}.metadata"))


def _job(j: Mapping, ctx: _Ctx, tasks: Any) -> s.JobSpec:
    where = f"job {j['id']!r}"
    ctx.take(j, where, {"id", "priority", "constraints", "poolInfo", "onAllTasksComplete", "onTaskFailure",
                        "metadata", "commonEnvironmentSettings", "usesTaskDependencies"})
    cons = j.get("constraints") or {}
    ctx.take(cons, where, {"maxWallClockTime", "maxTaskRetryCount"}, "constraints.")
    pool = None
    info = j.get("poolInfo") or {}
    ctx.take(info, where, {"poolId", "autoPoolSpecification"}, "poolInfo.")
    if info.get("poolId"):
        pool = {"name": info["poolId"]}
    elif info.get("autoPoolSpecification"):
        auto = info["autoPoolSpecification"]
        ctx.take(auto, where, {"pool"}, "poolInfo.autoPoolSpecification.")
        spec = _pool({"id": j["id"], **(auto.get("pool") or {})}, ctx, f"{where} autoPool")
        pool = to_dict(spec)
    env = _env(j.get("commonEnvironmentSettings"), f"{where}.commonEnvironmentSettings")
    specs = ()
    if tasks is not None:
        specs = tuple(_tasks(_read(tasks), ctx, env))
        if str(j.get("onTaskFailure", "noaction")).lower() == "noaction":
            specs = tuple(_without_job_actions(t, ctx) for t in specs)
    elif env:
        ctx.notes.append(f"{where}: commonEnvironmentSettings apply only to tasks given with "
                         "from_azure(job, tasks=...); they were not kept")
    return s.JobSpec(id=j["id"], priority=j.get("priority", 0),
                     max_wall_clock=iso_duration(cons.get("maxWallClockTime"), f"{where}.constraints.maxWallClockTime"),
                     max_task_retries=cons.get("maxTaskRetryCount", 0),
                     on_all_tasks_complete=str(j.get("onAllTasksComplete", "noaction")).lower(),
                     tags=_env(j.get("metadata"), f"{where}.metadata"), pool=pool, tasks=specs)


def _without_job_actions(t: s.TaskSpec, ctx: _Ctx) -> s.TaskSpec:
    """Azure performs exit options' jobAction only when the job's onTaskFailure says so."""
    ec = t.exit_conditions
    if ec is None:
        return t
    def calm(o):
        return None if o is None else s.ExitOptions("none", o.dependency_action)
    named = [ec.default, ec.pre_processing_error, ec.file_upload_error]
    if all(o.job_action == "none" for o in [o for _, o in ec.codes + ec.ranges] + [o for o in named if o]):
        return t
    ctx.notes.append(f"task {t.id!r}: jobAction of its exitConditions is not kept, as the job's onTaskFailure is "
                     "noaction (Azure then ignores it)")
    return t.with_(exit_conditions=s.ExitConditions(
        tuple((c, calm(o)) for c, o in ec.codes), tuple((r, calm(o)) for r, o in ec.ranges),
        calm(ec.default), calm(ec.pre_processing_error), calm(ec.file_upload_error)))
