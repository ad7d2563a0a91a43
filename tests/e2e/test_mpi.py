"""Multi-instance (MPI) tasks on real local pools, with Debian's mpich.

Each local node is a worker process of its own; an instance's address is its
worker's host (127.0.0.1 here), so ``mpiexec -hosts $AZ_BATCH_HOST_LIST``
starts one rank per instance, as on Azure (Hydra starts local hosts' ranks
without ssh).
"""

from __future__ import annotations

import shutil
import subprocess

import dask
import psutil
import pytest

import batchnb as bnb
from pools import temporary_pool
from waiting import wait_for

MPIEXEC = "mpiexec.mpich"      # plain mpiexec may be Open MPI's where both are installed

SUM_RANKS_C = r"""
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    int rank, size, sum = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Reduce(&rank, &sum, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) printf("sum of ranks %d over %d ranks\n", sum, size);
    MPI_Finalize();
    return 0;
}
"""


@pytest.fixture(scope="module")
def sum_ranks(tmp_path_factory):
    """A real MPI program (MPI_Reduce of the ranks), built with mpich's mpicc."""
    folder = tmp_path_factory.mktemp("mpi")
    (folder / "sum_ranks.c").write_text(SUM_RANKS_C)
    subprocess.run([shutil.which("mpicc.mpich") or "mpicc", "-o", str(folder / "sum_ranks"),
                    str(folder / "sum_ranks.c")], check=True, timeout=120)
    return folder / "sum_ranks"


def _no_process_of(task_id: str, attempt: int) -> bool:
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("AZ_BATCH_TASK_ID") == task_id and env.get("AZ_BATCH_TASK_ATTEMPT") == str(attempt):
            return False
    return True


def test_two_instances_sum_their_ranks_with_mpiexec_across_two_nodes(pool2, unique, sum_ranks):
    job = pool2.job(unique)
    # The program reaches every node as a common input; the coordination command, run on each
    # node, makes it executable there and says where it ran.
    coordination = ('chmod +x "$AZ_BATCH_TASK_SHARED_DIR/sum_ranks" && '
                    'echo "$AZ_BATCH_NODE_ID master=$AZ_BATCH_IS_CURRENT_NODE_MASTER"')
    t = job.add_task("sum", f'{MPIEXEC} -n 2 -hosts "$AZ_BATCH_HOST_LIST" "$AZ_BATCH_TASK_SHARED_DIR/sum_ranks" '
                            '&& echo "hosts=$AZ_BATCH_HOST_LIST master=$AZ_BATCH_MASTER_NODE"',
                     multi_instance=bnb.MultiInstance(2, coordination,
                                                      common_inputs={"sum_ranks": f"file://{sum_ranks}"}))
    assert t.wait(timeout=90) == bnb.TaskState.SUCCEEDED, t.failure
    assert t.exit_code == 0
    out = t.stdout()
    assert "sum of ranks 1 over 2 ranks" in out
    assert "hosts=127.0.0.1,127.0.0.1 master=127.0.0.1:6000" in out
    subs = t.subtasks()
    assert [s.instance for s in subs] == [0, 1]
    assert {s.node for s in subs} == {"dedicated-0", "dedicated-1"}
    assert [s.state for s in subs] == ["succeeded", "succeeded"]
    assert [s.coordination_exit_code for s in subs] == [0, 0]
    assert subs[0].primary and "sum of ranks 1" in subs[0].stdout
    assert subs[1].stdout.strip() == f"{subs[1].node} master=false"
    assert t.attempts[-1]["node"] == subs[0].node
    wait_for(lambda: all(n.used_slots == 0 for n in pool2.nodes()), 10, "both nodes free again")


def test_a_failing_coordination_command_fails_the_task(pool2, unique, tmp_path):
    job = pool2.job(unique)
    ran = tmp_path / "application-ran"
    t = job.add_task("coord-fails", f"touch {ran}",
                     multi_instance=bnb.MultiInstance(2, 'echo "no daemon here" >&2; '
                                                         '[ "$AZ_BATCH_IS_CURRENT_NODE_MASTER" = true ] || exit 3'))
    assert t.wait(timeout=60) == bnb.TaskState.FAILED
    assert t.exit_code == 3
    assert "coordination command failed on instance 1" in t.failure["message"]
    assert not ran.exists(), "the application command ran although a coordination command failed"
    subs = t.subtasks()
    assert len(subs) == 2
    assert (subs[1].state, subs[1].exit_code, subs[1].stderr.strip()) == ("failed", 3, "no daemon here")
    wait_for(lambda: all(n.used_slots == 0 for n in pool2.nodes()), 10, "both nodes free again")


def test_more_instances_than_the_pool_has_nodes_is_refused_at_add_task(pool2, unique):
    job = pool2.job(unique)
    with pytest.raises(bnb.SpecError, match=r"multi_instance.number_of_instances.*3.*has 2 nodes"):
        job.add_task("big", "true", multi_instance=bnb.MultiInstance(3, "true"))
    assert job.tasks() == []


