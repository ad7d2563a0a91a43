"""Staged files in whole jobs: a real local pool, inputs and outputs through
adlfs against the session's Azurite, and file:// for the stores that are not
Azure (``memory://`` lives in one process; the nodes are other processes).

Each test makes its own container (``azurite_container``) and job id; the
pool is shared by the module. The outage tests stop and restart the
session's Azurite (on its port and data folder) and always leave it running.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import dask.config
import pytest

import batchnb as bnb
from waiting import wait_for
from batchnb.engine.events import BytesMoved
from batchnb.engine.ledger import Ledger

WAIT = 45  # seconds: a bound on every job.wait(); the tests take a fraction of it


def _capture_worker_logs(path: str) -> None:
    """On a worker: send batchnb's log records (INFO and up) to ``path``."""
    logger = logging.getLogger("batchnb")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@pytest.fixture(scope="module")
def worker_logs(tmp_path_factory):
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="module")
def pool(azurite, tmp_path_factory, worker_logs):
    tmp = tmp_path_factory.mktemp("staging-pool")
    pool = bnb.Pool("staging", dedicated=2, storage_options=azurite.storage_options,
                    ledger=Ledger(tmp / "ledger.sqlite"))
    try:
        wait_for(lambda: len(pool.client.scheduler_info()["workers"]) == 2, 30, "two workers")
        for address in pool.client.scheduler_info()["workers"]:
            pool.client.run(_capture_worker_logs, str(worker_logs / f"{address.rsplit(':', 1)[-1]}.log"),
                            workers=[address])
        yield pool
    finally:
        pool.close()


class Moved:
    """Every BytesMoved event of one job."""

    def __init__(self, pool, job_id: str):
        self.seen: list[BytesMoved] = []
        self._lock = threading.Lock()
        self.sub = pool.bus.subscribe(self._on, job_id=job_id, kinds=(BytesMoved,))

    def _on(self, events):
        with self._lock:
            self.seen.extend(events)

    def of(self, direction: str) -> dict[str, BytesMoved]:
        with self._lock:
            return {e.task_id: e for e in self.seen if e.direction == direction}


def last_attempt(task) -> dict:
    return task.attempts[-1]


# -- fan-out, node cache, a dependent reading every output ------------------------

FANOUT = 100
CHECK_ALL = ("python -c \"import pathlib, sys; files = sorted(pathlib.Path('parts').iterdir()); "
             "bad = [f.name for f in files if f.read_text().split() != ['65536', f.stem]]; "
             "print(len(files), 'parts'); sys.exit(1 if len(files) != 100 or bad else 0)\"")


