"""JobPrep and JobRelease as specs: checked when made, in job files, in the ledger's form, and
imported from Azure Batch's jobPreparationTask and jobReleaseTask."""

from __future__ import annotations

import warnings

import pytest

import batchnb as bnb
from batchnb.spec import dumps, from_azure, from_dict, loads, to_dict
from batchnb.spec.options import job_options


def test_prep_and_release_are_checked_when_made():
    prep = bnb.JobPrep(["pip", "install", "x"], inputs={"req.txt": "file:///tmp/req.txt"}, env={"A": "1"},
                       retry=bnb.Retry(max=2), max_wall_clock="10m", wait_for_success=False,
                       rerun_on_node_reboot=False)
    assert prep.command == ("pip", "install", "x") and prep.max_wall_clock == 600.0
    assert prep.inputs[0].path == "req.txt" and prep.policy.max == 2
    assert bnb.JobPrep("true").policy.max == 0            # Azure's default: no retries
    assert bnb.JobRelease("rm -rf x").max_wall_clock == 900.0
    cases = [
        (lambda: bnb.JobPrep(""), "prep.command"),
        (lambda: bnb.JobPrep("x", wait_for_success="yes"), "prep.wait_for_success"),
        (lambda: bnb.JobPrep("x", rerun_on_node_reboot=1), "prep.rerun_on_node_reboot"),
        (lambda: bnb.JobPrep("x", retry=3), "prep.retry"),
        (lambda: bnb.JobPrep("x", max_wall_clock="soon"), "prep.max_wall_clock"),
        (lambda: bnb.JobPrep("x", inputs=["a"]), "prep.inputs"),
        (lambda: bnb.JobPrep("x", env={"A": object()}), "prep.env"),
        (lambda: bnb.JobRelease(["rm", 3]), "release.command"),
        (lambda: bnb.JobRelease("x", max_wall_clock="1h"), "release.max_wall_clock"),
        (lambda: bnb.JobRelease("x", max_wall_clock=0), "release.max_wall_clock"),
        (lambda: bnb.JobPrep("x", wait_for_succes=True), "wait_for_succes"),
    ]
    for make, field in cases:
        with pytest.raises(bnb.SpecError) as err:
            make()
        assert err.value.field.startswith(field), (field, str(err.value))
    with pytest.raises(bnb.SpecError, match="did you mean 'wait_for_success'"):
        bnb.JobPrep("x", wait_for_succes=True)


def test_a_job_takes_them_as_specs_command_lines_or_mappings():
    job = bnb.JobSpec("j", prep="echo ready", release=["rm", "-rf", "scratch"])
    assert job.prep == bnb.JobPrep("echo ready") and job.release == bnb.JobRelease(("rm", "-rf", "scratch"))
    assert bnb.JobSpec("j", prep={"command": "x", "retry": {"max": 1}}).prep.retry == bnb.Retry(max=1)
    with pytest.raises(bnb.SpecError, match="release: .*needs a preparation task"):
        bnb.JobSpec("j", release="rm x")
    with pytest.raises(bnb.SpecError, match="prep: 42 is invalid: expected bnb.JobPrep"):
        bnb.JobSpec("j", prep=42)
    with pytest.raises(bnb.SpecError, match="comand: .*did you mean 'command'"):
        bnb.JobSpec("j", prep={"comand": "x"})
    # pool.job()'s keywords: prep/release taken; None means none (a re-attach passes it).
    assert job_options({"prep": "x", "release": None}) == {"prep": "x"}
    with pytest.raises(bnb.SpecError, match="did you mean 'prep'"):
        job_options({"prepp": "x"})


