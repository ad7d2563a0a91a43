"""Container tasks in whole jobs: a local pool, a real podman, the busybox image the
session builds offline (tests/container_fixture.py).

Every test names its own job, and its containers are named after it
(``bnb-<job>-<task>-<attempt>-...``), so ``podman ps`` is asked about this
test's containers only.
"""

from __future__ import annotations

import time
import uuid

import pytest

import batchnb as bnb
from batchnb.engine.ledger import Ledger

from container_fixture import all_containers, docker_host, podman_image, running_containers  # noqa: F401
from pools import temporary_pool
from waiting import wait_for

WAIT = 60   # seconds: a bound on every job.wait(); the tests take a few


@pytest.fixture(scope="module")
def pool(podman_image, tmp_path_factory):
    # After podman_image: the nodes' processes inherit its CONTAINERS_CONF.
    tmp = tmp_path_factory.mktemp("container-pool")
    pool = bnb.Pool("containers", dedicated=2, ledger=Ledger(tmp / "ledger.sqlite"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def job_id():
    return f"c{uuid.uuid4().hex[:8]}"


def test_a_container_task_writes_an_output_that_is_staged_out(pool, podman_image, job_id, tmp_path):
    out = tmp_path / "out"
    job = pool.job(job_id)
    t = job.add_task("w", 'mkdir -p res && echo "$AZ_BATCH_TASK_ID on $AZ_BATCH_NODE_ID $QUALITY" > res/seen.txt',
                     container=bnb.Container(podman_image, options="--network=none"), env={"QUALITY": "90"},
                     outputs={"res/*.txt": out.as_uri() + "/"})
    result = job.wait(timeout=WAIT)
    assert result.ok, (t.failure, t.stderr())
    assert (out / "seen.txt").read_text() == f"w on {t.attempts[-1]['node']} 90\n"
    assert not all_containers(f"bnb-{job_id}-")


def test_a_wall_clock_stops_the_container(pool, podman_image, job_id):
    job = pool.job(job_id)
    t = job.add_task("s", "sleep 60", container=bnb.Container(podman_image, options="--network=none"),
                     max_wall_clock="2s")
    started = time.monotonic()
    job.wait(timeout=WAIT)
    assert time.monotonic() - started < 30
    assert t.state == bnb.TaskState.FAILED and t.failure["category"] == "timeout"
    # Shown failed: nothing of it runs any more.
    assert not running_containers(f"bnb-{job_id}-") and not all_containers(f"bnb-{job_id}-")


def test_terminate_stops_the_container(pool, podman_image, job_id):
    job = pool.job(job_id)
    t = job.add_task("s", "sleep 60", container=bnb.Container(podman_image, options="--network=none"))
    wait_for(lambda: running_containers(f"bnb-{job_id}-s-"), timeout=30, what="the container to run")
    job.terminate()
    assert t.state == bnb.TaskState.CANCELLED
    # The kill runs on the node as the task is shown cancelled (as for any command task); it ends the
    # container itself, not only podman's client process, which would leave it running.
    wait_for(lambda: not all_containers(f"bnb-{job_id}-"), timeout=30, what="the container to be removed")
    wait_for(lambda: t.attempts and t.attempts[-1]["state"] == "terminated", timeout=30, what="the attempt record")


def test_a_missing_image_is_a_clear_error_naming_it(pool, job_id):
    job = pool.job(job_id)
    t = job.add_task("m", "echo never", container="localhost/bnb-no-such-image:1")
    job.wait(timeout=WAIT)
    assert t.state == bnb.TaskState.FAILED
    assert t.failure["category"] == "preprocessing"
    assert "'localhost/bnb-no-such-image:1' is not on the node" in t.failure["message"]


def test_a_python_task_refuses_a_container(pool, podman_image, job_id):
    job = pool.job(job_id)
    with pytest.raises(bnb.SpecError, match="add_task") as err:
        job.submit(abs, -1, container=bnb.Container(podman_image))
    assert err.value.field == "container"
    assert job.tasks() == []


def test_docker_runs_them_too(docker_host, podman_image, job_id, tmp_path):
    # The docker CLI against podman's Docker API (no docker daemon here): the same task, and a
    # wall clock that must remove the container through docker, whose client alone would leave it.
    out = tmp_path / "out"
    with temporary_pool("docker", dedicated=1, container_runtime="docker") as pool:
        job = pool.job(job_id)
        a = job.add_task("a", 'echo "$AZ_BATCH_TASK_ID $AZ_BATCH_JOB_ID" > seen.txt',
                         container=bnb.Container(podman_image, options="--network=none"),
                         outputs={"seen.txt": out.as_uri() + "/"})
        s = job.add_task("s", "sleep 60", container=bnb.Container(podman_image, options="--network=none"),
                         max_wall_clock="2s")
        job.wait(timeout=WAIT)
        assert a.state == bnb.TaskState.SUCCEEDED, (a.failure, a.stderr())
        assert (out / "seen.txt").read_text() == f"a {job_id}\n"
        assert s.failure["category"] == "timeout"
        assert not all_containers(f"bnb-{job_id}-")
