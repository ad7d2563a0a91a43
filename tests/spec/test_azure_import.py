"""Azure Batch REST JSON -> specs: every kept field, warnings for the rest, and a real run."""

from __future__ import annotations

import json
import warnings

import pytest

import batchnb as bnb
from batchnb.spec.azure import AzureImportWarning, iso_duration
from batchnb.spec import from_azure

ACCOUNT = "https://acct.blob.core.windows.net"

FULL_TASK = {
    "id": "render-7",
    "commandLine": "/bin/bash -c 'convert in.jpg out.png && echo \"done $AZ_BATCH_TASK_ID\"'",
    "resourceFiles": [
        {"httpUrl": f"{ACCOUNT}/photos/7.jpg?sv=2024&sig=SECRET", "filePath": "in.jpg", "fileMode": "0644"},
        {"storageContainerUrl": f"{ACCOUNT}/models", "blobPrefix": "v2/", "filePath": "m"},
        {"autoStorageContainerName": "tools", "filePath": "bin", "fileMode": "0755"},
        {"httpUrl": "https://example.org/lut.cube", "filePath": "lut.cube"},
    ],
    "outputFiles": [
        {"filePattern": "*.png", "uploadOptions": {"uploadCondition": "taskSuccess"},
         "destination": {"container": {"containerUrl": f"{ACCOUNT}/thumbs", "path": "job7"}}},
        {"filePattern": "../std*.txt", "uploadOptions": {"uploadCondition": "TaskFailure"},
         "destination": {"container": {"containerUrl": f"{ACCOUNT}/logs"}}},
        {"filePattern": "report.json", "uploadOptions": {"uploadCondition": "taskCompletion"},
         "destination": {"container": {"containerUrl": f"{ACCOUNT}/reports", "path": "r/7.json"}}},
    ],
    "environmentSettings": [{"name": "QUALITY", "value": "90"}, {"name": "EMPTY"}],
    "constraints": {"maxWallClockTime": "PT1H30M", "maxTaskRetryCount": 3, "retentionTime": "P2D"},
    "dependsOn": {"taskIds": ["prep"], "taskIdRanges": [{"start": 1, "end": 3}]},
    "exitConditions": {
        "exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy"}}],
        "exitCodeRanges": [{"start": 10, "end": 19, "exitOptions": {"jobAction": "terminate"}}],
        "preProcessingError": {"jobAction": "disable"},
        "fileUploadError": {"dependencyAction": "block"},
        "default": {"jobAction": "none", "dependencyAction": "block"},
    },
    "requiredSlots": 2,
    "priority": 50,
    "multiInstanceSettings": {"numberOfInstances": 3, "coordinationCommandLine": "hostname",
                              "commonResourceFiles": [{"httpUrl": "https://example.org/hosts", "filePath": "hosts"}]},
}


