"""A file symlink among a task's outputs is not followed outside the task's folder (issue 16, point 5)."""

from __future__ import annotations

import os

from batchnb.node import runner
from batchnb.node.runner import UPLOAD, AttemptRequest
from batchnb.spec import OutputFile


def run(tmp_path, command: str, pattern: str):
    out = tmp_path / "out"
    req = AttemptRequest(job_id="j", task_id="t", attempt=1, pool_id="p", node_root=str(tmp_path / "nodes"),
                         command=command, outputs=(OutputFile(pattern, f"file://{out}/"),))
    return runner.run_attempt(req), out


def test_a_link_to_a_file_outside_the_task_folder_is_not_uploaded(tmp_path):
    outside = tmp_path / "shadow"
    outside.write_text("root:secret-hash:19000")
    rec, out = run(tmp_path, f"echo mine > a.txt; ln -s {outside} x.txt", "*.txt")
    assert rec.category == UPLOAD and not rec.succeeded
    assert "x.txt is a symbolic link to" in rec.message and "outside the task's folder" in rec.message
    assert not (out / "x.txt").exists()
    assert not any("secret-hash" in p.read_text() for p in out.rglob("*") if p.is_file())


def test_a_relative_link_that_climbs_out_is_refused_too(tmp_path):
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "other.txt").write_text("another task's data")
    rec, out = run(tmp_path, "ln -s ../../../../../../other.txt y.txt", "y.txt")
    assert rec.category == UPLOAD and "y.txt is a symbolic link" in rec.message
    assert not (out / "y.txt").exists()


def test_a_link_inside_the_task_folder_is_uploaded(tmp_path):
    rec, out = run(tmp_path, "mkdir d; echo inside > d/real.txt; ln -s d/real.txt link.txt", "*.txt")
    assert rec.succeeded, rec.message
    assert (out / "link.txt").read_text() == "inside\n"
    assert not os.path.islink(out / "link.txt")
