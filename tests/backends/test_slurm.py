"""The slurm backend on a real single-machine Slurm (the ``slurm`` fixture of tests/services).

Nodes are batch jobs: the conformance suite, a job of command and Python
tasks with dependencies, a resize seen in ``squeue``, and a worker whose
lifetime (its walltime, less a margin) ends mid-task. Bad options are
refused before any job is submitted.
"""

from __future__ import annotations

import dask
import pytest

import batchnb as bnb
from batchnb.backends.slurm import SlurmBackend
from batchnb.backends.testing import BackendConformance, states
from batchnb.engine.ledger import Ledger
from batchnb.errors import BackendError, SpecError
from batchnb.spec import PoolSpec

from waiting import wait_for

# One worker process per job, no nanny: half the start-up time on a loaded 2-core machine.
FAST = dict(queue="debug", walltime="00:10:00", cores=1, memory="1GB", host="127.0.0.1", nanny=False)


class TestSlurmBackend(BackendConformance):
    name = "slurm"
    can_preempt = False
    node_groups = {"dedicated-0": "dedicated"}
    bad_options = {"walltme": "1h"}
    startup = 60.0          # a job's worker starts in 3-6 s here, much later when the machine is busy

    @pytest.fixture(scope="class", autouse=True)
    def _slurm_runs(self, slurm):
        yield slurm

    def make_pool(self, tmp_path):
        return bnb.Pool("conf-slurm", backend="slurm", dedicated=1, ledger=Ledger(tmp_path / "l.sqlite"), **FAST)

    def test_preempt_requeues_and_the_node_comes_back(self, up):
        """Slurm nodes are dedicated batch jobs, none preemptible: pool.preempt refuses (the suite's
        own version of this check picks a spot node, and a Slurm pool has none)."""
        with pytest.raises(BackendError, match="cannot preempt"):
            up.preempt("dedicated-0")

    def test_a_job_of_command_and_python_tasks_with_dependencies_completes(self, up, job_id):
        job = up.job(job_id, max_task_retries=0)
        a = job.add_task("a", "echo 3 > $AZ_BATCH_NODE_SHARED_DIR/a.txt && echo made")
        sq = [job.submit(pow, i, 2, task_id=f"sq{i}", depends_on=["a"]) for i in range(3)]
        total = job.submit(max, *sq, task_id="total")
        last = job.add_task("last", "cat $AZ_BATCH_NODE_SHARED_DIR/a.txt", depends_on=["total"])
        assert job.wait(timeout=60).ok
        assert a.stdout().strip() == "made" and total.result() == 4 and last.stdout().strip() == "3"
        assert {t.node for t in job.tasks()} == {"dedicated-0"}

    def test_a_resize_from_one_to_two_nodes_is_two_slurm_jobs(self, up, slurm):
        prefix = "bnb-conf-slurm-"
        assert [j["state"] for j in slurm.jobs(prefix, live=True)] == ["RUNNING"]
        up.resize(dedicated=2)
        try:
            jobs = wait_for(lambda: [j for j in slurm.jobs(prefix) if j["state"] == "RUNNING"][1:] and
                            slurm.jobs(prefix), self.startup, "two running Slurm jobs")
            nodes = sorted(up._backend.requested())
            assert len(nodes) == 2 and sorted(j["name"] for j in jobs) == [prefix + n for n in nodes]
            assert up._backend.job_ids() == {j["name"][len(prefix):]: j["id"] for j in jobs}
            wait_for(lambda: states(up) == dict.fromkeys(nodes, "idle"), self.startup, "both nodes idle")
        finally:
            up.resize(dedicated=1)
        wait_for(lambda: [j["name"] for j in slurm.jobs(prefix, live=True)] == [prefix + "dedicated-0"], self.startup,
                 "the second job to end")

    def test_the_scheduler_and_workers_talk_tls(self, up):
        import os
        import stat
        info = up.client.scheduler_info()
        assert info["address"].startswith("tls://") and all(a.startswith("tls://") for a in info["workers"])
        keys = [f for f in os.listdir(up._backend.log_directory) if f.startswith(".dask-jobqueue.worker.key")]
        assert keys and all(stat.S_IMODE(os.stat(os.path.join(up._backend.log_directory, f)).st_mode) == 0o600
                            for f in keys)

    def test_a_slurm_pool_has_no_prices(self, up):
        cost = up.cost()
        assert cost.total == 0 and cost.rate_per_hour == 0 and cost.node_seconds["dedicated"] > 0