def test_fan_out_of_100_tasks_shares_one_download_per_node_and_a_dependent_reads_all(
        pool, azurite, azurite_container, unique):
    c = azurite_container
    shared = os.urandom(65536)
    azurite.fs().pipe(f"{c}/shared/model.bin", shared)
    moved = Moved(pool, unique)
    job = pool.job(unique)
    ids = [f"t{i:03d}" for i in range(FANOUT)]
    job.add_tasks([bnb.TaskSpec(
        tid, 'test "$(wc -c < model.bin)" -eq 65536 && { wc -c < model.bin; echo "$AZ_BATCH_TASK_ID"; } '
             '> "$AZ_BATCH_TASK_ID.txt"',
        inputs={"model.bin": f"az://{c}/shared/model.bin"},
        outputs={"*.txt": f"abfs://{c}/{{job_id}}/"}) for tid in ids])
    merge = job.add_task("merge", CHECK_ALL, depends_on=ids, inputs={"parts": f"abfs://{c}/{unique}/"})
    result = job.wait(timeout=WAIT, quiet=True)
    assert result.counts == {"succeeded": FANOUT + 1}, result.failures[:3]
    assert merge.stdout().strip() == "100 parts"

    # Every attempt records its bytes and times; the merge read every output.
    sizes = {}
    for tid in ids:
        a = last_attempt(job.task(tid))
        assert a["bytes_in"] == 65536 and a["bytes_out"] > 0, a
        assert a["stage_in_seconds"] > 0 and a["stage_out_seconds"] > 0, a
        sizes[tid] = a["bytes_out"]
    assert azurite.fs().du(f"{c}/{unique}/", total=False) == {f"{c}/{unique}/{t}.txt": sizes[t] for t in ids}
    assert last_attempt(merge)["bytes_in"] == sum(sizes.values())

    # ... and the pool published it: one BytesMoved in and one out per task.
    wait_for(lambda: len(moved.of("in")) == FANOUT + 1 and len(moved.of("out")) == FANOUT, 10, "BytesMoved")
    assert {t: e.nbytes for t, e in moved.of("out").items()} == sizes
    assert moved.of("in")["merge"].nbytes == sum(sizes.values())

    # The node cache: on each node that ran tasks, the shared input is ONE file,
    # hard-linked into every task's working dir there (a second download would
    # have replaced the entry and broken the earlier links) -- or, for workers
    # running as root, which ignore read-only modes, copied into each.
    per_node = {}
    for tid in ids:
        a = last_attempt(job.task(tid))
        per_node.setdefault(a["node"], []).append(Path(a["task_dir"]) / "wd" / "model.bin")
    assert len(per_node) == 2, per_node.keys()      # both nodes: two downloads for 100 tasks
    for node, files in per_node.items():
        cache = Path(pool._node_root) / node / "cache"
        found = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size == 65536
                 and p.read_bytes() == shared]
        assert len(found) == 1, (node, found)
        if os.geteuid() == 0:
            assert all(f.stat().st_nlink == 1 and f.read_bytes() == shared for f in files)
            assert found[0].stat().st_nlink == 1
            # The entry was written (chmod, utime, rename) before the first copy was
            # made: a second download would have replaced it after that.
            assert found[0].stat().st_ctime_ns <= min(f.stat().st_ctime_ns for f in files)
        else:
            assert {f.stat().st_ino for f in files} == {found[0].stat().st_ino}
            assert found[0].stat().st_nlink == 1 + len(files)
    moved.sub.close()


# -- upload conditions and templating across retries ----------------------------

FLAKY = ('echo "out of $AZ_BATCH_TASK_ATTEMPT"; echo "err of $AZ_BATCH_TASK_ATTEMPT" >&2; '
         'echo "$AZ_BATCH_TASK_ATTEMPT" > note.txt; test "$AZ_BATCH_TASK_ATTEMPT" -ge 3 && echo done > final.txt')


def test_upload_conditions_and_templating_across_retries(pool, azurite, azurite_container, unique):
    c = azurite_container
    base = f"abfs://{c}/{{job_id}}/{{task_id}}/{{attempt}}/"
    job = pool.job(unique)
    flaky = job.add_task("flaky", FLAKY, retry=bnb.Retry(max=2), outputs=[
        bnb.OutputFile("std*.txt", base, "failure"),          # the task's logs, when it fails
        bnb.OutputFile("note.txt", base + "note.txt", "completion"),
        bnb.OutputFile("final.txt", f"az://{c}/{{job_id}}/{{task_id}}-final.txt", "success"),
    ])
    # A task that fails for good still uploads what it was told to on failure, and
    # stays failed for its own reason (exit_code), not an upload one.
    broken = job.add_task("broken", "echo why >&2; exit 4", outputs={"stderr.txt": base},
                          upload_condition="failure")
    result = job.wait(timeout=WAIT, quiet=True)
    assert result.counts == {"succeeded": 1, "failed": 1}
    assert [a["n"] for a in flaky.attempts] == [1, 2, 3]
    assert [a["state"] for a in flaky.attempts] == ["failed", "failed", "succeeded"]
    assert broken.failure["category"] == "exit_code" and broken.exit_code == 4

    fs = azurite.fs()
    listed = sorted(p[len(c) + 1:] for p in fs.find(c))
    assert listed == sorted([
        *(f"{unique}/flaky/{n}/{name}" for n in (1, 2) for name in ("stdout.txt", "stderr.txt")),
        *(f"{unique}/flaky/{n}/note.txt" for n in (1, 2, 3)),
        f"{unique}/flaky-final.txt",
        f"{unique}/broken/1/stderr.txt",
    ])
    assert fs.cat(f"{c}/{unique}/flaky/2/stdout.txt") == b"out of 2\n"
    assert fs.cat(f"{c}/{unique}/flaky/1/stderr.txt") == b"err of 1\n"
    assert fs.cat(f"{c}/{unique}/flaky/3/note.txt") == b"3\n"
    assert fs.cat(f"{c}/{unique}/broken/1/stderr.txt") == b"why\n"
    assert [a["bytes_out"] for a in flaky.attempts] == [9 + 9 + 2, 9 + 9 + 2, 2 + 5]


