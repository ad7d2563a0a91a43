"""Secrets by reference end to end (issue 16, points 2 and 5): env:, file: and keyvault:// reach a
task run by a driver process, and no value is found in the ledger, its WAL, the home folder, the
driver's stdout and stderr, the views' state, HTML reprs or the ``batchnb`` command's output.

Key Vault is out of reach here: tests/keyvault_standin.py's KeyVaultStandIn stands in for the SDK's
SecretClient, named to the nodes by ``DASK_BATCHNB__KEYVAULT_CLIENT_FACTORY``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from keyvault_standin import FACTORY

REPO = Path(__file__).resolve().parents[2]
VALUES = {"ENV_TOKEN": "envSecret-3b1f9a77", "FILE_TOKEN": "fileSecret-c04d2e18", "KV_TOKEN": "kvSecret-97ae5b21"}
# The pool's storage credentials: held in memory, never stored or shown.
STORAGE = {"account_name": "devacct", "account_key": "c3RvcmFnZUtleS1hOWYx",
           "connection_string": "DefaultEndpointsProtocol=https;AccountName=devacct;AccountKey=Y29ubktleS04ZDJj;"}

DRIVER = textwrap.dedent("""
    import json, sys
    import batchnb as bnb
    from batchnb.ui.model import JobModel
    if __name__ == "__main__":
        secrets = json.loads(sys.argv[1])
        check, storage = sys.argv[2], json.loads(sys.argv[3])
        with bnb.Pool("local", dedicated=1, storage_options={"az": storage}) as pool:
            job = pool.job("sec")
            job.add_tasks([bnb.TaskSpec("check", ["sh", "-c", check], secrets=secrets),
                           bnb.TaskSpec("leak", 'echo "out $ENV_TOKEN $FILE_TOKEN $KV_TOKEN"; echo "err $KV_TOKEN" >&2',
                                        secrets=secrets)])
            res = job.wait(quiet=True)
            print("RESULT", res.ok, job.task("check").state.value, job.task("leak").state.value, flush=True)
            print("HTML", res._repr_html_(), job._repr_html_() if hasattr(job, "_repr_html_") else "",
                  pool._repr_html_() if hasattr(pool, "_repr_html_") else "", repr(pool), repr(pool.spec))
            print("MODEL", json.dumps(JobModel.from_job(job).state(), default=str))
            print("STDOUT", job.task("leak").stdout())
            print("STDERR", job.task("leak").stderr(), file=sys.stderr)
            print("ATTEMPTS", job.task("leak").attempts)
""")


def _check_command() -> str:
    # The task compares hashes: it proves it got each value without the command holding one.
    tests = [f'test "$(printf %s "${name}" | sha256sum | cut -d" " -f1)" = {hashlib.sha256(v.encode()).hexdigest()}'
             for name, v in VALUES.items()]
    return " && ".join(tests)


def test_secrets_by_reference_reach_the_task_and_nowhere_else(tmp_path):
    home, outside = tmp_path / "home", tmp_path / "outside"
    outside.mkdir()
    (outside / "token").write_text(VALUES["FILE_TOKEN"] + "\n")
    (outside / "vault.json").write_text(json.dumps({"teamvault": {"api-token": VALUES["KV_TOKEN"]}}))
    refs = {"ENV_TOKEN": "env:BNB_E2E_TOKEN", "FILE_TOKEN": f"file:{outside / 'token'}",
            "KV_TOKEN": "keyvault://teamvault/api-token"}
    env = {**os.environ, "BATCHNB_HOME": str(home), "BNB_E2E_TOKEN": VALUES["ENV_TOKEN"],
           "DASK_BATCHNB__KEYVAULT_CLIENT_FACTORY": FACTORY,
           "BATCHNB_TEST_KEYVAULT_FILE": str(outside / "vault.json"),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.run([sys.executable, str(script), json.dumps(refs), _check_command(),
                             json.dumps(STORAGE)], env=env,
                            capture_output=True, timeout=300, cwd=str(tmp_path))
    out, err = driver.stdout.decode(), driver.stderr.decode()
    assert driver.returncode == 0, err[-3000:]
    assert "RESULT True succeeded succeeded" in out, out[-3000:]
    assert "STDOUT out *** *** ***" in out and "err ***" in err
    cli = [subprocess.run([sys.executable, "-m", "batchnb.cli", *args], env=env, capture_output=True, timeout=120)
           for args in (["jobs"], ["jobs", "--json"], ["show", "sec"], ["show", "sec", "--json"], ["tasks", "sec", "--json"],
                        ["logs", "sec", "leak"], ["logs", "sec", "leak", "--stderr"])]
    assert all(c.returncode == 0 for c in cli), [c.stderr for c in cli]
    assert b"out *** *** ***" in cli[5].stdout and b"err ***" in cli[6].stdout
    haystacks = {"driver stdout": driver.stdout, "driver stderr": driver.stderr}
    haystacks.update({f"batchnb {i}": c.stdout + c.stderr for i, c in enumerate(cli)})
    files = [p for p in home.rglob("*") if p.is_file()]
    # The ledger (and its WAL while a driver runs) and the nodes' attempt folders are among them.
    assert {"ledger.sqlite", "stdout.txt", "stderr.txt"} <= {p.name for p in files}
    haystacks.update({str(p): p.read_bytes() for p in files})
    for where, data in haystacks.items():
        for name, value in [*VALUES.items(), ("account_key", STORAGE["account_key"]),
                            ("the connection string's key", "Y29ubktleS04ZDJj")]:
            assert value.encode() not in data, f"{name}'s value found in {where}"
