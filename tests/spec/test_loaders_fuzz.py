"""Loaders only ever raise SpecError: ``from_azure``, ``loads``/``load``/``from_dict`` and the specs.

Each property starts from a complete, valid document and breaks it: a value at
any known field replaced by any JSON-like value (or an object no JSON holds),
a field dropped, the document cut or nested. Whatever comes out is a spec or a
:class:`bnb.SpecError`; a ``TypeError``/``KeyError``/``RecursionError`` from
inside is a bug.
"""

from __future__ import annotations

import copy
import json
import re
import warnings

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchnb as bnb
from batchnb import spec as s

ACCOUNT = "https://acct.blob.core.windows.net"
AZURE_TASK = {
    "id": "render-7", "commandLine": "/bin/sh -c 'echo hi'",
    "resourceFiles": [
        {"httpUrl": f"{ACCOUNT}/photos/7.jpg?sv=1&sig=X", "filePath": "in.jpg", "fileMode": "0644"},
        {"storageContainerUrl": f"{ACCOUNT}/models", "blobPrefix": "v2/", "filePath": "m"},
        {"autoStorageContainerName": "tools", "filePath": "bin"},
    ],
    "outputFiles": [{"filePattern": "*.png", "uploadOptions": {"uploadCondition": "taskSuccess"},
                     "destination": {"container": {"containerUrl": f"{ACCOUNT}/thumbs", "path": "job7"}}}],
    "environmentSettings": [{"name": "QUALITY", "value": "90"}],
    "constraints": {"maxWallClockTime": "PT1H", "maxTaskRetryCount": 3, "retentionTime": "P1D"},
    "dependsOn": {"taskIds": ["prep"], "taskIdRanges": [{"start": 1, "end": 3}]},
    "exitConditions": {"exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy"}}],
                       "exitCodeRanges": [{"start": 10, "end": 19, "exitOptions": {"jobAction": "terminate"}}],
                       "preProcessingError": {"jobAction": "disable"}, "fileUploadError": {"dependencyAction": "block"},
                       "default": {"dependencyAction": "block"}},
    "requiredSlots": 2, "priority": 50,
    "multiInstanceSettings": {"numberOfInstances": 2, "coordinationCommandLine": "hostname",
                              "commonResourceFiles": [{"httpUrl": "https://example.org/h", "filePath": "h"}]},
}
AZURE_POOL = {
    "id": "render", "vmSize": "standard_d2s_v3", "taskSlotsPerNode": 2, "targetDedicatedNodes": 1,
    "targetLowPriorityNodes": 1, "taskSchedulingPolicy": {"nodeFillType": "pack"},
    "startTask": {"commandLine": "true", "maxTaskRetryCount": 1, "waitForSuccess": True,
                  "environmentSettings": [{"name": "A", "value": "1"}],
                  "resourceFiles": [{"autoStorageContainerName": "setup", "filePath": "s"}]},
    "metadata": [{"name": "team", "value": "x"}],
}
AZURE_AUTOSCALE_POOL = {"id": "auto", "vmSize": "standard_d2s_v3", "enableAutoScale": True,
                        "autoScaleFormula": "$TargetDedicatedNodes = 1;", "autoScaleEvaluationInterval": "PT5M"}