# -- a missing input --------------------------------------------------------------

def test_missing_input_fails_before_the_command_and_exit_conditions_apply(pool, azurite, azurite_container,
                                                                         unique, tmp_path):
    c = azurite_container
    marker = tmp_path / "ran"
    url = f"abfs://{c}/nowhere/in.csv"
    job = pool.job(unique)
    strict = job.add_task("strict", f"touch {marker}", inputs={"in.csv": url}, retry=bnb.Retry(max=5))
    after_strict = job.add_task("after-strict", "true", depends_on=["strict"])
    # Alone on the pool, six failures put three in a row on one node at least:
    # a missing input is not the node's fault, so both nodes stay usable.
    assert strict.wait(WAIT) == bnb.TaskState.FAILED
    assert {n.state for n in pool.nodes()} <= {"idle", "running"}, pool.nodes()
    lenient = job.add_task("lenient", f"touch {marker}", inputs={"data/in.csv": url}, exit_conditions={
        "pre_processing_error": bnb.ExitOptions(dependency_action="satisfy")})
    after_lenient = job.add_task("after-lenient", "echo ran", depends_on=["lenient"])
    result = job.wait(timeout=WAIT, quiet=True)

    assert not marker.exists()                      # the command never ran
    for task in (strict, lenient):
        assert task.state == bnb.TaskState.FAILED
        assert task.exit_code is None
        assert task.failure["category"] == "preprocessing"
        assert url in task.failure["message"]
        assert all(a["category"] == "preprocessing" and a["exit_code"] is None for a in task.attempts)
    assert len(strict.attempts) == 6                # retried as Azure does, counted against retries
    assert after_strict.state == bnb.TaskState.BLOCKED
    assert after_lenient.state == bnb.TaskState.SUCCEEDED and after_lenient.stdout() == "ran\n"
    assert {f["task_id"]: f["category"] for f in result.failures} == {
        "strict": "preprocessing", "lenient": "preprocessing", "after-strict": "blocked"}


# -- file:// stores: the same job without Azure -----------------------------------

def test_file_urls_work_the_same_way(pool, tmp_path, unique):
    store = tmp_path / "store"
    (store / "shared").mkdir(parents=True)
    (store / "shared" / "words.txt").write_text("alpha beta\n")
    (store / "tools").mkdir()
    (store / "tools" / "count.sh").write_text('#!/bin/sh\nwc -w < "$1"\n')
    job = pool.job(unique)
    ids = [f"w{i}" for i in range(6)]
    job.add_tasks([bnb.TaskSpec(
        tid, './bin/count.sh words.txt > "$AZ_BATCH_TASK_ID.n"',
        inputs=[bnb.ResourceFile("words.txt", (store / "shared" / "words.txt").as_uri()),
                bnb.ResourceFile("bin/", (store / "tools").as_uri() + "/", file_mode="0755")],
        outputs={"*.n": f"{store.as_uri()}/{{job_id}}/counts/"}) for tid in ids])
    total = job.add_task("total", "awk '{s += $1} END {print s}' counts/*.n", depends_on=ids,
                         inputs={"counts/": f"{store.as_uri()}/{unique}/counts/"},
                         outputs={"stdout.txt": f"{store.as_uri()}/{{job_id}}/total.txt"})
    missing = job.add_task("missing", "true", inputs={"x": (store / "nope.txt").as_uri()})
    result = job.wait(timeout=WAIT, quiet=True)
    assert result.counts == {"succeeded": 7, "failed": 1}
    assert sorted(p.name for p in (store / unique / "counts").iterdir()) == [f"{t}.n" for t in ids]
    assert (store / unique / "total.txt").read_text() == "12\n"
    assert total.attempts[-1]["bytes_in"] == 6 * 2
    assert missing.failure["category"] == "preprocessing"
    assert (store / "nope.txt").as_uri() in missing.failure["message"]



def scale(factor: int) -> int:
    """A Python task: reads its staged input from its working dir, writes an output there."""
    wd = Path(bnb.current_task().working_dir)
    text = (wd / "in.txt").read_text()
    (wd / "out.txt").write_text(text * factor)
    return len(text)