def test_they_round_trip_through_the_ledger_form_and_job_files():
    job = bnb.JobSpec("j", prep=bnb.JobPrep("pip install -r req.txt", inputs={"req.txt": "file:///tmp/r.txt"},
                                            retry=bnb.Retry(max=2, delay="5s"), wait_for_success=False),
                      release=bnb.JobRelease("rm -rf scratch", env={"K": "v"}, max_wall_clock="2m"))
    assert from_dict(bnb.JobSpec, to_dict(job)) == job
    assert to_dict(job)["release"] == {"command": "rm -rf scratch", "env": {"K": "v"}, "max_wall_clock": 120.0}
    for fmt in ("yaml", "json"):
        assert loads(dumps(job, fmt)) == job
    text = ("id: j\nprep: {command: [sh, -c, 'echo hi'], wait_for_success: false}\nrelease: rm -rf x\n"
            "tasks:\n  - {id: a, command: echo A}\n")
    spec = loads(text)
    assert spec.prep == bnb.JobPrep(("sh", "-c", "echo hi"), wait_for_success=False)
    assert spec.release == bnb.JobRelease("rm -rf x") and [t.id for t in spec.tasks] == ["a"]
    with pytest.raises(bnb.SpecError, match="prep.command"):
        loads("id: j\nprep: {command: ''}\n")


PREP = {"id": "jobpreparation", "commandLine": "/bin/sh -c 'pip install -r req.txt'",
        "resourceFiles": [{"httpUrl": "https://acct.blob.core.windows.net/cfg/req.txt", "filePath": "req.txt"}],
        "environmentSettings": [{"name": "MODE", "value": "fast"}],
        "constraints": {"maxWallClockTime": "PT10M", "maxTaskRetryCount": 2},
        "waitForSuccess": False, "rerunOnNodeRebootAfterSuccess": False}
RELEASE = {"id": "jobrelease", "commandLine": "rm -rf scratch", "maxWallClockTime": "PT5M",
           "environmentSettings": [{"name": "KEEP", "value": "no"}]}


def test_from_azure_imports_a_job_with_preparation_and_release_tasks():
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # every field of these two is kept
        job = from_azure({"id": "j", "poolInfo": {"poolId": "p"}, "jobPreparationTask": PREP,
                          "jobReleaseTask": RELEASE})
    assert job.prep == bnb.JobPrep(("/bin/sh", "-c", "pip install -r req.txt"),
                                   inputs={"req.txt": "abfs://cfg@acct.dfs.core.windows.net/req.txt"},
                                   env={"MODE": "fast"}, retry=bnb.Retry(max=2), max_wall_clock=600.0,
                                   wait_for_success=False, rerun_on_node_reboot=False)
    assert job.release == bnb.JobRelease(("rm", "-rf", "scratch"), env={"KEEP": "no"}, max_wall_clock=300.0)
    # Azure's defaults: wait for success, no retries, a release of at most 15 minutes.
    job = from_azure({"id": "j", "jobPreparationTask": {"commandLine": "true"},
                      "jobReleaseTask": {"commandLine": "true"}})
    assert job.prep == bnb.JobPrep(("true",)) and job.release == bnb.JobRelease(("true",))
    with pytest.warns(bnb.AzureImportWarning, match="jobReleaseTask.resourceFiles"):
        from_azure({"id": "j", "jobPreparationTask": {"commandLine": "true"},
                    "jobReleaseTask": {"commandLine": "true", "resourceFiles": []}})
    with pytest.raises(bnb.SpecError, match="jobPreparationTask.waitForSuccess"):
        from_azure({"id": "j", "jobPreparationTask": {"commandLine": "true", "waitForSuccess": "yes"}})
    with pytest.raises(bnb.SpecError, match="jobReleaseTask.maxWallClockTime"):
        from_azure({"id": "j", "jobPreparationTask": {"commandLine": "true"},
                    "jobReleaseTask": {"commandLine": "true", "maxWallClockTime": "PT1H"}})
    with pytest.raises(bnb.SpecError, match="jobReleaseTask: .*needs a jobPreparationTask"):
        from_azure({"id": "j", "jobReleaseTask": {"commandLine": "true"}})
    with pytest.raises(bnb.SpecError, match="jobPreparationTask"):
        from_azure({"id": "j", "jobPreparationTask": "true"})