AZURE_JOB = {
    "id": "nightly", "priority": 10, "onAllTasksComplete": "terminateJob", "onTaskFailure": "noAction",
    "constraints": {"maxWallClockTime": "PT2H", "maxTaskRetryCount": 2},
    "metadata": [{"name": "owner", "value": "ana"}],
    "commonEnvironmentSettings": [{"name": "STAGE", "value": "prod"}],
    "poolInfo": {"autoPoolSpecification": {"pool": dict(AZURE_POOL)}},
}
JOB_FILE = {
    "id": "job", "max_task_retries": 2, "priority": 1, "max_wall_clock": "2h", "on_all_tasks_complete": "terminate",
    "budget": 5.0, "budget_warn_fraction": 0.5, "tags": {"team": "x"},
    "pool": {"name": "local", "dedicated": 2},
    "tasks": [
        {"id": "a", "command": "echo A", "outputs": {"*.txt": "memory://out/{job_id}/"}},
        {"id": "b", "command": ["python", "b.py"], "depends_on": ["a"], "max_wall_clock": "10m",
         "inputs": [{"path": "in.jpg", "url": "memory://p/1.jpg", "file_mode": "0755"}],
         "outputs": [{"pattern": "*.png", "destination": "memory://t/", "upload_condition": "completion"}],
         "env": {"Q": "9"}, "secrets": {"T": "env:TOK"}, "retry": {"max": 3, "delay": "1s", "backoff": 2.0},
         "required_slots": 1, "priority": 5, "retention_time": "1d", "upload_condition": "failure",
         "exit_conditions": {"3": {"dependency_action": "satisfy"}, "10-19": {"job_action": "terminate"},
                             "default": {"dependency_action": "block"}},
         "multi_instance": {"number_of_instances": 2, "coordination_command": "hostname",
                            "common_inputs": {"hosts": "memory://c/hosts"}}},
    ],
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["", "a", "1", "-1", ".", "x/..", "a\0b", "PT1H", "az://",
                                                           "memory://x/", "nope://x", "$x", "{job_id}", "{0}"]))
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
# Values no JSON holds, as a Python caller may pass them.
python_only = st.one_of(st.binary(max_size=4), st.sets(st.integers(), max_size=3), st.just(object()),
                        st.just(float("inf")), st.just(range(3)), st.just(b"\xff"), st.just(lambda: 1),
                        st.tuples(st.integers(), st.integers()), st.dictionaries(st.integers(), st.text(max_size=3),
                                                                                 max_size=2))