def convert(obj, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = from_azure(obj, **kw)
    return out, [str(w.message) for w in caught if issubclass(w.category, AzureImportWarning)]


def test_a_full_task_keeps_every_field():
    t, notes = convert(FULL_TASK)
    assert t.id == "render-7"
    # Azure runs commandLine without a shell: split into argv the way it does.
    assert t.command == ("/bin/bash", "-c", 'convert in.jpg out.png && echo "done $AZ_BATCH_TASK_ID"')
    assert [(i.path, i.url, i.file_mode) for i in t.inputs] == [
        ("in.jpg", "abfs://photos@acct.dfs.core.windows.net/7.jpg", "0644"),
        ("m/v2", "abfs://models@acct.dfs.core.windows.net/v2/", None),
        ("bin", "az://tools/", "0755"),
        ("lut.cube", "https://example.org/lut.cube", None),
    ]
    assert [(o.pattern, o.destination, o.upload_condition) for o in t.outputs] == [
        ("*.png", "abfs://thumbs@acct.dfs.core.windows.net/job7/", "success"),
        ("std*.txt", "abfs://logs@acct.dfs.core.windows.net/", "failure"),
        ("report.json", "abfs://reports@acct.dfs.core.windows.net/r/7.json", "completion"),
    ]
    assert t.env == {"QUALITY": "90", "EMPTY": ""}
    assert (t.max_wall_clock, t.retention_time, t.retry.max) == (5400.0, 2 * 86400.0, 3)
    assert t.depends_on == ("prep", "1", "2", "3")
    ec = t.exit_conditions
    assert ec.options_for(3).dependency_action == "satisfy"
    assert ec.options_for(15).job_action == "terminate"
    assert ec.options_for(None, "preprocessing").job_action == "disable"
    assert ec.options_for(None, "upload").dependency_action == "block"
    assert ec.options_for(1).dependency_action == "block"
    assert (t.required_slots, t.priority) == (2, 50)
    mi = t.multi_instance
    assert (mi.number_of_instances, mi.coordination_command, mi.common_inputs[0].path) == (3, "hostname", "hosts")
    # The SAS token is dropped, and said so: specs are recorded in the ledger.
    assert "SECRET" not in json.dumps(bnb.spec.to_dict(t))
    assert any("SAS token" in n and "photos/7.jpg" in n for n in notes), notes
    # Everything was understood: no field warnings besides the SAS note.
    assert not [n for n in notes if "not supported" in n], notes


def test_task_collection_with_ranges_and_status_fields_warns_once_per_field():
    coll = {"odata.metadata": "https://x/$metadata#tasks", "value": [
        {"id": str(i), "commandLine": "true", "state": "completed", "displayName": f"part {i}",
         "userIdentity": {"autoUser": {"elevationLevel": "admin"}}} for i in range(1, 4)]}
    tasks, notes = convert(coll)
    assert [t.id for t in tasks] == ["1", "2", "3"]
    assert any("'userIdentity'" in n and "task '1', task '2', task '3'" in n for n in notes), notes
    assert any("'displayName'" in n for n in notes)
    assert any("read-only status fields ignored: odata.metadata, state" in n for n in notes), notes
    with pytest.raises(bnb.SpecError, match="userIdentity.*cannot keep"):
        from_azure({"value": [{"id": "1", "commandLine": "true", "state": "active", "userIdentity": {}}]},
                   strict=True)


def test_pool_fields():
    pool, notes = convert({
        "id": "render", "vmSize": "STANDARD_D4S_V5", "taskSlotsPerNode": 4,
        "taskSchedulingPolicy": {"nodeFillType": "Pack"}, "enableAutoScale": True,
        "autoScaleFormula": "$TargetDedicatedNodes = min(4, $PendingTasks.GetSample(1));",
        "autoScaleEvaluationInterval": "PT5M", "enableInterNodeCommunication": True,
        "startTask": {"commandLine": "/bin/sh -c 'pip install pillow'", "maxTaskRetryCount": 2,
                      "waitForSuccess": False, "environmentSettings": [{"name": "A", "value": "1"}],
                      "resourceFiles": [{"autoStorageContainerName": "setup", "filePath": "s"}]},
        "metadata": [{"name": "team", "value": "imaging"}],
        "virtualMachineConfiguration": {"imageReference": {"publisher": "canonical"}},
    })
    assert (pool.name, pool.vm_size, pool.task_slots_per_node, pool.node_fill) == ("render", "STANDARD_D4S_V5", 4, "pack")
    assert pool.autoscale.startswith("$TargetDedicatedNodes") and pool.autoscale_interval == 300.0
    assert pool.dedicated is None
    st = pool.start_task
    assert (st.command, st.max_retries, st.wait_for_success, st.env) == (("/bin/sh", "-c", "pip install pillow"), 2,
                                                                         False, {"A": "1"})
    assert st.inputs[0].url == "az://setup/" and pool.tags == {"team": "imaging"}
    assert any("'virtualMachineConfiguration'" in n for n in notes), notes
    fixed, _ = convert({"id": "fixed", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 2,
                        "targetLowPriorityNodes": 5})
    assert (fixed.dedicated, fixed.spot, fixed.autoscale, fixed.autoscale_interval) == (2, 5, None, 30.0)


def test_job_with_auto_pool_and_tasks():
    job_json = {
        "id": "nightly", "priority": 100, "onAllTasksComplete": "terminateJob", "usesTaskDependencies": True,
        "constraints": {"maxWallClockTime": "P1DT2H", "maxTaskRetryCount": 2},
        "metadata": [{"name": "owner", "value": "ana"}],
        "commonEnvironmentSettings": [{"name": "STAGE", "value": "prod"}, {"name": "Q", "value": "1"}],
        "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": {
            "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 2}}},
    }
    tasks = {"value": [
        {"id": "a", "commandLine": "true", "environmentSettings": [{"name": "Q", "value": "2"}],
         "exitConditions": {"default": {"jobAction": "terminate", "dependencyAction": "satisfy"}}},
        {"id": "b", "commandLine": "true", "dependsOn": {"taskIds": ["a"]}},
    ]}
    job, notes = convert(job_json, tasks=tasks)
    assert (job.id, job.priority, job.on_all_tasks_complete, job.max_wall_clock, job.max_task_retries) == (
        "nightly", 100, "terminate", 26 * 3600.0, 2)
    assert job.tags == {"owner": "ana"}
    assert job.pool == {"name": "nightly", "vm_size": "standard_d2s_v3", "dedicated": 2}
    a, b = job.tasks
    assert a.env == {"STAGE": "prod", "Q": "2"} and b.env == {"STAGE": "prod", "Q": "1"}
    # Azure ignores jobAction unless onTaskFailure is performExitOptionsJobAction: so do we, and say so.
    assert a.exit_conditions.default.job_action == "none"
    assert a.exit_conditions.default.dependency_action == "satisfy"
    assert any("jobAction" in n and "'a'" in n for n in notes), notes
    assert any("'poolInfo.autoPoolSpecification.poolLifetimeOption'" in n for n in notes), notes
    job2, _ = convert({**job_json, "onTaskFailure": "performExitOptionsJobAction"}, tasks=tasks)
    assert job2.tasks[0].exit_conditions.default.job_action == "terminate"
    plain, notes = convert({"id": "j", "poolInfo": {"poolId": "render"}, "commonEnvironmentSettings": [
        {"name": "X", "value": "1"}]})
    assert plain.pool == {"name": "render"} and plain.tasks == ()
    assert any("commonEnvironmentSettings" in n for n in notes)


def test_json_text_and_files(tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"id": "t", "commandLine": "echo 'a b'"}))
    assert from_azure(path).command == ("echo", "a b")
    assert from_azure(str(path)).command == ("echo", "a b")
    assert from_azure('[{"id": "x", "commandLine": "true"}]')[0].id == "x"


