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
``multiInstanceSettings``, ``priority``, ``containerSettings`` (``imageName``,
``containerRunOptions``, ``workingDirectory``; never ``registry`` credentials); for pools ``vmSize``, node targets,
autoscale, ``taskSlotsPerNode``, ``taskSchedulingPolicy`` and ``startTask``; for jobs
``jobPreparationTask`` and ``jobReleaseTask`` (:class:`~batchnb.JobPrep`, :class:`~batchnb.JobRelease`).

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
import re
import shlex
from typing import Any, Mapping

from . import model as s
from . import validate as v
from ._azure_parts import Ctx, array, env as _env, flag, inputs as _inputs, obj, outputs as _outputs, text, whole
from ._azure_parts import container as _container
from .codec import as_text, read_text, to_dict
from .prep import RELEASE_MAX_WALL_CLOCK
from .schedule import ScheduleSpec
from ..errors import AzureImportWarning, SpecError  # noqa: F401 - AzureImportWarning: part of this module's face

_INFINITE = 10_000 * 86400.0        # TimeSpan.MaxValue in GET responses means "no limit"
_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


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


def _read(obj: Any) -> Any:
    """A dict or list as it is; JSON text (str or bytes); else a path to a JSON file."""
    if isinstance(obj, (str, bytes, bytearray, os.PathLike)):
        is_text = obj.lstrip()[:1] in ("{", "[", b"{", b"[") if not isinstance(obj, os.PathLike) else False
        text = as_text(obj, "from_azure") if is_text else read_text(obj, "from_azure")
        try:
            data = json.loads(text)
        except RecursionError:
            raise SpecError("from_azure", text[:80], "is nested too deeply to read") from None
        except ValueError as exc:
            raise SpecError("from_azure", text[:80], f"not valid JSON: {exc}") from None
        return v.document(data, "from_azure")
    return v.document(obj, "from_azure")


def from_azure(obj: Any, *, tasks: Any = None, strict: bool = False):
    """Specs from Azure Batch REST JSON.

    Returns a :class:`~batchnb.spec.TaskSpec` for a task, a list of them for
    a task collection, a :class:`~batchnb.spec.JobSpec` for a job (holding
    ``tasks`` converted too, when given), a :class:`~batchnb.ScheduleSpec` for a
    job schedule (a JobScheduleAdd body) and a :class:`~batchnb.spec.PoolSpec`
    for a pool. Anything malformed is a :class:`~batchnb.SpecError` naming
    the field.
    """
    obj = _read(obj)
    ctx = Ctx(strict)
    if isinstance(obj, list) or (isinstance(obj, Mapping) and isinstance(obj.get("value"), list)):
        out = _tasks(obj, ctx)
    elif not isinstance(obj, Mapping):
        raise SpecError("from_azure", obj, "expected a job, a task, {'value': [tasks]}, a job schedule or a pool "
                                           "(a JSON object)")
    elif "commandLine" in obj:
        out = _task(obj, ctx, env={})
    elif "jobSpecification" in obj or "schedule" in obj:     # a JobScheduleAdd body (or a GET's)
        out = _job_schedule(obj, ctx, tasks)
    elif any(k in obj for k in ("vmSize", "targetDedicatedNodes", "targetLowPriorityNodes", "enableAutoScale",
                                "virtualMachineConfiguration", "taskSlotsPerNode")):
        out = _pool(obj, ctx, "pool")
    elif "id" in obj:
        out = _job(obj, ctx, tasks)
    else:
        raise SpecError("from_azure", sorted(map(str, obj))[:8], "not a job, task, task collection or pool: "
                        "a task has 'commandLine', a pool 'vmSize', a job 'id' and 'poolInfo'")
    if tasks is not None and not isinstance(out, (s.JobSpec, ScheduleSpec)):
        raise SpecError("tasks", "...", "tasks= goes with a job or a job schedule")
    ctx.emit()
    return out


def _tasks(obj, ctx: Ctx, env: Mapping | None = None) -> list[s.TaskSpec]:
    if isinstance(obj, Mapping):
        ctx.take(obj, "task collection", {"value"})
        obj = obj.get("value")
    items = array(obj, "task collection value")
    return [_task(t, ctx, env or {}) for t in items]