def paths(obj, prefix=()):
    """Every (container path, key) of a JSON-like tree."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return
    for key, value in items:
        yield prefix, key
        yield from paths(value, prefix + (key,))


def mutated(template: dict, values) -> st.SearchStrategy:
    """``template`` with one to three fields replaced by ``values`` or dropped."""
    spots = list(paths(template))

    @st.composite
    def build(draw):
        doc = copy.deepcopy(template)
        for _ in range(draw(st.integers(1, 3))):
            where, key = draw(st.sampled_from(spots))
            node = doc
            try:
                for k in where:
                    node = node[k]
                if draw(st.integers(0, 5)) == 0:
                    del node[key]
                else:
                    node[key] = draw(values)
            except (KeyError, IndexError, TypeError):
                pass        # an earlier mutation replaced or dropped this field's parent
        return doc
    return build()


def only_spec_errors(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return call(*args, **kwargs)
        except bnb.SpecError as exc:
            assert exc.field and "\n" not in str(exc), exc      # `batchnb run` prints it as one line
            return exc


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(SETTINGS, max_examples=80)
azure_docs = st.one_of(mutated(AZURE_TASK, json_like), mutated(AZURE_POOL, json_like),
                       mutated(AZURE_AUTOSCALE_POOL, json_like), mutated(AZURE_JOB, json_like),
                       mutated({"value": [AZURE_TASK, {"id": "x", "commandLine": "true"}]}, json_like), json_like)


@SETTINGS
@given(azure_docs, st.one_of(st.none(), mutated({"value": [AZURE_TASK]}, json_like)))
def test_from_azure_only_raises_spec_errors(doc, tasks):
    only_spec_errors(s.from_azure, doc)
    if isinstance(doc, dict) and "id" in doc and "commandLine" not in doc:
        only_spec_errors(s.from_azure, doc, tasks=tasks)


@SETTINGS
@given(st.one_of(mutated(AZURE_TASK, python_only), mutated(AZURE_JOB, python_only)))
def test_from_azure_of_python_objects_only_raises_spec_errors(doc):
    only_spec_errors(s.from_azure, doc)


@SETTINGS
@given(st.one_of(mutated(JOB_FILE, json_like), json_like), st.sampled_from(["json", "yaml"]))
def test_loads_only_raises_spec_errors(doc, fmt):
    text = json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc)
    only_spec_errors(s.loads, text)
    only_spec_errors(s.codec.job_from_data, doc)


job_fields = [(k,) for k in JOB_FILE if k != "tasks"] + [("tasks", 1, k) for k in JOB_FILE["tasks"][1]]


@SETTINGS
@given(st.sampled_from(job_fields), st.one_of(json_like, st.lists(json_like, max_size=2),
                                              st.dictionaries(st.text(max_size=4), json_like, max_size=2)))
def test_every_job_file_field_of_any_type_only_raises_spec_errors(where, value):
    doc = copy.deepcopy(JOB_FILE)
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    only_spec_errors(s.loads, json.dumps(doc))


@SETTINGS
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_loads_of_any_text_only_raises_spec_errors(text):
    only_spec_errors(s.loads, text)


task_kwargs = dict(
    inputs={"in.jpg": "memory://p/1.jpg"}, outputs={"*.png": "memory://t/"}, env={"A": "1"},
    secrets={"T": "env:TOK"}, depends_on=["a"], max_wall_clock="1m", retry=s.Retry(max=1), required_slots=1,
    priority=1, exit_conditions={3: s.ExitOptions()}, multi_instance=s.MultiInstance(2, "hostname"),
    retention_time="1d", upload_condition="success")


@SETTINGS
@given(st.sampled_from(sorted(task_kwargs) + ["id", "command"]), st.one_of(json_like, python_only))
def test_task_spec_only_raises_spec_errors(field, value):
    kwargs = {"id": "t", "command": "true", **task_kwargs, field: value}
    only_spec_errors(s.TaskSpec, **kwargs)
    only_spec_errors(s.TaskSpec, "t", "true", **{field: value}) if field not in ("id", "command") else None


def nested(kind: str, depth: int) -> str:
    if kind == "flow":
        return "id: j\ntasks: " + "[" * depth + "]" * depth
    if kind == "block":
        return "id: j\n" + "".join("  " * i + "k:\n" for i in range(depth))
    if kind == "json":
        return '{"id": "j", "tasks": ' + "[" * depth + "]" * depth + "}"
    # YAML aliases: each level ten references to the one before
    levels = "".join(f"l{i + 1}: &l{i + 1} [{', '.join([f'*l{i}'] * 10)}]\n" for i in range(depth % 9))
    return "l0: &l0 [x]\n" + levels + f"id: j\ntasks: *l{depth % 9}\n"


odd_files = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(max_size=50).map(lambda t: t.encode("utf-16")),
    st.tuples(st.sampled_from(["flow", "block", "json", "aliases"]), st.integers(1, 1500)).map(
        lambda kd: nested(*kd).encode()),
    st.tuples(mutated(JOB_FILE, json_like), st.binary(max_size=8)).map(
        lambda d: json.dumps(d[0]).encode() + d[1]),
)


@SOME
@given(odd_files)
def test_load_of_odd_files_only_raises_spec_errors(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("odd") / "job.yaml"
    path.write_bytes(content)
    only_spec_errors(s.load, path)
    only_spec_errors(s.from_azure, path)


@pytest.mark.parametrize("content, message", [
    (nested("flow", 5000), "nested too deeply"),
    (nested("block", 3000), "nested"),
    (nested("json", 100_000), "nested too deeply"),
    (nested("aliases", 8), "expands to more than 10,000,000 values"),
    ("id: j\ntasks: &t [*t]\n", "refers to itself"),
    (b"id: j\n\x80\x81", "is not UTF-8 text (byte 0x80 at offset 6)"),
    ("id: j\nmax_wall_clock: 2024-02-30\n", "day is out of range"),
], ids=["flow", "block", "json", "aliases", "itself", "binary", "date"])
def test_odd_job_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "job.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(bnb.SpecError, match=re.escape(message)):
        s.load(path)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:
        fh.truncate(s.codec.MAX_FILE_BYTES + 1)       # sparse: no disk, and reading it would take gigabytes
    with pytest.raises(bnb.SpecError, match="larger than 128 MiB"):
        s.load(path)
    with pytest.raises(bnb.SpecError, match="larger than 128 MiB"):
        s.from_azure(path)


@pytest.mark.parametrize("task, message", [
    ({"dependsOn": {"taskIds": "abc"}}, "dependsOn.taskIds: 'abc' is invalid: expected a JSON array"),
    ({"resourceFiles": [{"storageContainerUrl": f"{ACCOUNT}/c", "blobPrefix": 5}]}, r"resourceFiles\[0\].blobPrefix: 5"),
    ({"resourceFiles": [{"httpUrl": "https://e.org/x", "filePath": "."}]}, "working directory itself"),
    ({"environmentSettings": [{"name": ["A"], "value": "1"}]}, r"environmentSettings\[0\].name"),
    ({"constraints": {"maxTaskRetryCount": "3"}}, "maxTaskRetryCount: '3' is invalid"),
    ({"exitConditions": {"exitCodes": [{"exitOptions": {}}]}}, r"exitCodes\[0\].code: None"),
    ({"outputFiles": [{"filePattern": "*", "destination": {"container": {"containerUrl": "thumbs"}}}]},
     "expected a blob URL"),
])
def test_azure_fields_of_the_wrong_type_are_named(task, message):
    with pytest.raises(bnb.SpecError, match=message):
        s.from_azure({"id": "t", "commandLine": "true", **task})


@pytest.mark.parametrize("kwargs, message", [
    ({"inputs": {"a\0b": "memory://x/a"}}, "a path cannot hold a NUL character"),
    ({"inputs": {".": "memory://x/a"}}, "names the working directory itself"),
    ({"inputs": {"x/..": "memory://x/a"}}, "names the working directory itself"),
    ({"inputs": {"a": "memory://x/a\0"}}, "a URL cannot hold a NUL character"),
    ({"inputs": {"a": "nope://x/a"}}, "unknown fsspec protocol 'nope'"),
    ({"inputs": {"a": "AZ://x/a"}}, "unknown fsspec protocol 'AZ'; did you mean 'az'"),
    ({"outputs": {"*.txt": "/shared/out/"}}, "expected a URL with a protocol"),
    ({"outputs": {"*.txt": "s3x://out/"}}, "unknown fsspec protocol 's3x'"),
    ({"depends_on": 5.0}, "depends_on: 5.0 is invalid"),
    ({"depends_on": {"a": 1}}, "depends_on"),
    ({"exit_conditions": {3: {"job_acton": "terminate"}}}, "did you mean 'job_action'"),
])
def test_task_specs_refuse_what_would_fail_on_a_node(kwargs, message):
    with pytest.raises(bnb.SpecError, match=message):
        s.TaskSpec("t", "true", **kwargs)


def test_only_a_folder_url_may_be_fetched_into_the_working_directory_itself():
    with pytest.raises(bnb.SpecError, match="working directory itself"):
        s.TaskSpec("t", "true", inputs={".": "memory://x/data.csv"})
    assert s.TaskSpec("t", "true", inputs={".": "memory://x/data/"}).inputs[0].path == "."
    assert s.from_azure({"id": "t", "commandLine": "true", "resourceFiles": [
        {"autoStorageContainerName": "tools"}]}).inputs[0].path == "."


def test_a_keyword_with_no_name_is_named_quoted():
    """The fuzzer's find: an output given as {"": ...} was refused with an error naming no field."""
    with pytest.raises(bnb.SpecError) as caught:
        s.TaskSpec("t", "true", outputs=[{"": None, "pattern": "*.txt", "destination": "memory://o/"}])
    assert caught.value.field == "''" and "not a keyword of bnb.OutputFile" in str(caught.value)
