"""An output to a container that does not exist fails its upload, as on Azure (issue 12, point 7).

Azure Batch never creates an output's container: the upload fails and the
task's failure is a ``file_upload_error`` (batchnb's category ``upload``).
Local destinations keep getting their folders. Blob storage is Azurite's,
through adlfs; the pool is a real local one.
"""

from __future__ import annotations

import uuid

import pytest

import batchnb as bnb
from batchnb import staging
from batchnb.engine.ledger import Ledger
from batchnb.errors import StagingError
from batchnb.spec import OutputFile
from batchnb.states import FailureCategory


@pytest.fixture
def task_dir(tmp_path):
    (tmp_path / "task" / "wd").mkdir(parents=True)
    (tmp_path / "task" / "wd" / "a.txt").write_text("A")
    return tmp_path / "task"


def stage_out(outputs, task_dir, storage_options):
    return staging.stage_out(tuple(outputs), task_dir / "wd", job_id="j", task_id="t1", attempt=1,
                             outcome="success", storage_options=storage_options, task_dir=task_dir)


@pytest.mark.parametrize("protocol", ["az", "abfs"])
def test_an_output_to_a_missing_container_fails_and_makes_no_container(azurite, task_dir, protocol):
    missing = f"nope{uuid.uuid4().hex[:16]}"
    url = f"{protocol}://{missing}/out/"
    with pytest.raises(StagingError) as info:
        stage_out([OutputFile("*.txt", url)], task_dir, azurite.storage_options)
    assert str(info.value) == (f"output *.txt: {url}a.txt: container {missing!r} does not exist; an output's "
                               "container is not created (nor by Azure Batch): create it before the task runs")
    assert not info.value.transient                     # no retry makes a container appear
    assert not azurite.fs().exists(missing)


def test_only_containers_are_not_made_folders_are(azurite, azurite_container, task_dir, tmp_path):
    missing = f"nope{uuid.uuid4().hex[:16]}"
    with pytest.raises(StagingError, match="does not exist"):
        stage_out([OutputFile("*.txt", f"az://{missing}/out/")], task_dir, azurite.storage_options)
    # Below an existing container, "folders" are name prefixes: nothing to make.
    c = azurite_container
    stats = stage_out([OutputFile("*.txt", f"az://{c}/deep/er/{{task_id}}/")], task_dir, azurite.storage_options)
    assert stats.files == 1 and azurite.fs().cat(f"{c}/deep/er/t1/a.txt") == b"A"
    # A local destination gets its folders, as before.
    dest = tmp_path / "store" / "not" / "there" / "yet"
    stats = stage_out([OutputFile("*.txt", dest.as_uri() + "/")], task_dir, {})
    assert stats.files == 1 and (dest / "a.txt").read_text() == "A"


def test_a_task_whose_output_container_is_missing_fails_with_the_upload_category(azurite, azurite_container,
                                                                                  tmp_path):
    missing = f"nope{uuid.uuid4().hex[:16]}"
    with bnb.Pool("outputs", dedicated=1, storage_options=azurite.storage_options,
                  ledger=Ledger(tmp_path / "l.sqlite")) as pool:
        job = pool.job("uploads", max_task_retries=0)
        lost = job.add_task("lost", "echo data > out.txt", outputs={"out.txt": f"az://{missing}/{{job_id}}/"})
        kept = job.add_task("kept", "echo data > out.txt",
                            outputs={"out.txt": f"az://{azurite_container}/{{job_id}}/"})
        result = job.wait(timeout=120, quiet=True)
    assert result.counts == {"succeeded": 1, "failed": 1}, result.failures
    assert lost.failure["category"] == FailureCategory.UPLOAD.value and lost.exit_code == 0
    assert f"container {missing!r} does not exist" in lost.failure["message"]
    assert not azurite.fs().exists(missing)
    assert kept.state == bnb.TaskState.SUCCEEDED
    assert azurite.fs().cat(f"{azurite_container}/uploads/out.txt") == b"data\n"
