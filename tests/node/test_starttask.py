"""Start tasks without a pool: the attempt in <node root>/startup with Azure's variables and its own retries."""

from __future__ import annotations

import pytest

import batchnb as bnb
from batchnb.extensions.chaos import ChaosOptions
from batchnb.node.starttask import run_start_task
from batchnb.errors import SpecError
from waiting import wait_for


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setenv("AZ_BATCH_NODE_ID", "spot-7")      # outside a Dask worker the runner reads it
    return tmp_path


def test_start_task_runs_in_startup_dir_with_azure_variables(node):
    st = bnb.StartTask('echo "$AZ_BATCH_NODE_ID|$AZ_BATCH_TASK_WORKING_DIR|$AZ_BATCH_NODE_STARTUP_DIR|'
                       '$AZ_BATCH_NODE_IS_DEDICATED|${AZ_BATCH_JOB_ID-unset}|$GREETING"; pwd',
                       env={"GREETING": "hi"})
    res = run_start_task(st, "p1", str(node))
    assert res.succeeded and res.attempts == 1 and res.exit_code == 0
    startup = node / "spot-7" / "startup"
    first, cwd = (startup / "stdout.txt").read_text().splitlines()
    assert first == f"spot-7|{startup / 'wd'}|{startup}|false|unset|hi"
    assert cwd == str(startup / "wd")
    assert res.task_dir == str(startup)


def test_start_task_sees_the_group_its_backend_declares(node):
    """AZ_BATCH_NODE_IS_DEDICATED says what the backend declared (the pool passes WorkerInfo.group), not
    what the node's name suggests; the name is the fallback only when no group is given (above)."""
    from batchnb.node.starttask import prepare_node
    st = bnb.StartTask('echo "$AZ_BATCH_NODE_IS_DEDICATED"')
    assert run_start_task(st, "p1", str(node), group="dedicated").stdout_tail.strip() == "true"    # "spot-7"
    assert prepare_node(st, (), "p1", str(node), {}, "spot-7", group="dedicated").stdout_tail.strip() == "true"
    assert run_start_task(st, "p1", str(node), node_id="vm-1", group="spot").stdout_tail.strip() == "false"


def test_start_task_retries_then_succeeds(node):
    # fails on its first run only: the marker file survives between attempts
    st = bnb.StartTask('if [ -f tried ]; then exit 0; fi; touch tried; echo boom >&2; exit 4', max_retries=1)
    res = run_start_task(st, "p1", str(node))
    assert res.succeeded and res.attempts == 2


def test_start_task_fails_after_its_retries(node):
    st = bnb.StartTask(["sh", "-c", "echo nope >&2; exit 3"], max_retries=2)
    res = run_start_task(st, "p1", str(node))
    assert not res.succeeded
    assert (res.exit_code, res.attempts, res.category) == (3, 3, "exit_code")
    assert "nope" in res.stderr_tail


def test_start_task_timeout_and_missing_program(node):
    res = run_start_task(bnb.StartTask("sleep 5", max_wall_clock=0.3), "p1", str(node))
    assert res.category == "timeout" and res.attempts == 1
    res = run_start_task(bnb.StartTask(["/no/such/program"]), "p1", str(node))
    assert res.category == "exit_code" and res.exit_code == 127 and "cannot start" in res.message


@pytest.mark.parametrize("value, field", [
    ({"preempt_rate": 0}, "chaos.preempt_rate"),
    ({"preempt_rate": "often"}, "chaos.preempt_rate"),
    ({"preempt_rate": 1, "groups": "gpu"}, "chaos.groups"),
    ({"preempt_rate": 1, "max_preemptions": 0}, "chaos.max_preemptions"),
    ({"rate": 1}, "chaos"),
    ("lots", "chaos"),
])
def test_chaos_options_are_checked(value, field):
    with pytest.raises(SpecError) as err:
        ChaosOptions.from_value(value)
    assert err.value.field == field