def test_a_worker_whose_walltime_ends_mid_task_requeues_it_without_a_retry(slurm, tmp_path):
    """The worker leaves at its lifetime (6 s here; a and b take 7 s) under a or b, which runs
    again on the job that replaces the node (and, should a have been cut, b may be cut there too);
    no retry is spent (the job allows none)."""
    with bnb.Pool("walltime", backend="slurm", dedicated=1, ledger=Ledger(tmp_path / "l.sqlite"),
                  **{**FAST, "lifetime": "6s"}) as pool:
        job = pool.job("through-walltime", max_task_retries=0)
        a = job.add_task("a", "sleep 3")
        b = job.add_task("b", "sleep 4; echo b done", depends_on=["a"])
        result = job.wait(timeout=120)
        assert result.ok, result
        assert b.stdout().strip() == "b done"
        attempts = {t.task_id: t.attempts for t in (a, b)}
        cut = {name: tries for name, tries in attempts.items() if len(tries) > 1}
        assert cut, attempts                      # the lifetime ended under one of them
        for name, tries in cut.items():
            assert [x["state"] for x in tries] == ["requeued"] * (len(tries) - 1) + ["succeeded"], tries
            assert all("walltime" in x["message"] for x in tries[:-1])
            # each cut ends its node's job: the attempt after it runs on another node
            assert all(x["node"] != y["node"] for x, y in zip(tries, tries[1:])), tries
            assert job.task(name).requeue_count == len(tries) - 1
        assert "dedicated-0" in {x["node"] for tries in cut.values() for x in tries[:-1]}
        nodes = pool._backend.requested()                 # the pool's target (1) still holds, on a new job
        assert len(nodes) == 1 and "dedicated-0" not in nodes


def test_autoscale_submits_a_job_for_waiting_tasks_and_cancels_it_when_idle(slurm, tmp_path):
    """A Python policy (as a formula would) drives the Slurm pool from 0 nodes to 1 and back."""
    formula = "$TargetDedicatedNodes = min(1, $PendingTasks.GetSample(1)); $NodeDeallocationOption = taskcompletion;"
    with dask.config.set({"batchnb.autoscale-sample": 0.25}), \
            bnb.Pool("elastic-hpc", backend="slurm", autoscale=lambda m: (min(1, m.pending_tasks), 0),
                     autoscale_interval=1, ledger=Ledger(tmp_path / "l.sqlite"), **FAST) as pool:
        assert pool.nodes() == [] and not slurm.jobs("bnb-elastic-hpc-")
        job = pool.job("burst", max_task_retries=0)
        for i in range(3):
            job.add_task(f"t{i}", "sleep 0.2")
        assert pool.evaluate_autoscale(formula)["$TargetDedicatedNodes"] == 1
        assert job.wait(timeout=60).ok
        assert {t.node for t in job.tasks()} == {"dedicated-0"}
        wait_for(lambda: pool.nodes() == [] and not slurm.jobs("bnb-elastic-hpc-", live=True), 60,
                 "the pool to shrink back to 0 nodes and its job to end")


@pytest.mark.parametrize("options, field", [
    ({"walltme": "1h"}, "walltme"),
    ({"walltime": 60}, "walltime"),
    ({"walltime": "soon"}, "walltime"),
    ({"walltime": "1h", "lifetime": "2h"}, "lifetime"),
    ({"cores": 0}, "cores"),
    ({"memory": None}, "memory"),
    ({"memory": "lots"}, "memory"),
    ({"queue": "de bug"}, "queue"),
    ({"job_extra_directives": "--qos=x"}, "job_extra_directives"),
    ({"job_extra_directives": ["--qos=x\n#SBATCH --exclusive"]}, "job_extra_directives"),
    ({"spot": 1}, "spot"),
])
def test_bad_options_are_spec_errors_before_any_job(options, field):
    options = {"memory": "1GB", **options}
    with pytest.raises(SpecError) as err:
        bnb.Pool("bad", backend="slurm", dedicated=1, **options)
    assert err.value.field == field


def test_a_misspelt_option_says_what_was_meant():
    with pytest.raises(SpecError, match="walltime"):
        bnb.Pool("bad", backend="slurm", dedicated=1, memory="1GB", walltme="1h")


def test_an_unknown_partition_is_a_spec_error_at_pool_creation(slurm):
    with pytest.raises(SpecError, match="partition") as err:
        bnb.Pool("nopart", backend="slurm", dedicated=1, **{**FAST, "queue": "nosuch"})
    assert (err.value.field, err.value.value) == ("queue", "nosuch")
    assert not slurm.jobs("bnb-nopart-")


def test_walltime_and_lifetime():
    b = SlurmBackend(PoolSpec("p", backend="slurm"), walltime="2-00:00:00", memory="1GB")
    assert (b.walltime, b.lifetime) == ("2-00:00:00", 172800.0 - 600)
    b = SlurmBackend(PoolSpec("p", backend="slurm"), walltime="90m", lifetime="1h", memory="1GB",
                     job_extra_directives=["--qos=debug", "#SBATCH --comment=bnb"], account="proj")
    assert b.walltime == "01:30:00" and b.lifetime == 3600.0
    script = b.job_script("dedicated-3")
    assert "#SBATCH -t 01:30:00" in script and "#SBATCH --qos=debug" in script and "#SBATCH -A proj" in script
    assert "#SBATCH --comment=bnb" in script and "#SBATCH #SBATCH" not in script
    assert "--name dedicated-3" in script and "--resources slots=1" in script
