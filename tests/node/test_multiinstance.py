"""One instance of a multi-instance task on its own (no Dask), and Azure's task variables:
the multi-instance ones only on multi-instance tasks, as Azure sets them."""

from __future__ import annotations

import os

from batchnb.node import multiinstance, runner
from batchnb.node.runner import AttemptRequest
from batchnb.spec import ResourceFile

MULTI_ONLY = ("AZ_BATCH_HOST_LIST", "AZ_BATCH_NODE_LIST", "AZ_BATCH_MASTER_NODE", "AZ_BATCH_IS_CURRENT_NODE_MASTER",
              "AZ_BATCH_TASK_SHARED_DIR")


def request(tmp_path, **kw) -> AttemptRequest:
    base = dict(job_id="j", task_id="t", attempt=1, pool_id="render", node_root=str(tmp_path / "nodes"))
    base.update(kw)
    return AttemptRequest(**base)


def env_of(record) -> dict:
    return dict(line.split("=", 1) for line in record.stdout_tail.splitlines() if "=" in line)


def test_an_ordinary_task_has_no_multi_instance_variables_and_the_pool_as_its_account(tmp_path):
    rec = runner.run_attempt(request(tmp_path, command="env | grep ^AZ_BATCH_"))
    env = env_of(rec)
    assert not set(MULTI_ONLY) & set(env), sorted(set(MULTI_ONLY) & set(env))
    assert env["AZ_BATCH_ACCOUNT_NAME"] == env["AZ_BATCH_POOL_ID"] == "render"
    assert env["AZ_BATCH_NODE_STARTUP_WORKING_DIR"] == os.path.join(env["AZ_BATCH_NODE_STARTUP_DIR"], "wd")
    assert env["AZ_BATCH_TASK_USER"]


def test_an_instance_gets_azure_multi_instance_variables(tmp_path):
    rec = runner.run_attempt(request(tmp_path, command="env | grep ^AZ_BATCH_", instance=1,
                                     host_list=("10.0.0.4", "10.0.0.5")))
    env = env_of(rec)
    assert env["AZ_BATCH_HOST_LIST"] == "10.0.0.4,10.0.0.5"
    assert env["AZ_BATCH_NODE_LIST"] == "10.0.0.4;10.0.0.5"
    assert env["AZ_BATCH_MASTER_NODE"] == "10.0.0.4:6000"
    assert env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "false"
    assert env["AZ_BATCH_TASK_SHARED_DIR"] == os.path.join(rec.task_dir, "shared")


def test_an_instance_stages_common_inputs_to_its_shared_dir_then_coordinates(tmp_path):
    src = tmp_path / "model.bin"
    src.write_text("weights")
    rec = multiinstance.run_coordination(request(
        tmp_path, instance=0, host_list=("127.0.0.1", "127.0.0.1"), inputs=(ResourceFile("model.bin", f"file://{src}"),),
        command='cat "$AZ_BATCH_TASK_SHARED_DIR/model.bin"; echo " $AZ_BATCH_IS_CURRENT_NODE_MASTER"; pwd'))
    assert rec.succeeded, rec.message
    assert rec.stdout_tail.splitlines() == ["weights true", os.path.join(rec.task_dir, "wd")]
    assert (tmp_path / "nodes" / "local" / "workitems" / "j" / "t" / "1" / "shared" / "model.bin").exists()
    assert open(os.path.join(rec.task_dir, multiinstance.COORDINATION_STDOUT)).read().startswith("weights")


def test_a_coordination_command_that_fails_says_so_with_its_exit_code(tmp_path):
    rec = multiinstance.run_coordination(request(tmp_path, instance=1, host_list=("a", "b"),
                                                 command="echo broken >&2; exit 4"))
    assert (rec.succeeded, rec.exit_code, rec.category) == (False, 4, runner.EXIT_CODE)
    assert rec.stderr_tail.strip() == "broken"


def test_an_instance_with_no_coordination_command_only_stages(tmp_path):
    rec = multiinstance.run_coordination(request(tmp_path, instance=1, host_list=("a", "b")))
    assert rec.succeeded and rec.exit_code == 0