@pytest.mark.parametrize("text, seconds", [("PT1H30M", 5400.0), ("P1DT2H", 93600.0), ("PT0.5S", 0.5),
                                           ("P2D", 172800.0), ("PT10M", 600.0),
                                           ("P10675199DT2H48M5.4775807S", None)])
def test_iso_durations(text, seconds):
    assert iso_duration(text, "f") == seconds


@pytest.mark.parametrize("bad, field", [
    ({"id": "t", "commandLine": "x", "constraints": {"maxWallClockTime": "90 minutes"}}, "maxWallClockTime"),
    ({"id": "t", "commandLine": "echo 'open"}, "commandLine"),
    ({"id": "t", "commandLine": "x", "resourceFiles": [{"httpUrl": "https://e.org/a"}]}, "filePath"),
    ({"id": "t", "commandLine": "x", "resourceFiles": [{"filePath": "a"}]}, "resourceFiles"),
    ({"id": "t", "commandLine": "x", "outputFiles": [{"filePattern": "*", "destination": {"container": {}},
                                                      "uploadOptions": {}}]}, "containerUrl"),
    ({"id": "t", "commandLine": "x", "outputFiles": [{"filePattern": "*", "uploadOptions": {"uploadCondition": "x"},
      "destination": {"container": {"containerUrl": f"{ACCOUNT}/c"}}}]}, "uploadCondition"),
    ({"id": "t", "commandLine": "x", "exitConditions": {"default": {"jobAction": "explode"}}}, "job_action"),
    ({"id": "t", "commandLine": "x", "dependsOn": {"taskIdRanges": [{"start": 5, "end": 2}]}}, "TaskIdRange"),
    ({"vmSize": "x", "id": "p", "enableAutoScale": True}, "autoScaleFormula"),
    ({"foo": 1}, "from_azure"),
])
def test_bad_input_names_the_field(bad, field):
    with pytest.raises(bnb.SpecError, match=field):
        from_azure(bad)


def test_a_task_collection_with_dependencies_and_ranges_runs(pool2, unique, tmp_path):
    """Converted Azure tasks run on a local pool: ranges, ids and exit conditions all act."""
    out = tmp_path / "ran.txt"
    line = f"/bin/sh -c 'echo $AZ_BATCH_TASK_ID >> {out}'"
    coll = {"value": [
        *({"id": str(i), "commandLine": line} for i in range(1, 5)),
        {"id": "prep", "commandLine": line},
        {"id": "merge", "commandLine": line, "dependsOn": {"taskIds": ["prep"], "taskIdRanges": [{"start": 1, "end": 4}]}},
        {"id": "soft", "commandLine": "/bin/sh -c 'exit 3'",
         "exitConditions": {"exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy"}}]}},
        {"id": "after-soft", "commandLine": line, "dependsOn": {"taskIds": ["soft"]}},
        {"id": "hard", "commandLine": "/bin/sh -c 'exit 4'", "constraints": {"maxTaskRetryCount": 1}},
        {"id": "after-hard", "commandLine": line, "dependsOn": {"taskIds": ["hard"]}},
    ]}
    tasks, _ = convert(coll)
    job = pool2.job(unique)
    job.add_tasks(tasks)
    result = job.wait(timeout=60, quiet=True)
    states = {t.id: t.state for t in job.tasks()}
    assert states == {**{str(i): "succeeded" for i in range(1, 5)}, "prep": "succeeded", "merge": "succeeded",
                      "soft": "failed", "after-soft": "succeeded", "hard": "failed", "after-hard": "blocked"}, states
    assert len(job.task("hard").attempts) == 2        # maxTaskRetryCount 1: one retry
    ran = out.read_text().split()
    assert ran[-1] in ("merge", "after-soft") and "merge" in ran and "after-hard" not in ran
    assert ran.index("merge") > max(ran.index(str(i)) for i in range(1, 5))
    assert not result.ok


def test_plain_http_urls_with_a_query_are_kept_and_bad_types_named():
    import batchnb as bnb
    from batchnb import spec
    t = spec.from_azure({"id": "t", "commandLine": "x", "resourceFiles": [
        {"httpUrl": "https://example.com/files/data.csv?version=2", "filePath": "data.csv"}]})
    assert t.inputs[0].url == "https://example.com/files/data.csv?version=2" and not t.inputs[0].is_prefix
    with pytest.raises(bnb.SpecError, match="httpUrl"):
        spec.from_azure({"id": "t", "commandLine": "x", "resourceFiles": [{"httpUrl": 5, "filePath": "a"}]})