def _command(line: Any, field: str) -> tuple:
    if not isinstance(line, str) or not line.strip():
        raise SpecError(field, line, "expected a non-empty command line")
    try:
        return tuple(shlex.split(line))
    except ValueError as exc:
        raise SpecError(field, line, f"cannot be split into arguments: {exc}") from None


def _task(t: Any, ctx: Ctx, env: Mapping) -> s.TaskSpec:
    if not isinstance(t, Mapping) or "id" not in t:
        raise SpecError("task", t, "expected an Azure Batch task with at least 'id' and 'commandLine'")
    tid = v.task_id(t["id"], "task id")
    where = f"task {tid!r}"
    ctx.take(t, where, {"id", "commandLine", "resourceFiles", "outputFiles", "environmentSettings", "constraints",
                        "dependsOn", "exitConditions", "requiredSlots", "multiInstanceSettings", "priority",
                        "containerSettings"})
    cons = obj(t.get("constraints"), f"{where} constraints")
    ctx.take(cons, where, {"maxWallClockTime", "maxTaskRetryCount", "retentionTime"}, "constraints.")
    retries = whole(cons.get("maxTaskRetryCount"), f"{where} constraints.maxTaskRetryCount", minimum=-1)
    dep = obj(t.get("dependsOn"), f"{where} dependsOn")
    ctx.take(dep, where, {"taskIds", "taskIdRanges"}, "dependsOn.")
    deps: list = [v.task_id(d, f"{where} dependsOn.taskIds[{i}]")
                  for i, d in enumerate(array(dep.get("taskIds"), f"{where} dependsOn.taskIds"))]
    for i, r in enumerate(array(dep.get("taskIdRanges"), f"{where} dependsOn.taskIdRanges")):
        f = f"{where} dependsOn.taskIdRanges[{i}]"
        r = obj(r, f)
        deps.append(s.TaskIdRange(v.integer(r.get("start"), f"{f}.start", minimum=0),
                                  v.integer(r.get("end"), f"{f}.end", minimum=0)))
    multi = None
    if t.get("multiInstanceSettings") is not None:
        f = f"{where} multiInstanceSettings"
        m = obj(t["multiInstanceSettings"], f)
        ctx.take(m, where, {"numberOfInstances", "coordinationCommandLine", "commonResourceFiles"},
                 "multiInstanceSettings.")
        multi = s.MultiInstance(number_of_instances=whole(m.get("numberOfInstances"), f"{f}.numberOfInstances") or 1,
                                coordination_command=text(m.get("coordinationCommandLine"),
                                                          f"{f}.coordinationCommandLine"),
                                common_inputs=_inputs(m.get("commonResourceFiles"), ctx, where, "commonResourceFiles"))
    return s.TaskSpec(
        id=tid, command=_command(t.get("commandLine"), f"{where} commandLine"),
        inputs=_inputs(t.get("resourceFiles"), ctx, where, "resourceFiles"),
        outputs=_outputs(t.get("outputFiles"), ctx, where),
        env={**env, **_env(t.get("environmentSettings"), f"{where} environmentSettings")},
        depends_on=deps,
        max_wall_clock=iso_duration(cons.get("maxWallClockTime"), f"{where} constraints.maxWallClockTime"),
        retention_time=iso_duration(cons.get("retentionTime"), f"{where} constraints.retentionTime"),
        retry=s.Retry(max=retries) if retries is not None else None,
        required_slots=whole(t.get("requiredSlots"), f"{where} requiredSlots", minimum=1) or 1,
        priority=whole(t.get("priority"), f"{where} priority"),
        exit_conditions=_exit_conditions(t.get("exitConditions"), ctx, where), multi_instance=multi,
        container=_container(t.get("containerSettings"), ctx, where))


