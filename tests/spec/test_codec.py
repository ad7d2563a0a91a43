"""Job files: YAML/JSON with the Python API's names, round trips, and clear errors."""

from __future__ import annotations

import json
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchnb as bnb
from batchnb import spec as s
from batchnb.spec.codec import from_dict, to_dict


def full_job() -> s.JobSpec:
    t = s.TaskSpec(
        "b", ["python", "b.py"], inputs=[s.ResourceFile("in.jpg", "az://p/1.jpg", "0755"),
                                         s.ResourceFile("models", "abfs://m@acct.dfs.core.windows.net/v2/")],
        outputs=[s.OutputFile("*.png", "az://t/{job_id}/", "completion"), s.OutputFile("log.txt", "az://l/x.txt")],
        env={"Q": "9"}, secrets={"T": "env:TOK"}, depends_on=["a", s.TaskIdRange(1, 3)], max_wall_clock="10m",
        retry=s.Retry(max=3, delay="1s", backoff=3.0, max_delay="1m", jitter=0.0), required_slots=2, priority=5,
        exit_conditions={3: s.ExitOptions(dependency_action="satisfy"), range(10, 20): s.ExitOptions(job_action="terminate"),
                         "default": s.ExitOptions(dependency_action="block"),
                         "pre_processing_error": s.ExitOptions(job_action="disable"),
                         "file_upload_error": s.ExitOptions(dependency_action="satisfy")},
        multi_instance=s.MultiInstance(2, "hostname", common_inputs={"hosts": "az://c/hosts"}), retention_time="1d")
    return s.JobSpec("job", max_task_retries=2, priority=10, max_wall_clock="2h", on_all_tasks_complete="terminate",
                     budget=5.0, budget_warn_fraction=0.5, tags={"team": "x"},
                     pool={"name": "local", "dedicated": 2, "task_slots_per_node": 2},
                     tasks=(s.TaskSpec("a", "echo A"), t, *(s.TaskSpec(str(i), f"echo {i}") for i in (1, 2, 3))))


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_full_job_round_trips(fmt, tmp_path):
    job = full_job()
    text = s.dumps(job, fmt)
    assert s.loads(text) == job
    path = tmp_path / f"job.{fmt}"
    s.dump(job, path)
    assert s.load(path) == job
    if fmt == "json":
        assert json.loads(path.read_text())["tasks"][1]["exit_conditions"]["codes"] == [
            {"code": 3, "dependency_action": "satisfy"}]


def test_the_design_example_loads():
    job = s.loads(textwrap.dedent("""
        id: thumbnails
        max_task_retries: 2
        pool: {name: local, dedicated: 2}
        tasks:
          - {id: a, command: "echo A", outputs: {"*.txt": "az://out/"}}
          - {id: b, command: [python, b.py], depends_on: [a], max_wall_clock: 10m,
             retry: {max: 3, delay: 2s}, exit_conditions: {3: {dependency_action: satisfy}, default: {job_action: terminate}}}
    """))
    a, b = job.tasks
    assert (job.id, job.max_task_retries, job.pool) == ("thumbnails", 2, {"name": "local", "dedicated": 2})
    assert a.outputs == (s.OutputFile("*.txt", "az://out/"),)
    assert (b.command, b.depends_on, b.max_wall_clock, b.retry.delay) == (("python", "b.py"), ("a",), 600.0, 2.0)
    assert b.exit_conditions.options_for(3).dependency_action == "satisfy"
    assert b.exit_conditions.options_for(1).job_action == "terminate"


def test_json_exit_condition_keys_are_strings():
    job = s.loads(json.dumps({"id": "x", "tasks": [{"id": "a", "command": "x", "exit_conditions": {
        "3": {"dependency_action": "satisfy"}, "10-19": {"job_action": "terminate"}, "20..29": {"job_action": "disable"}}}]}))
    ec = job.tasks[0].exit_conditions
    assert ec.options_for(3).dependency_action == "satisfy"
    assert ec.options_for(12).job_action == "terminate" and ec.options_for(25).job_action == "disable"


