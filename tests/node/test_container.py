"""Container tasks: the spec (``bnb.Container``), its job-file and Azure forms, and one
attempt run by the runner with a real podman (no Dask; whole jobs are in
tests/e2e/test_containers.py)."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import pytest

import batchnb as bnb
from batchnb.node import runner
from batchnb.node import container as ctr
from batchnb.node.runner import AttemptRequest
from batchnb.spec import codec

from container_fixture import all_containers, podman_image, running_containers  # noqa: F401 - a fixture
from waiting import wait_for


def request(tmp_path, image, **kw) -> AttemptRequest:
    base = dict(job_id="cj", task_id="t", attempt=1, pool_id="p", node_root=str(tmp_path / "nodes"),
                container=image if isinstance(image, bnb.Container) else bnb.Container(image, "--network=none"))
    base.update(kw)
    return AttemptRequest(**base)


# -- the spec ------------------------------------------------------------------------
def test_container_spec_is_checked_when_made():
    c = bnb.Container("localhost/app:1", options="--network=none -v '/a b:/c'", working_dir="taskWorkingDirectory")
    assert c.options == ("--network=none", "-v", "/a b:/c") and c.working_dir == "task"
    assert bnb.Container("x:1", working_dir="containerImageDefault").working_dir == "image"
    assert bnb.Container("x:1", working_dir="/app").working_dir == "/app"
    assert bnb.Container("x:1", working_dir=None) == bnb.Container("x:1")
    cases = [(dict(image=""), "container.image"), (dict(image="-v /:/host"), "container.image"),
             (dict(image="a b"), "container.image"), (dict(image="x:1", options="--name=mine"), "container.options"),
             (dict(image="x:1", options=["-d"]), "container.options"),
             (dict(image="x:1", options="'unclosed"), "container.options"),
             (dict(image="x:1", options=3), "container.options"),
             (dict(image="x:1", working_dir="here"), "container.working_dir")]
    for kwargs, field in cases:
        with pytest.raises(bnb.SpecError) as err:
            bnb.Container(**kwargs)
        assert err.value.field == field, kwargs
    with pytest.raises(bnb.SpecError, match="did you mean 'working_dir'"):
        bnb.Container("x:1", workdir="/app")


def test_task_takes_a_container_or_an_image_name_and_a_python_call_refuses_one():
    assert bnb.TaskSpec("t", "echo", container="localhost/app:1").container == bnb.Container("localhost/app:1")
    with pytest.raises(bnb.SpecError, match="expected bnb.Container"):
        bnb.TaskSpec("t", "echo", container=["localhost/app:1"])
    call = bnb.spec.PythonCall("f", b"x")
    with pytest.raises(bnb.SpecError, match="runs command lines only") as err:
        bnb.TaskSpec("t", python=call, container="localhost/app:1")
    assert "container" in str(err.value.field)
    from batchnb.spec.options import task_options
    with pytest.raises(bnb.SpecError, match="job.add_task") as err:
        task_options(lambda x: x, {"container": bnb.Container("localhost/app:1")}, "job.submit()")
    assert err.value.field == "container"


def test_pool_spec_takes_podman_docker_or_none():
    assert bnb.PoolSpec("p", container_runtime="Podman").container_runtime == "podman"
    assert bnb.PoolSpec("p").container_runtime is None
    with pytest.raises(bnb.SpecError) as err:
        bnb.PoolSpec("p", container_runtime="rkt")
    assert err.value.field == "container_runtime" and err.value.value == "rkt"


def test_a_named_runtime_missing_on_a_local_pool_is_refused_before_any_node(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))      # neither podman nor docker there
    with pytest.raises(bnb.SpecError, match="not on this machine's PATH") as err:
        bnb.Pool("nopodman", container_runtime="podman")
    assert (err.value.field, err.value.value) == ("container_runtime", "podman")


def test_job_file_round_trip_and_image_shorthand():
    spec = bnb.JobSpec("j", tasks=(bnb.TaskSpec("a", "echo", container=bnb.Container(
        "localhost/app:1", options="--network=none", working_dir="image")),
        bnb.TaskSpec("b", ["ls"], container="localhost/app:2")))
    for fmt in ("yaml", "json"):
        assert codec.loads(codec.dumps(spec, fmt)) == spec
    short = bnb.spec.loads("id: j\ntasks:\n  - {id: a, command: echo, container: localhost/app:1}\n")
    assert short.tasks[0].container == bnb.Container("localhost/app:1")
    with pytest.raises(bnb.SpecError, match="working_dir"):
        bnb.spec.loads("id: j\ntasks:\n  - {id: a, command: echo, container: {image: x, workdir: /}}\n")


def test_azure_container_settings_import_without_registry_credentials():
    task = {"id": "t", "commandLine": "python /app/run.py",
            "containerSettings": {"imageName": "myacr.azurecr.io/app:1", "containerRunOptions": "--network=none",
                                  "workingDirectory": "containerImageDefault",
                                  "registry": {"registryServer": "myacr.azurecr.io", "userName": "u",
                                               "password": "hunter2"}}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = bnb.spec.from_azure(task)
    assert spec.container == bnb.Container("myacr.azurecr.io/app:1", options="--network=none", working_dir="image")
    said = " ".join(str(w.message) for w in caught)
    assert "containerSettings.registry" in said and "hunter2" not in said
    with pytest.raises(bnb.SpecError) as err:
        bnb.spec.from_azure(task, strict=True)
    assert "registry" in err.value.field and "hunter2" not in str(err.value)
    with pytest.raises(bnb.SpecError, match="imageName"):
        bnb.spec.from_azure({"id": "t", "commandLine": "x", "containerSettings": {"containerRunOptions": "-x"}})
    assert "hunter2" not in codec.dumps(bnb.JobSpec("j", tasks=(spec,)))


# -- one attempt with a real podman ---------------------------------------------------
def test_command_runs_in_the_image_with_azure_variables_and_env_by_name(tmp_path, podman_image):
    req = request(tmp_path, podman_image, env={"MINE": "here"}, secrets={"TOKEN": "s3cret"},
                  command='echo "$AZ_BATCH_TASK_ID $MINE $TOKEN"; pwd; test -x /bin/busybox && echo in-image; '
                          'echo made > out.txt')
    plan = ctr.plan(req, runner.AttemptRecord("cj", "t", 1, "n", 0.0), dict(os.environ, TOKEN="s3cret"),
                    runner.node_dirs(req.node_root, "n"), tmp_path / "td", tmp_path / "td" / "wd", "n")
    assert "s3cret" not in " ".join(plan.argv) and "TOKEN" in plan.argv and "--rm" in plan.argv
    rec = runner.run_attempt(req)
    assert rec.succeeded, (rec.message, rec.stderr_tail)
    lines = rec.stdout_tail.splitlines()
    assert lines[0] == "t here ***"      # the secret reached the container; the recorded tail masks it
    assert lines[1] == os.path.join(rec.task_dir, "wd") and lines[2] == "in-image"
    assert Path(rec.task_dir, "wd", "out.txt").read_text() == "made\n"
    assert not all_containers("bnb-cj-t-1-")


def test_working_dir_image_and_argv_and_exit_codes(tmp_path, podman_image):
    rec = runner.run_attempt(request(tmp_path, bnb.Container(podman_image, "--network=none", working_dir="image"),
                                     command=("sh", "-c", "pwd; exit 3")))
    assert (rec.exit_code, rec.category, rec.stdout_tail.strip()) == (3, runner.EXIT_CODE, "/")
    rec = runner.run_attempt(request(tmp_path, bnb.Container(podman_image, "--no-such-option"), command="true",
                                     attempt=2))
    assert rec.category == runner.PREPROCESSING and rec.exit_code == 125
    assert podman_image in rec.message and "could not run" in rec.message


def test_missing_image_or_runtime_is_a_clear_preprocessing_failure(tmp_path, podman_image, monkeypatch):
    rec = runner.run_attempt(request(tmp_path, "localhost/bnb-no-such-image:1", command="true"))
    assert rec.category == runner.PREPROCESSING and rec.exit_code is None
    assert "'localhost/bnb-no-such-image:1' is not on the node" in rec.message
    monkeypatch.setenv("PATH", str(tmp_path))
    rec = runner.run_attempt(request(tmp_path, podman_image, command="true", attempt=2))
    assert rec.category == runner.PREPROCESSING
    assert "no container runtime" in rec.message and podman_image in rec.message
    rec = runner.run_attempt(request(tmp_path, podman_image, command="true", attempt=3, container_runtime="docker"))
    assert "'docker' is not on the PATH" in rec.message


def test_wall_clock_and_kill_remove_the_container(tmp_path, podman_image):
    rec = runner.run_attempt(request(tmp_path, podman_image, command="sleep 60", max_wall_clock=1.5))
    assert rec.category == runner.TIMEOUT
    assert not all_containers("bnb-cj-t-1-"), "the container outlived its wall clock"
    req = request(tmp_path, podman_image, command="sleep 60", attempt=2)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(runner.run_attempt(req)))
    thread.start()
    wait_for(lambda: running_containers("bnb-cj-t-2-"), timeout=30, what="the container to run")
    runner.kill_attempts([("cj", "t", 2)])
    # kill_attempts returns once the container is gone: terminate shows nothing still running
    assert not running_containers("bnb-cj-t-2-")
    thread.join(30)
    assert done and done[0].category == runner.TERMINATED
    assert not all_containers("bnb-cj-t-2-")