def test_bad_chaos_and_bad_formula_fail_before_any_node_starts(home):
    with pytest.raises(SpecError, match="chaos"):
        bnb.Pool("bad", chaos={"preempt_rate": -1})
    with pytest.raises(bnb.FormulaError):
        bnb.Pool("bad", autoscale="$TargetDedicatedNodes = max(1,")
    with pytest.raises(SpecError) as err:      # no scheduler is contacted: the address is not even live
        bnb.Pool("bad", backend="address", address="tcp://127.0.0.1:9", autoscale="$TargetDedicatedNodes = 1")
    assert err.value.field == "autoscale" and "cannot scale" in str(err.value)


def make_zip(path, files: dict) -> str:
    import zipfile
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path.as_uri()


def test_app_packages_unpack_once_before_the_start_task(node, tmp_path):
    import tarfile
    from batchnb.node.starttask import prepare_node
    url = make_zip(tmp_path / "tool.zip", {"bin/hello.sh": "echo hello from tool"})
    tgz = tmp_path / "data.tar.gz"
    (tmp_path / "payload.txt").write_text("42")
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tmp_path / "payload.txt", arcname="payload.txt")
    pkgs = (bnb.AppPackage("tool", "1.0", url), bnb.AppPackage("data-set", "2", tgz.as_uri()))
    st = bnb.StartTask('sh "$AZ_BATCH_APP_PACKAGE_tool_1_0/bin/hello.sh"; cat "$AZ_BATCH_APP_PACKAGE_data_set_2/payload.txt"')
    res = prepare_node(st, pkgs, "p1", str(node), {}, "spot-7")
    assert res.succeeded and res.stdout_tail.splitlines() == ["hello from tool", "42"]
    apps = node / "spot-7" / "applications"
    assert sorted(p.name for p in apps.iterdir()) == ["data-set_2", "tool_1.0"]
    (tmp_path / "tool.zip").unlink()                 # a second join does not fetch again
    assert prepare_node(st, pkgs, "p1", str(node), {}, "spot-7").succeeded


def test_a_bad_app_package_fails_the_node_preparation(node, tmp_path):
    from batchnb.node.starttask import prepare_node
    (tmp_path / "junk.zip").write_text("not an archive")
    res = prepare_node(None, (bnb.AppPackage("junk", "1", (tmp_path / "junk.zip").as_uri()),), "p1", str(node), {},
                       "spot-7")
    assert res.category == "preprocessing" and "not a zip or tar archive" in res.message
    res = prepare_node(None, (bnb.AppPackage("gone", "1", (tmp_path / "nope.zip").as_uri()),), "p1", str(node), {},
                       "spot-7")
    assert res.category == "preprocessing" and "gone 1" in res.message
    assert not (node / "spot-7" / "applications" / "gone_1").exists()


def test_zip_app_package_keeps_the_execute_bit(node, tmp_path):
    import stat
    import zipfile
    from batchnb.node.starttask import prepare_node
    with zipfile.ZipFile(tmp_path / "tool.zip", "w") as zf:
        prog = zipfile.ZipInfo("bin/hello")
        prog.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(prog, "#!/bin/sh\necho hello from a packaged program\n")
        zf.writestr("README", "not a program")      # no mode recorded: left as extracted
    st = bnb.StartTask('"$AZ_BATCH_APP_PACKAGE_tool_1/bin/hello"')      # run directly, not through sh
    res = prepare_node(st, (bnb.AppPackage("tool", "1", (tmp_path / "tool.zip").as_uri()),), "p1", str(node), {},
                       "spot-7")
    assert res.succeeded, res
    assert res.stdout_tail.strip() == "hello from a packaged program"
    assert (node / "spot-7" / "applications" / "tool_1" / "bin" / "hello").stat().st_mode & 0o777 == 0o755


def test_kill_all_ends_the_start_task_without_a_retry(node):
    import threading
    from batchnb.node import runner
    from batchnb.node.starttask import START_KEY
    box = {}
    st = bnb.StartTask("sleep 300", max_retries=2)
    thread = threading.Thread(target=lambda: box.setdefault("res", run_start_task(st, "p1", str(node))))
    thread.start()
    wait_for(lambda: any(k[0] == START_KEY for k in list(runner._running)), 10, "the start task to register")
    assert runner.kill_all() == 1
    thread.join(10)
    res = box["res"]
    assert (res.category, res.attempts) == ("terminated", 1) and not res.succeeded
    assert not any(k[0] == START_KEY for k in runner._running)