def _exit_conditions(ec: Any, ctx: Ctx, where: str):
    ec = obj(ec, f"{where} exitConditions")
    if not ec:
        return None

    def opts(item: Mapping, field: str, f: str) -> s.ExitOptions:
        o = obj(item.get("exitOptions"), f"{f}.exitOptions") if field in ("exitCodes", "exitCodeRanges") or (
            "exitOptions" in item and field != "default") else item
        ctx.take(o, where, {"jobAction", "dependencyAction"}, f"exitConditions.{field}.")
        return s.ExitOptions(job_action=text(o.get("jobAction"), f"{f}.jobAction") or "none",
                             dependency_action=text(o.get("dependencyAction"), f"{f}.dependencyAction"))

    ctx.take(ec, where, {"exitCodes", "exitCodeRanges", "preProcessingError", "fileUploadError", "default"},
             "exitConditions.")
    mapping: dict[Any, s.ExitOptions] = {}
    for i, item in enumerate(array(ec.get("exitCodes"), f"{where} exitConditions.exitCodes")):
        f = f"{where} exitConditions.exitCodes[{i}]"
        item = obj(item, f)
        ctx.take(item, where, {"code", "exitOptions"}, "exitConditions.exitCodes.")
        mapping[v.integer(item.get("code"), f"{f}.code")] = opts(item, "exitCodes", f)
    for i, item in enumerate(array(ec.get("exitCodeRanges"), f"{where} exitConditions.exitCodeRanges")):
        f = f"{where} exitConditions.exitCodeRanges[{i}]"
        item = obj(item, f)
        ctx.take(item, where, {"start", "end", "exitOptions"}, "exitConditions.exitCodeRanges.")
        mapping[(v.integer(item.get("start"), f"{f}.start"), v.integer(item.get("end"), f"{f}.end"))] = \
            opts(item, "exitCodeRanges", f)
    for azure, ours in (("preProcessingError", "pre_processing_error"), ("fileUploadError", "file_upload_error"),
                        ("default", "default")):
        if ec.get(azure) is not None:
            f = f"{where} exitConditions.{azure}"
            mapping[ours] = opts(obj(ec[azure], f), azure, f)
    return s.ExitConditions.from_mapping(mapping)


def _pool(p: Any, ctx: Ctx, where: str) -> s.PoolSpec:
    p = obj(p, where)
    ctx.take(p, where, {"id", "vmSize", "targetDedicatedNodes", "targetLowPriorityNodes", "enableAutoScale",
                        "autoScaleFormula", "autoScaleEvaluationInterval", "taskSlotsPerNode", "maxTasksPerNode",
                        "taskSchedulingPolicy", "startTask", "metadata", "enableInterNodeCommunication"})
    policy = obj(p.get("taskSchedulingPolicy"), f"{where}.taskSchedulingPolicy")
    ctx.take(policy, where, {"nodeFillType"}, "taskSchedulingPolicy.")
    auto = flag(p.get("enableAutoScale"), f"{where}.enableAutoScale", False)
    formula = text(p.get("autoScaleFormula"), f"{where}.autoScaleFormula")
    if auto and not formula:
        raise SpecError(f"{where}.autoScaleFormula", None, "is required when enableAutoScale is true")
    interval = iso_duration(p.get("autoScaleEvaluationInterval"), f"{where}.autoScaleEvaluationInterval")
    start = None
    if p.get("startTask"):
        f = f"{where}.startTask"
        st = obj(p["startTask"], f)
        ctx.take(st, f"{where} startTask", {"commandLine", "resourceFiles", "environmentSettings",
                                            "maxTaskRetryCount", "waitForSuccess"}, "startTask.")
        start = s.StartTask(_command(st.get("commandLine"), f"{f}.commandLine"),
                            max_retries=whole(st.get("maxTaskRetryCount"), f"{f}.maxTaskRetryCount") or 0,
                            wait_for_success=flag(st.get("waitForSuccess"), f"{f}.waitForSuccess", True),
                            env=_env(st.get("environmentSettings"), f"{f}.environmentSettings"),
                            inputs=_inputs(st.get("resourceFiles"), ctx, f"{where} startTask", "resourceFiles"))
    return s.PoolSpec(
        name=p.get("id", "local"), vm_size=text(p.get("vmSize"), f"{where}.vmSize"),
        dedicated=None if auto else whole(p.get("targetDedicatedNodes"), f"{where}.targetDedicatedNodes") or 0,
        spot=0 if auto else whole(p.get("targetLowPriorityNodes"), f"{where}.targetLowPriorityNodes") or 0,
        autoscale=formula if auto else None,
        # Azure evaluates a formula every 15 minutes unless told otherwise.
        autoscale_interval=interval if interval is not None else (900.0 if auto else 30.0),
        task_slots_per_node=p.get("taskSlotsPerNode", p.get("maxTasksPerNode", 1)),
        node_fill=policy.get("nodeFillType", "spread"), start_task=start,
        tags=_env(p.get("metadata"), f"{where}.metadata"))