def test_python_tasks_stage_files_too(pool, azurite, azurite_container, unique):
    c = azurite_container
    azurite.fs().pipe(f"{c}/in.txt", b"abc")
    job = pool.job(unique)
    files = dict(inputs={"in.txt": f"az://{c}/in.txt"}, outputs={"out.txt": f"az://{c}/{{job_id}}/{{task_id}}.txt"})
    inline = job.submit(scale, 2, task_id="inline", **files)
    own_process = job.submit(scale, 3, task_id="own-process", max_wall_clock="1m", **files)
    job.wait(timeout=WAIT, quiet=True)
    assert (inline.result(), own_process.result()) == (3, 3)
    assert azurite.fs().cat(f"{c}/{unique}/inline.txt") == b"abcabc"
    assert azurite.fs().cat(f"{c}/{unique}/own-process.txt") == b"abcabcabc"
    assert [(a["bytes_in"], a["bytes_out"]) for a in (inline.attempts[-1], own_process.attempts[-1])] == [(3, 6), (3, 9)]
    # The storage options reach a Python task's own process through its task dir;
    # they must not stay on the node's disk once the attempt is over.
    for task in (inline, own_process):
        for path in Path(task.attempts[-1]["task_dir"]).rglob("*"):
            if path.is_file():
                leaked = azurite.connection_string.encode() in path.read_bytes()
                assert not leaked, f"the connection string in {path}"

# -- credentials ------------------------------------------------------------------

def secrets_of(azurite) -> list[str]:
    from azurite_fixture import ACCOUNT_KEY
    # The whole key, the connection string, and a piece of the key (a cut or
    # re-wrapped key would still leak).
    return [ACCOUNT_KEY, azurite.connection_string, ACCOUNT_KEY[:20]]


