"""Secrets by reference resolved on the node (batchnb.node.secrets) and masked in what an attempt records."""

from __future__ import annotations

import json
import os

import dask.config
import pytest

import batchnb as bnb
from batchnb.node import runner, secrets
from batchnb.node.runner import AttemptRequest, PREPROCESSING
from keyvault_standin import FACTORY

VALUE = "kv-Value-0b8f2e1c"


@pytest.fixture
def vault(tmp_path, monkeypatch):
    store = tmp_path / "vault.json"
    store.write_text(json.dumps({"myvault": {"db-password": VALUE}}))
    monkeypatch.setenv("BATCHNB_TEST_KEYVAULT_FILE", str(store))
    with dask.config.set({"batchnb.keyvault-client-factory": FACTORY}):
        yield store


def request(tmp_path, **kw) -> AttemptRequest:
    base = dict(job_id="j", task_id="t", attempt=1, pool_id="p", node_root=str(tmp_path / "nodes"))
    base.update(kw)
    return AttemptRequest(**base)


def test_each_scheme_resolves(tmp_path, monkeypatch, vault):
    monkeypatch.setenv("BNB_T_SECRET", "from-the-env")
    (tmp_path / "tok").write_text("from-a-file\n")
    got = secrets.resolve({"A": "env:BNB_T_SECRET", "B": f"file:{tmp_path / 'tok'}",
                           "C": "keyvault://myvault/db-password"})
    assert got == {"A": "from-the-env", "B": "from-a-file", "C": VALUE}


def test_the_default_client_is_azures_secret_client_with_the_default_credential():
    client = secrets.make_client("https://myvault.vault.azure.net")
    assert type(client).__name__ == "SecretClient" and client.vault_url == "https://myvault.vault.azure.net"
    assert type(client._client._config.authentication_policy._credential).__name__ == "DefaultAzureCredential"


@pytest.mark.parametrize("ref, words", [
    ("file:/nonexistent/batchnb-secret", ["'/nonexistent/batchnb-secret'", "No such file"]),
    ("keyvault://myvault/missing", ["'myvault'", "'missing'", "ResourceNotFoundError"]),
    ("keyvault://othervault/db-password", ["'othervault'"]),
])
def test_an_unresolvable_reference_fails_the_attempt_naming_the_secret(tmp_path, vault, ref, words):
    rec = runner.run_attempt(request(tmp_path, command="echo ran", secret_refs={"DB_PASSWORD": ref}))
    assert rec.category == PREPROCESSING and not rec.succeeded
    assert rec.message.startswith("secrets['DB_PASSWORD']: ")
    assert all(w in rec.message for w in words), rec.message
    assert "ran" not in rec.stdout_tail and VALUE not in rec.message


def test_resolved_values_reach_the_task_and_are_masked_in_tails_and_files(tmp_path, monkeypatch, vault):
    (tmp_path / "tok").write_text("file-Secret-77")
    cmd = ('test "$C" = "' + VALUE + '" && test "$B" = file-Secret-77 && test "$A" = env-Secret-42 && '
           'echo "a=$A b=$B c=$C" && echo "err $C" >&2')
    rec = runner.run_attempt(request(tmp_path, command=cmd, secrets={"A": "env-Secret-42"},
                                     secret_refs={"B": f"file:{tmp_path / 'tok'}", "C": "keyvault://myvault/db-password"}))
    assert rec.succeeded, (rec.message, rec.stderr_tail)
    assert rec.stdout_tail == "a=*** b=*** c=***\n" and rec.stderr_tail == "err ***\n"
    for name in ("stdout.txt", "stderr.txt"):
        data = open(os.path.join(rec.task_dir, name), "rb").read()
        assert b"***" in data and not any(v in data for v in (b"env-Secret-42", b"file-Secret-77", VALUE.encode()))


def test_a_failing_task_message_and_tails_are_masked(tmp_path):
    rec = runner.run_attempt(request(tmp_path, command='echo "bad $A" >&2; exit 3', secrets={"A": "env-Secret-42"}))
    assert rec.exit_code == 3 and rec.stderr_tail == "bad ***\n"


def test_masking_a_file_finds_a_value_cut_by_a_chunk_boundary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_bytes(b"x" * ((1 << 20) - 5) + b"0123456789-secret" + b"y" * 10)
    secrets.Masker(["0123456789-secret"]).file(path)
    assert path.read_bytes() == b"x" * ((1 << 20) - 5) + b"***" + b"y" * 10


@pytest.mark.parametrize("ref", ["env:", "file:relative/path", "keyvault://vault", "keyvault://vault/", "keyvault:///s",
                                 "keyvault://v/a/b", "hunter2", "https://v.vault.azure.net/secrets/s"])
def test_a_malformed_reference_is_a_spec_error_naming_it(ref):
    with pytest.raises(bnb.SpecError) as info:
        bnb.TaskSpec("t", "true", secrets={"TOKEN": ref})
    assert "secrets['TOKEN']" in str(info.value) and "keyvault://<vault>/<secret>" in str(info.value)


@pytest.mark.parametrize("ref", ["env:X", "file:/run/secrets/x", "keyvault://myvault/db-password"])
def test_the_three_forms_are_accepted(ref):
    assert bnb.TaskSpec("t", "true", secrets={"TOKEN": ref}).secrets == {"TOKEN": ref}


def test_a_multi_instance_coordination_command_gets_resolved_secrets_masked(tmp_path, vault):
    from batchnb.node import multiinstance
    rec = multiinstance.run_coordination(request(tmp_path, command='test "$C" = "' + VALUE + '" && echo "c=$C"',
                                                 instance=1, host_list=("127.0.0.1", "127.0.0.1"),
                                                 secret_refs={"C": "keyvault://myvault/db-password"}))
    assert rec.category is None and rec.exit_code == 0, (rec.message, rec.stderr_tail)
    assert rec.stdout_tail == "c=***\n"
    data = open(os.path.join(rec.task_dir, multiinstance.COORDINATION_STDOUT), "rb").read()
    assert data == b"c=***\n"


def test_a_value_given_instead_of_a_reference_is_not_echoed():
    with pytest.raises(bnb.SpecError) as info:
        bnb.TaskSpec("t", "true", secrets={"TOKEN": "hunter2-plain-value"})
    assert "hunter2" not in str(info.value) and "secrets['TOKEN']: '<hidden>'" in str(info.value)