def _job(j: Mapping, ctx: Ctx, tasks: Any) -> s.JobSpec:
    jid = v.task_id(j["id"], "job id")
    where = f"job {jid!r}"
    ctx.take(j, where, {"id", "priority", "constraints", "poolInfo", "onAllTasksComplete", "onTaskFailure",
                        "metadata", "commonEnvironmentSettings", "usesTaskDependencies", "jobPreparationTask",
                        "jobReleaseTask"})
    cons = obj(j.get("constraints"), f"{where}.constraints")
    ctx.take(cons, where, {"maxWallClockTime", "maxTaskRetryCount"}, "constraints.")
    pool = None
    info = obj(j.get("poolInfo"), f"{where}.poolInfo")
    ctx.take(info, where, {"poolId", "autoPoolSpecification"}, "poolInfo.")
    if info.get("poolId"):
        pool = {"name": v.task_id(info["poolId"], f"{where}.poolInfo.poolId")}
    elif info.get("autoPoolSpecification"):
        auto = obj(info["autoPoolSpecification"], f"{where}.poolInfo.autoPoolSpecification")
        ctx.take(auto, where, {"pool"}, "poolInfo.autoPoolSpecification.")
        spec = _pool({"id": jid, **obj(auto.get("pool"), f"{where}.poolInfo.autoPoolSpecification.pool")}, ctx,
                     f"{where} autoPool")
        pool = to_dict(spec)
    env = _env(j.get("commonEnvironmentSettings"), f"{where}.commonEnvironmentSettings")
    specs = ()
    if tasks is not None:
        specs = tuple(_tasks(_read(tasks), ctx, env))
        on_failure = text(j.get("onTaskFailure"), f"{where}.onTaskFailure") or "noaction"
        if on_failure.lower() == "noaction":
            specs = tuple(_without_job_actions(t, ctx) for t in specs)
    elif env:
        ctx.notes.append(f"{where}: commonEnvironmentSettings apply only to tasks given with "
                         "from_azure(job, tasks=...); they were not kept")
    return s.JobSpec(id=jid, priority=whole(j.get("priority"), f"{where}.priority") or 0,
                     max_wall_clock=iso_duration(cons.get("maxWallClockTime"), f"{where}.constraints.maxWallClockTime"),
                     max_task_retries=whole(cons.get("maxTaskRetryCount"), f"{where}.constraints.maxTaskRetryCount",
                                            minimum=-1) or 0,
                     on_all_tasks_complete=(text(j.get("onAllTasksComplete"), f"{where}.onAllTasksComplete")
                                            or "noaction").lower(),
                     tags=_env(j.get("metadata"), f"{where}.metadata"), pool=pool, tasks=specs,
                     prep=_prep(j.get("jobPreparationTask"), ctx, where),
                     release=_release(j.get("jobReleaseTask"), ctx, where, j.get("jobPreparationTask")))


