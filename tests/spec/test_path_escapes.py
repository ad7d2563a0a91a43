"""A path in a job file or an Azure JSON cannot leave a task's folder (issue 16, point 5):
refused as a SpecError naming the field and the path, before anything runs."""

from __future__ import annotations

import json
import textwrap

import pytest

import batchnb as bnb
from batchnb import spec as s
from batchnb.spec import codec


@pytest.mark.parametrize("field, entry, path", [
    ("inputs", '{"../x": "memory://b/a"}', "../x"),
    ("inputs", '{"/etc/cron.d/x": "memory://b/a"}', "/etc/cron.d/x"),
    ("inputs", '{"a/../../x": "memory://b/a"}', "a/../../x"),
    ("outputs", '{"../../*.txt": "memory://out/"}', "../../*.txt"),
    ("outputs", '{"/etc/*": "memory://out/"}', "/etc/*"),
])
def test_a_job_file_path_that_escapes_the_task_folder_is_refused(field, entry, path):
    text = textwrap.dedent(f"""
        id: j
        tasks:
          - {{id: t, command: "true", {field}: {entry}}}
    """)
    with pytest.raises(bnb.SpecError) as info:
        codec.loads(text)
    assert repr(path) in str(info.value) and "inside the task" in str(info.value)


@pytest.mark.parametrize("task, path", [
    ({"resourceFiles": [{"httpUrl": "https://example.org/a", "filePath": "../../x"}]}, "../../x"),
    ({"resourceFiles": [{"httpUrl": "https://example.org/a", "filePath": "/etc/passwd"}]}, "/etc/passwd"),
    ({"outputFiles": [{"filePattern": "../../*", "uploadOptions": {"uploadCondition": "taskCompletion"},
                       "destination": {"container": {"containerUrl": "https://acct.blob.core.windows.net/c"}}}]},
     "../../*"),
    ({"outputFiles": [{"filePattern": "/etc/*", "uploadOptions": {"uploadCondition": "taskCompletion"},
                       "destination": {"container": {"containerUrl": "https://acct.blob.core.windows.net/c"}}}]},
     "/etc/*"),
])
def test_an_azure_json_path_that_escapes_the_task_folder_is_refused(task, path):
    with pytest.raises(bnb.SpecError) as info:
        s.from_azure(json.dumps({"id": "t", "commandLine": "true", **task}))
    assert path.lstrip("./") in str(info.value) and "inside the task" in str(info.value)