def assert_no_secret(azurite, pool, caplog, worker_logs) -> None:
    """No credential in the ledger file (every text column of every table), the logs or the specs."""
    secrets = secrets_of(azurite)
    con = sqlite3.connect(f"file:{pool.ledger.path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"jobs", "tasks", "attempts", "events", "nodes", "audit"} <= set(tables)
        scanned = 0
        for table in tables:
            for row in con.execute(f"SELECT * FROM {table}"):  # noqa: S608 - names from sqlite_master
                for value in row:
                    if isinstance(value, bytes):
                        value = value.decode("latin-1")
                    if isinstance(value, str):
                        scanned += 1
                        for secret in secrets:
                            assert secret not in value, f"a credential in table {table}: {value[:300]}"
        assert scanned > 0
    finally:
        con.close()
    logs = [r.getMessage() for r in caplog.records] + [
        p.read_text(errors="replace") for p in worker_logs.iterdir()]
    for text in logs:
        for secret in secrets:
            assert secret not in text, f"a credential in a log: {text[:300]}"
    for text in (repr(pool.spec), json.dumps(bnb.spec.to_dict(pool.spec))):
        for secret in secrets:
            assert secret not in text


def test_credentials_stay_out_of_specs_ledger_logs_and_messages(pool, azurite, azurite_container, unique, caplog,
                                                               worker_logs):
    c = azurite_container
    caplog.set_level(logging.DEBUG)
    azurite.fs().pipe(f"{c}/in.txt", b"x")
    job = pool.job(unique)
    fine = job.add_task("fine", "cat in.txt > out.txt", inputs={"in.txt": f"az://{c}/in.txt"},
                        outputs={"out.txt": f"az://{c}/{{job_id}}/out.txt"})
    # An upload the store refuses (container names are lower case): the task
    # fails with the upload category, whose exit condition lets "after" run.
    refused = job.add_task("refused", "echo data > out.txt", outputs={"out.txt": "abfs://Bad_Name/{job_id}/out.txt"},
                           exit_conditions={"file_upload_error": bnb.ExitOptions(dependency_action="satisfy")})
    after = job.add_task("after", "true", depends_on=["refused"])
    missing = job.add_task("missing", "true", inputs={"x": f"abfs://{c}/missing.bin"})
    result = job.wait(timeout=WAIT, quiet=True)
    assert result.counts == {"succeeded": 2, "failed": 2}, result.failures
    assert fine.state == after.state == bnb.TaskState.SUCCEEDED
    assert refused.failure["category"] == "upload" and refused.exit_code == 0
    assert "abfs://Bad_Name/" in refused.failure["message"]
    assert missing.failure["category"] == "preprocessing"

    secrets = secrets_of(azurite)
    # What goes to the nodes holds them, but does not show them (tracebacks, logs).
    from batchnb.node.runner import AttemptRequest
    shown = repr(AttemptRequest(unique, "t", 1, pool.name, storage_options=azurite.storage_options,
                                secrets={"TOKEN": azurite.connection_string}))
    messages = [t.failure["message"] for t in (refused, missing)] + [f["message"] for f in result.failures]
    for text in messages + [str(result), repr(job.tasks()), shown]:
        for secret in secrets:
            assert secret not in text
    assert_no_secret(azurite, pool, caplog, worker_logs)


# -- storage down in the middle of a job ------------------------------------------

def attempts_of(pool, job_id: str) -> list[dict]:
    return [a for t in pool.ledger.tasks(job_id) for a in pool.ledger.attempts(job_id, t["id"])]


def _set_config(values: dict) -> dict:
    """On a worker: set these dask.config settings (for the worker's life); returns the old values."""
    import dask.config
    old = {key: dask.config.get(key) for key in values}
    dask.config.set(values)
    return old


@pytest.fixture
def quick_storage_retries(pool):
    """In-attempt storage retries that give up in half a second instead of a minute (on
    the nodes, where transfers run), and task retries after them that wait a second
    instead of 30 s (in the driver, where the dispatcher decides)."""
    old = pool.client.run(_set_config, {"batchnb.staging-retry-for": "0.5s", "batchnb.staging-retry-delay": "0.1s"})
    try:
        with dask.config.set({"batchnb.staging-task-retry-delay": f"{STORAGE_RETRY_DELAY}s"}):
            yield
    finally:
        for address, values in old.items():
            pool.client.run(_set_config, values, workers=[address])


STORAGE_RETRY_DELAY = 1.0


def test_azurite_stopped_mid_job(pool, azurite, azurite_container, unique, caplog, worker_logs, tmp_path,
                                 quick_storage_retries):
    c = azurite_container
    caplog.set_level(logging.INFO)
    fs = azurite.fs()
    fs.pipe(f"{c}/in/seed.txt", b"seed\n")
    gate = tmp_path / "gate"
    job = pool.job(unique, max_task_retries=5)
    io = dict(inputs={"seed.txt": f"abfs://{c}/in/seed.txt"},
              outputs={"out.txt": f"abfs://{c}/{{job_id}}/{{task_id}}.txt"})
    write = 'cat seed.txt > out.txt; echo "$AZ_BATCH_TASK_ID" >> out.txt'
    # Four tasks run freely; the others hold (bounded) until the gate opens, so
    # that some are in their command, inputs staged, when storage goes away.
    # (Readiness is read from the store and the node's disk, not from task
    # states: tasks sent together in one bundle report only when it ends.)
    free = [bnb.TaskSpec(f"f{i}", write, **io) for i in range(4)]
    # h00 may not retry: it shows the upload failure as the task's final outcome.
    held = [bnb.TaskSpec(f"h{i:02d}", f"touch {tmp_path}/in-$AZ_BATCH_TASK_ID; "
                                      f"for i in $(seq 400); do [ -e {gate} ] && break; sleep 0.05; done; {write}",
                         retry=bnb.Retry(max=0) if i == 0 else None, **io) for i in range(16)]
    job.add_tasks(free + held)
    started = time.monotonic()
    wait_for(lambda: len(fs.find(f"{c}/{unique}/")) == 4 and (tmp_path / "in-h00").exists(), 30,
             "four outputs uploaded and h00 in its command")
    before = set(fs.find(f"{c}/{unique}/"))
    azurite.stop()
    try:
        gate.touch()
        # The held tasks fail to upload once the staging retries give up; the
        # tasks that start meanwhile fail to stage in.
        wait_for(lambda: {a["category"] for a in attempts_of(pool, unique)} >= {"upload", "preprocessing"}, 30,
                 "attempts to fail at upload and at stage-in")
    finally:
        azurite.start()
    result = job.wait(timeout=WAIT, quiet=True)
    elapsed = time.monotonic() - started

    attempts = attempts_of(pool, unique)
    outage = [a for a in attempts if a["category"] in ("upload", "preprocessing")]
    assert all("storage unavailable" in a["message"] for a in outage), outage
    assert {a["category"] for a in attempts} <= {None, "upload", "preprocessing"}
    # Azure's semantics: each such failure is an attempt, retried under the task's retries ...
    retried = {(a["task_id"], a["n"] + 1) for a in outage}
    assert retried & {(a["task_id"], a["n"]) for a in attempts}
    # ... but not at once: the next attempt waits batchnb.staging-task-retry-delay, although
    # max_task_retries gives these tasks a Retry without delay.
    by_key = {(a["task_id"], a["n"]): a for a in attempts}
    for a in outage:
        nxt = by_key.get((a["task_id"], a["n"] + 1))
        if nxt is not None:
            assert nxt["dispatched"] >= a["end"] + STORAGE_RETRY_DELAY, (a, nxt)
    assert result.counts.get("succeeded", 0) + result.counts.get("failed", 0) == len(free + held), result.counts
    h00 = job.task("h00")
    assert h00.failure["category"] == "upload" and h00.exit_code == 0 and len(h00.attempts) == 1
    for f in result.failures:   # a task that ran out of retries did so for the outage
        assert f["category"] in ("upload", "preprocessing"), f
    after = set(fs.find(f"{c}/{unique}/"))
    assert len(before) == 4 and before <= after             # nothing uploaded before was lost
    for t in job.tasks():
        if t.state == "succeeded":
            assert fs.cat(f"{c}/{unique}/{t.id}.txt") == f"seed\n{t.id}\n".encode()
    assert elapsed < 60
    # The staging retries were logged on the nodes (and scrubbed, as checked next).
    assert any("try 2 in" in p.read_text() for p in worker_logs.iterdir())
    assert_no_secret(azurite, pool, caplog, worker_logs)


# -- a storage blip: ridden out inside the attempts ----------------------------------

BLIP_TASKS = 60
BLIP = 10.0   # seconds Azurite is down (plus the time it takes to start again)


def test_a_10s_storage_outage_fails_no_task(pool, azurite, azurite_container, unique, worker_logs):
    c = azurite_container
    fs = azurite.fs()
    fs.pipe({f"{c}/in/t{i:02d}.txt": f"input {i}\n".encode() for i in range(BLIP_TASKS)})
    job = pool.job(unique, max_task_retries=2)
    job.add_tasks([bnb.TaskSpec(
        f"t{i:02d}", 'sleep 0.2; cat in.txt > out.txt; echo "$AZ_BATCH_TASK_ID" >> out.txt',
        inputs={"in.txt": f"az://{c}/in/t{i:02d}.txt"},
        outputs={"out.txt": f"abfs://{c}/{{job_id}}/{{task_id}}.txt"}) for i in range(BLIP_TASKS)])
    try:
        wait_for(lambda: len(fs.find(f"{c}/{unique}/")) >= 6, 30, "the first outputs uploaded")
    except AssertionError as exc:   # say where the job stood: storage is still up here
        failed = [(a["task_id"], a["n"], a["message"]) for a in attempts_of(pool, unique) if a["category"]]
        raise AssertionError(f"{exc}; tasks {job.task_counts()}, failed attempts {failed[:3]}, "
                             f"nodes {pool.nodes()}") from None
    azurite.stop()
    try:
        time.sleep(BLIP)   # not a wait for state: this is the outage
    finally:
        azurite.start()
    result = job.wait(timeout=WAIT + 60, quiet=True)

    assert result.counts == {"succeeded": BLIP_TASKS}, result.failures[:3]
    # Not one attempt failed: the in-attempt retries rode the outage out.
    assert [a for a in attempts_of(pool, unique) if a["state"] == "failed"] == []
    for i in range(BLIP_TASKS):
        assert fs.cat(f"{c}/{unique}/t{i:02d}.txt") == f"input {i}\nt{i:02d}\n".encode()
    # The outage did meet transfers of this job (the nodes logged their retries).
    retried = [line for p in worker_logs.iterdir() for line in p.read_text().splitlines()
               if f"//{c}/" in line and "try 2 in" in line]
    assert retried