def _job_schedule(j: Mapping, ctx: Ctx, tasks: Any) -> ScheduleSpec:
    """A JobScheduleAdd body -> :class:`~batchnb.ScheduleSpec`; its ``jobSpecification`` (with ``tasks``,
    when given) is each run's job."""
    sid = v.task_id(j.get("id"), "job schedule id")
    where = f"job schedule {sid!r}"
    ctx.take(j, where, {"id", "displayName", "schedule", "jobSpecification"})
    sch = obj(j.get("schedule"), f"{where}.schedule")
    ctx.take(sch, where, {"doNotRunUntil", "doNotRunAfter", "startWindow", "recurrenceInterval"}, "schedule.")
    job = _job({**obj(j.get("jobSpecification"), f"{where}.jobSpecification"), "id": sid}, ctx, tasks)
    return ScheduleSpec(sid, job=job, every=iso_duration(sch.get("recurrenceInterval"),
                                                         f"{where}.schedule.recurrenceInterval"),
                        do_not_run_until=text(sch.get("doNotRunUntil"), f"{where}.schedule.doNotRunUntil"),
                        do_not_run_after=text(sch.get("doNotRunAfter"), f"{where}.schedule.doNotRunAfter"),
                        start_window=iso_duration(sch.get("startWindow"), f"{where}.schedule.startWindow"))


def _prep(p: Any, ctx: Ctx, where: str) -> s.JobPrep | None:
    """``jobPreparationTask`` -> :class:`~batchnb.JobPrep` (Azure's defaults: no retries, wait for success)."""
    if p is None:
        return None
    f = f"{where}.jobPreparationTask"
    p = obj(p, f)
    ctx.take(p, f"{where} jobPreparationTask", {"id", "commandLine", "resourceFiles", "environmentSettings",
                                                  "constraints", "waitForSuccess", "rerunOnNodeRebootAfterSuccess"},
             "jobPreparationTask.")
    cons = obj(p.get("constraints"), f"{f}.constraints")
    ctx.take(cons, f"{where} jobPreparationTask", {"maxWallClockTime", "maxTaskRetryCount"},
             "jobPreparationTask.constraints.")
    retries = whole(cons.get("maxTaskRetryCount"), f"{f}.constraints.maxTaskRetryCount", minimum=-1)
    return s.JobPrep(_command(p.get("commandLine"), f"{f}.commandLine"),
                     inputs=_inputs(p.get("resourceFiles"), ctx, f"{where} jobPreparationTask", "resourceFiles"),
                     env=_env(p.get("environmentSettings"), f"{f}.environmentSettings"),
                     retry=s.Retry(max=retries) if retries else None,
                     max_wall_clock=iso_duration(cons.get("maxWallClockTime"), f"{f}.constraints.maxWallClockTime"),
                     wait_for_success=flag(p.get("waitForSuccess"), f"{f}.waitForSuccess", True),
                     rerun_on_node_reboot=flag(p.get("rerunOnNodeRebootAfterSuccess"),
                                               f"{f}.rerunOnNodeRebootAfterSuccess", True))


def _release(r: Any, ctx: Ctx, where: str, j_prep: Any) -> s.JobRelease | None:
    """``jobReleaseTask`` -> :class:`~batchnb.JobRelease` (at most 15 minutes, Azure's default and limit)."""
    if r is None:
        return None
    f = f"{where}.jobReleaseTask"
    r = obj(r, f)
    ctx.take(r, f"{where} jobReleaseTask", {"id", "commandLine", "environmentSettings", "maxWallClockTime"},
             "jobReleaseTask.")
    limit = iso_duration(r.get("maxWallClockTime"), f"{f}.maxWallClockTime")
    if limit is not None and not 0 < limit <= RELEASE_MAX_WALL_CLOCK:
        raise SpecError(f"{f}.maxWallClockTime", r["maxWallClockTime"], "must be positive and at most PT15M "
                                                                         "(Azure's limit for a release task)")
    if j_prep is None:
        raise SpecError(f, r.get("commandLine"), "a jobReleaseTask needs a jobPreparationTask, as in Azure")
    return s.JobRelease(_command(r.get("commandLine"), f"{f}.commandLine"),
                        env=_env(r.get("environmentSettings"), f"{f}.environmentSettings"),
                        **({"max_wall_clock": limit} if limit is not None else {}))


def _without_job_actions(t: s.TaskSpec, ctx: Ctx) -> s.TaskSpec:
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