def test_multi_instance_tasks_and_a_stream_of_small_tasks_all_complete_without_starving(pool2, unique):
    job = pool2.job(unique)
    before = [job.add_task(f"a{i}", "sleep 0.2") for i in range(4)]
    mpi1 = job.add_task("mpi1", "echo one", multi_instance=bnb.MultiInstance(2, "true"))
    after = [job.add_task(f"b{i}", "sleep 0.2") for i in range(12)]
    mpi2 = job.add_task("mpi2", "echo two", multi_instance=bnb.MultiInstance(2, "true"))
    later = [job.add_task(f"c{i}", "sleep 0.1") for i in range(6)]
    result = job.wait(timeout=120, quiet=True)
    assert result.counts == {"succeeded": 4 + 12 + 6 + 2}, result.counts

    def dispatched(t):
        return t.attempts[-1]["dispatched"]
    # Once the multi-instance task heads the queue, the tasks behind it get no node until it runs.
    assert all(dispatched(t) >= dispatched(mpi1) for t in after + [mpi2] + later)
    assert all(dispatched(t) >= dispatched(mpi2) for t in later)
    assert all(dispatched(t) <= dispatched(mpi1) for t in before)


def test_a_lost_instance_requeues_the_whole_task_and_stops_the_others(tmp_path):
    started = tmp_path / "started"
    app = (f'if [ "$AZ_BATCH_TASK_ATTEMPT" = 1 ]; then echo up > {started}; sleep 60; fi; '
           'echo "done on attempt $AZ_BATCH_TASK_ATTEMPT"')
    with dask.config.set({"batchnb.preempt-return-after": 0.5}), \
            temporary_pool("mpi-spot", dedicated=0, spot=2) as pool:
        job = pool.job("lost-instance")
        t = job.add_task("sim", app, multi_instance=bnb.MultiInstance(2, "true"))
        wait_for(started.exists, 60, "the primary's application command to start")
        other = t.subtasks()[1].node
        pool.preempt(other)
        # The primary's application command is stopped: nothing of attempt 1 runs on.
        wait_for(lambda: _no_process_of("sim", 1), 30, "attempt 1's processes to be gone")
        assert t.wait(timeout=90) == bnb.TaskState.SUCCEEDED, t.failure
        assert [a["state"] for a in t.attempts] == ["requeued", "succeeded"]
        assert "instance 1 lost" in t.attempts[0]["message"]
        assert t.requeue_count == 1
        assert "done on attempt 2" in t.stdout()
        assert [s.attempt for s in t.subtasks()] == [2, 2]


def test_terminating_the_job_stops_every_instance_and_frees_the_nodes(pool2, unique, tmp_path):
    started = tmp_path / "started"
    job = pool2.job(unique)
    t = job.add_task("long", f"echo up > {started}; sleep 60",
                     multi_instance=bnb.MultiInstance(2, "true"))
    wait_for(started.exists, 60, "the primary's application command to start")
    assert [n.running for n in pool2.nodes()] == [("long",), ("long",)]
    job.terminate()
    assert t.wait(timeout=30) == bnb.TaskState.CANCELLED
    wait_for(lambda: _no_process_of("long", 1), 30, "the task's processes to be gone")
    wait_for(lambda: all(n.used_slots == 0 for n in pool2.nodes()), 10, "both nodes free again")
    assert [s.state for s in t.subtasks()] == ["terminated", "succeeded"]


def test_the_jobs_preparation_runs_on_every_instance_node_first(pool2, unique, tmp_path):
    marks = tmp_path / "prepared"
    marks.mkdir()
    job = pool2.job(unique, prep=bnb.JobPrep(f'echo ok > {marks}/"$AZ_BATCH_NODE_ID"'),
                    release=bnb.JobRelease("true"), on_all_tasks_complete="terminate")
    coordination = f'test -f {marks}/"$AZ_BATCH_NODE_ID" && echo "$AZ_BATCH_JOB_PREP_DIR"'
    t = job.add_task("sim", 'echo "prep dir: $AZ_BATCH_JOB_PREP_DIR"',
                     multi_instance=bnb.MultiInstance(2, coordination))
    assert t.wait(timeout=90) == bnb.TaskState.SUCCEEDED, t.failure
    assert sorted(p.name for p in marks.iterdir()) == ["dedicated-0", "dedicated-1"]
    assert "jobpreparation" in t.stdout()
    assert all("jobpreparation" in s.stdout for s in t.subtasks()[1:])
    job.wait(timeout=60, quiet=True)
    assert sorted(r.node_id for r in job.prep_runs()) == ["dedicated-0", "dedicated-1"]


def test_a_single_instance_task_still_runs_its_coordination_command_first(pool2, unique):
    job = pool2.job(unique)
    t = job.add_task("one", 'cat "$AZ_BATCH_TASK_SHARED_DIR/ready"; echo "hosts=$AZ_BATCH_HOST_LIST"',
                     multi_instance=bnb.MultiInstance(1, 'echo coordinated > "$AZ_BATCH_TASK_SHARED_DIR/ready"'))
    assert t.wait(timeout=60) == bnb.TaskState.SUCCEEDED, t.failure
    assert t.stdout().splitlines() == ["coordinated", "hosts=127.0.0.1"]
    assert len(t.subtasks()) == 1


def test_an_autoscale_pool_refuses_more_instances_than_it_can_scale_to():
    with dask.config.set({"batchnb.autoscale-max-nodes": 2}), \
            temporary_pool("mpi-autoscale", autoscale="$TargetDedicatedNodes = 0;") as pool:
        job = pool.job("too-wide")
        with pytest.raises(bnb.SpecError, match=r"number_of_instances.*5.*scales to at most 4 nodes"):
            job.add_task("wide", "true", multi_instance=bnb.MultiInstance(5))
        # Within what it can scale to, the task is taken and waits for nodes.
        t = job.add_task("fits", "true", multi_instance=bnb.MultiInstance(4))
        assert t.state == bnb.TaskState.ACTIVE
