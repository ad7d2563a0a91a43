"""Specs: validation that names field and value, durations, ids, round trips."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings, strategies as st

import batchnb as bnb
from batchnb import spec as s


@pytest.mark.parametrize("value, seconds", [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400),
                                            (45, 45), (1.5, 1.5), (timedelta(minutes=2), 120), ("250ms", 0.25)])
def test_durations(value, seconds):
    assert s.TaskSpec("t", "true", max_wall_clock=value).max_wall_clock == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["ten minutes", "-5s", -1, True, "5y", float("inf"), [1]])
def test_bad_durations_name_field_and_value(value):
    with pytest.raises(bnb.SpecError) as err:
        s.TaskSpec("t", "true", max_wall_clock=value)
    assert err.value.field == "max_wall_clock" and err.value.value == value
    assert "max_wall_clock" in str(err.value)


@pytest.mark.parametrize("task_id", ["a", "A-b_9", "x" * 64, 7])
def test_good_ids(task_id):
    assert s.TaskSpec(task_id, "true").id == str(task_id)


@pytest.mark.parametrize("task_id", ["", "x" * 65, "a b", "a/b", "é", None, "a.b"])
def test_bad_ids(task_id):
    with pytest.raises(bnb.SpecError, match="task id"):
        s.TaskSpec(task_id, "true")


def test_spec_errors_are_value_errors():
    assert issubclass(bnb.SpecError, ValueError) and issubclass(bnb.FormulaError, bnb.SpecError)


def test_command_and_paths():
    assert s.TaskSpec("t", ["python", "b.py"]).command == ("python", "b.py")
    for bad in ("", "   ", [], [1], {"a": 1}):
        with pytest.raises(bnb.SpecError, match="command"):
            s.TaskSpec("t", bad)
    for path in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(bnb.SpecError, match="working directory"):
            s.TaskSpec("t", "true", inputs={path: "memory://x"})
    with pytest.raises(bnb.SpecError, match="templated"):
        s.TaskSpec("t", "true", outputs={"*.txt": "az://c/{user}/"})
    with pytest.raises(bnb.SpecError, match="upload_condition"):
        s.TaskSpec("t", "true", outputs={"*.txt": "az://c/"}, upload_condition="sometimes")


def test_secrets_are_references_never_values():
    with pytest.raises(bnb.SpecError, match="reference"):
        s.TaskSpec("t", "true", secrets={"TOKEN": "hunter2"})
    assert s.TaskSpec("t", "true", secrets={"TOKEN": "env:MY_TOKEN"}).secrets == {"TOKEN": "env:MY_TOKEN"}


def test_self_dependency_and_priority_range():
    with pytest.raises(bnb.SpecError, match="itself"):
        s.TaskSpec("t", "true", depends_on=["T"])
    with pytest.raises(bnb.SpecError, match="priority"):
        s.TaskSpec("t", "true", priority=5000)


def test_retry_delays_grow_and_cap():
    r = s.Retry(max=5, delay="1s", backoff=2, max_delay="5s", jitter=0)
    assert [r.delay_before(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    jittered = {round(s.Retry(delay=10, jitter=0.5).delay_before(1), 6) for _ in range(20)}
    assert len(jittered) > 1 and all(5 <= d <= 15 for d in jittered)
    assert s.Retry(max=-1).allows(10_000) and not s.Retry(max=2).allows(3)
    with pytest.raises(bnb.SpecError, match="retry.backoff"):
        s.Retry(backoff=0.5)


def test_exit_conditions_lookup():
    ec = s.ExitConditions.from_mapping({3: bnb.ExitOptions(dependency_action="satisfy"),
                                        range(10, 20): bnb.ExitOptions(job_action="terminate"),
                                        "default": bnb.ExitOptions(dependency_action="block"),
                                        "file_upload_error": bnb.ExitOptions(job_action="terminate")})
    assert ec.options_for(3).dependency_action == "satisfy"
    assert ec.options_for(19).job_action == "terminate" and ec.options_for(20).dependency_action == "block"
    assert ec.options_for(0) is None
    assert ec.options_for(None, "upload").job_action == "terminate"
    with pytest.raises(bnb.SpecError, match="exit_conditions"):
        s.ExitConditions.from_mapping({"sometimes": bnb.ExitOptions()})
    with pytest.raises(bnb.SpecError, match="dependency_action"):
        bnb.ExitOptions(dependency_action="maybe")


def test_pool_spec_validation():
    assert s.PoolSpec(dedicated=2, spot=1, task_slots_per_node=4).total_slots == 12
    assert s.PoolSpec(start_task="echo hi").start_task == bnb.StartTask("echo hi")
    with pytest.raises(bnb.SpecError, match="autoscale_interval"):
        s.PoolSpec(autoscale_interval="0s")
    with pytest.raises(bnb.SpecError, match="task_slots_per_node"):
        s.PoolSpec(task_slots_per_node=1000)


def test_task_id_range():
    assert list(bnb.TaskIdRange(3, 5)) == ["3", "4", "5"]
    with pytest.raises(bnb.SpecError, match="TaskIdRange"):
        bnb.TaskIdRange(5, 3)
    assert s.TaskSpec("m", "true", depends_on=[bnb.TaskIdRange(1, 2), "x", "1"]).depends_on == ("1", "2", "x")


ids = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
tasks = st.builds(
    s.TaskSpec, ids, st.one_of(st.text(min_size=1).filter(str.strip), st.lists(st.text(), min_size=1)),
    env=st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), st.text().filter(lambda x: "\0" not in x)),
    max_wall_clock=st.one_of(st.none(), st.integers(0, 10**6)),
    retry=st.one_of(st.none(), st.builds(s.Retry, max=st.integers(0, 9), delay=st.integers(0, 60))),
    required_slots=st.integers(1, 8), priority=st.one_of(st.none(), st.integers(-1000, 1000)),
    outputs=st.dictionaries(st.sampled_from(["*.txt", "out/**", "a?.csv"]), st.just("memory://out/{task_id}/"),
                            max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(tasks)
def test_task_specs_round_trip_through_json(task):
    import json
    data = json.loads(json.dumps(s.to_dict(task)))
    assert s.from_dict(s.TaskSpec, data) == task


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers(), st.none(),
                                                      st.lists(st.text(max_size=4), max_size=3)), max_size=6))
def test_loader_raises_only_spec_errors(data):
    try:
        s.from_dict(s.TaskSpec, data)
    except bnb.SpecError:
        pass


def test_job_file_round_trip(tmp_path):
    job = s.JobSpec("thumbs", max_task_retries=2, pool={"name": "local", "dedicated": 2},
                    tasks=(s.TaskSpec("a", "echo A", outputs={"*.txt": "az://out/"}),
                           s.TaskSpec("b", ["python", "b.py"], depends_on=["a"])))
    for name in ("job.yaml", "job.json"):
        s.dump(job, tmp_path / name)
        assert s.load(tmp_path / name) == job
    text = "id: thumbs\ntasks:\n  - {id: a, command: echo A, depdens_on: [x]}\n"
    with pytest.raises(bnb.SpecError, match="depdens_on"):
        s.loads(text)


def test_unlimited_retries_never_overflow_the_backoff():
    assert s.Retry(max=-1, delay="1s", backoff=2.0, max_delay="5m", jitter=0).delay_before(5000) == 300


def test_exit_codes_take_precedence_over_upload_errors_as_in_azure():
    ec = s.ExitConditions.from_mapping({0: bnb.ExitOptions(dependency_action="satisfy"),
                                        "file_upload_error": bnb.ExitOptions(dependency_action="block")})
    assert ec.options_for(0, "upload").dependency_action == "satisfy"
    assert ec.options_for(None, "upload").dependency_action == "block"


@pytest.mark.parametrize("text, field", [
    ('id: j\ntasks:\n  - {id: a, command: "true", outputs: [{pattern: "*.txt"}]}\n', "destination"),
    ('id: j\ntasks:\n  - {id: a, command: "true", inputs: [{path: a, url: "file:///x", mode: "1"}]}\n', "mode"),
    ('id: j\ntasks:\n  - {id: a, command: "true", exit_conditions: {codes: [{dependency_action: satisfy}]}}\n',
     "exit_conditions"),
    ('id: j\ntasks:\n  - {id: a, command: "true", exit_conditions: {codes: [{code: x}]}}\n', "exit_conditions"),
    ('id: j\ntasks:\n  - {id: a, command: "true", outputs: {"*.txt": "az://c/{job_id.x}/"}}\n', "templated"),
    ('id: j\ntasks:\n  - {command: "true"}\n', "'id'"),
])
def test_malformed_job_files_are_spec_errors_naming_the_field(text, field):
    with pytest.raises(bnb.SpecError, match=field):
        s.loads(text)


def test_input_mappings_with_wrong_keys_are_spec_errors():
    with pytest.raises(bnb.SpecError, match="ResourceFile"):
        s.TaskSpec("t", "true", inputs=[{"path": "a", "url": "file:///x", "mode": "0755"}])
    with pytest.raises(bnb.SpecError, match="OutputFile"):
        s.TaskSpec("t", "true", outputs=[{"pattern": "*.txt"}])