def test_pool_spec_round_trips():
    pool = s.PoolSpec("render", vm_size="Standard_D4s_v5", dedicated=1, spot=3, autoscale="$TargetDedicatedNodes=1;",
                      autoscale_interval="5m", task_slots_per_node=4, node_fill="pack",
                      start_task=s.StartTask("pip install x", max_retries=2, env={"A": "1"}, inputs={"a": "az://c/a"}),
                      app_packages=(s.AppPackage("ffmpeg", "6.1", "az://pkg/ffmpeg.zip"),), tags={"k": "v"})
    assert from_dict(s.PoolSpec, json.loads(json.dumps(to_dict(pool)))) == pool


@pytest.mark.parametrize("text, field", [
    ("id: j\ntasks:\n  - {id: a, command: x, colour: red}", "colour"),
    ("id: j\nbogus: 1", "bogus"),
    ("tasks: []", "job file"),
    ("id: j\ntasks: {a: 1}", "tasks"),
    ("id: j\ntasks:\n  - {id: a, python: {name: f, payload: ''}}", "python"),
    ("id: j\ntasks:\n  - {id: 'a b', command: x}", "task id"),
    ("id: j\ntasks:\n  - {id: a, command: x, max_wall_clock: soon}", "max_wall_clock"),
    ("id: j\ntasks:\n  - {id: a, command: x, exit_conditions: {often: {}}}", "exit_conditions"),
    ("id: [unclosed", "job file"),
])
def test_bad_job_files_name_the_field(text, field):
    with pytest.raises(bnb.SpecError, match=field):
        s.loads(text)


def test_unreadable_file_and_python_tasks(tmp_path):
    with pytest.raises(bnb.SpecError, match="cannot be read"):
        s.load(tmp_path / "missing.yaml")
    py = s.TaskSpec("p", python=s.PythonCall("m.f", b"payload"))
    with pytest.raises(bnb.SpecError, match="Python callable"):
        s.dumps(s.JobSpec("j", tasks=(py,)))
    # Python calls do round trip through to_dict/from_dict: that is what the ledger stores.
    assert from_dict(s.TaskSpec, json.loads(json.dumps(to_dict(py)))) == py


ids = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
names = st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True)
paths = st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6}){0,2}(\.[a-z]{2,3})?", fullmatch=True)
options = st.builds(s.ExitOptions, job_action=st.sampled_from(s.JOB_ACTIONS),
                    dependency_action=st.sampled_from((None, *s.DEPENDENCY_ACTIONS)))
task_fields = st.fixed_dictionaries(dict(
    id=ids,
    command=st.one_of(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1)
                      .filter(str.strip), st.lists(st.text(min_size=1).filter(lambda x: "\0" not in x), min_size=1)),
    inputs=st.dictionaries(paths, paths.map(lambda p: f"az://c/{p}"), max_size=3),
    outputs=st.lists(st.builds(s.OutputFile, pattern=paths, destination=paths.map(lambda p: f"az://o/{p}/"),
                               upload_condition=st.sampled_from(s.UPLOAD_CONDITIONS)), max_size=3),
    env=st.dictionaries(names, st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))),
    depends_on=st.lists(ids, max_size=4),
    max_wall_clock=st.one_of(st.none(), st.floats(0, 1e6)), required_slots=st.integers(1, 8),
    priority=st.one_of(st.none(), st.integers(-1000, 1000)),
    retry=st.one_of(st.none(), st.builds(s.Retry, max=st.integers(-1, 10), delay=st.floats(0, 100))),
    exit_conditions=st.one_of(st.none(), st.dictionaries(st.one_of(st.integers(-5, 300), st.just("default")),
                                                         options, max_size=4)),
    retention_time=st.one_of(st.none(), st.integers(0, 10 ** 7)),
))


def make_task(kw) -> s.TaskSpec:
    kw["depends_on"] = [d for d in kw["depends_on"] if d.lower() != kw["id"].lower()]
    return s.TaskSpec(**kw)


tasks = task_fields.map(make_task)


@settings(max_examples=60, deadline=None)
@given(st.lists(tasks, max_size=4, unique_by=lambda t: t.id.lower()))
def test_any_job_round_trips_through_yaml_and_json(items):
    job = s.JobSpec("prop", tasks=tuple(items))
    assert s.loads(s.dumps(job, "yaml")) == job
    assert s.loads(s.dumps(job, "json")) == job
