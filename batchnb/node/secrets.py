"""Secrets by reference, resolved on the node as an attempt starts, and masked in what it records.

A task's ``secrets={"TOKEN": ref}`` holds references, never values:

- ``env:NAME``: the driving process's environment variable (read by the driver, which is
  where the user set it; the value travels in the attempt's request, never recorded);
- ``file:/path``: a file on the node (its one trailing newline dropped, as ``echo`` writes it);
- ``keyvault://vault/secret``: Azure Key Vault, through azure-keyvault-secrets'
  ``SecretClient`` with azure-identity's ``DefaultAzureCredential`` (a managed identity on
  Azure), imported only when such a reference is met (extra ``keyvault``).

The Key Vault client is made by ``make_client(vault_url)``; the config key
``batchnb.keyvault-client-factory`` (``"module:callable"``, read on the node, so
``DASK_BATCHNB__KEYVAULT_CLIENT_FACTORY`` reaches worker processes) replaces it with a
stand-in where Key Vault is out of reach.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "token")
>>> _ = open(path, "w").write("s3cr3t-value\\n")
>>> resolve({"TOKEN": f"file:{path}"})
{'TOKEN': 's3cr3t-value'}
>>> Masker(["s3cr3t-value"]).text("got s3cr3t-value")
'got ***'
"""

from __future__ import annotations

import importlib
import os
from typing import Iterable

SCHEMES = ("env:", "file:", "keyvault://")
MASK = "***"
# Shorter values would mask ordinary words in every log ("1", "yes"): kept as printed.
MIN_MASKED = 4


class SecretUnavailable(Exception):
    """A reference that cannot be resolved; its message names the secret, never a value."""


def scheme(ref: str) -> str | None:
    return next((s for s in SCHEMES if ref.startswith(s)), None)


def keyvault_parts(ref: str) -> tuple[str, str] | None:
    """``("vault", "secret")`` of a well-formed ``keyvault://vault/secret``, else None."""
    vault, sep, secret = ref[len("keyvault://"):].partition("/")
    if not sep or not vault or not secret or "/" in secret:
        return None
    return vault, secret


def _env(name: str, ref: str) -> str:
    value = os.environ.get(ref[4:])
    if value is None:
        raise SecretUnavailable(f"secrets[{name!r}]: environment variable {ref[4:]!r} is not set")
    return value


def _file(name: str, ref: str) -> str:
    path = ref[5:]
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretUnavailable(f"secrets[{name!r}]: cannot read {path!r} on this node: "
                                f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    return value[:-1] if value.endswith("\n") else value


def make_client(vault_url: str):
    """Azure's SecretClient for ``vault_url``, with the default credential chain."""
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient
    return SecretClient(vault_url=vault_url, credential=DefaultAzureCredential())


def _client_factory():
    import dask.config
    spec = dask.config.get("batchnb.keyvault-client-factory", None)
    if not spec:
        return make_client
    module, _, attr = str(spec).partition(":")
    return getattr(importlib.import_module(module), attr)


def _keyvault(name: str, ref: str) -> str:
    vault, secret = keyvault_parts(ref) or (None, None)
    if vault is None:
        raise SecretUnavailable(f"secrets[{name!r}]: {ref!r} is not keyvault://<vault>/<secret>")
    try:
        client = _client_factory()(f"https://{vault}.vault.azure.net")
        value = client.get_secret(secret).value
    except ImportError as exc:
        raise SecretUnavailable(f"secrets[{name!r}]: Key Vault needs batchnb's 'keyvault' extra "
                                f"(azure-keyvault-secrets, azure-identity): {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the SDK's errors are many; each fails the attempt
        # The first line only: an SDK message names the vault and secret, never its value.
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SecretUnavailable(f"secrets[{name!r}]: Key Vault {vault!r} secret {secret!r} could not be "
                                f"read: {type(exc).__name__}: {first}") from None
    if value is None:
        raise SecretUnavailable(f"secrets[{name!r}]: Key Vault {vault!r} secret {secret!r} has no value")
    return value


_RESOLVERS = {"env:": _env, "file:": _file, "keyvault://": _keyvault}


def resolve(refs: dict) -> dict:
    """``{name: value}`` for ``{name: reference}``; SecretUnavailable names the first that fails."""
    out = {}
    for name, ref in refs.items():
        kind = scheme(ref)
        if kind is None:
            raise SecretUnavailable(f"secrets[{name!r}]: not a reference (env:, file: or keyvault://)")
        out[name] = _RESOLVERS[kind](name, ref)
    return out


class Masker:
    """Replaces each secret value with ``***`` in text and files (longest first)."""

    def __init__(self, values: Iterable[str]):
        self.values = sorted({v for v in values if isinstance(v, str) and len(v) >= MIN_MASKED},
                             key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, text):
        if not text or not self.values:
            return text
        for value in self.values:
            text = text.replace(value, MASK)
        return text

    def file(self, path) -> None:
        """Rewrite ``path`` with every value masked, in bounded memory (a value may span chunks)."""
        if not self.values:
            return
        needles = [v.encode() for v in self.values]
        keep = max(len(n) for n in needles) - 1
        tmp = f"{path}.masking"
        try:
            src = open(path, "rb")
        except OSError:
            return
        with src, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as dst:
            carry = b""
            while True:
                chunk = src.read(1 << 20)
                buf = carry + chunk
                for needle in needles:
                    buf = buf.replace(needle, MASK.encode())
                if not chunk:
                    dst.write(buf)
                    break
                # Hold back what could be the start of a value cut by the chunk's end.
                cut = max(0, len(buf) - keep)
                dst.write(buf[:cut])
                carry = buf[cut:]
        os.replace(tmp, path)


def mask_record(record, mask: Masker, names=("stdout.txt", "stderr.txt")) -> None:
    """Mask an attempt's tails and message, and its stdout.txt/stderr.txt on the node (which
    ``t.stdout()``, ``batchnb logs`` and a pool's ``logs_url`` read)."""
    record.stdout_tail = mask.text(record.stdout_tail)
    record.stderr_tail = mask.text(record.stderr_tail)
    record.message = mask.text(record.message)
    if record.task_dir:
        for name in names:
            mask.file(os.path.join(record.task_dir, name))


def resolve_request(req):
    """``(req with its references resolved into req.secrets, a Masker of every value)``."""
    from dataclasses import replace
    if not req.secret_refs:
        return req, Masker(req.secrets.values())
    resolved = resolve(req.secret_refs)
    return (replace(req, secrets={**req.secrets, **resolved}, secret_refs={}),
            Masker([*req.secrets.values(), *resolved.values()]))
