"""A detached pool's certificates: a CA of its own, and who a caller is.

Each detached pool gets, when its agent starts, a certificate authority made
for it alone, in ``<home>/pools/<name>.tls/`` beside its registry record
(folder 0700, files 0600; removed with the record when the agent stops):

- ``ca.pem``/``ca-key.pem``: the pool's CA; only the agent signs with it;
- ``agent.pem``/``agent-key.pem``: the agent's own certificate (it serves on ``tls://``);
- ``owner/``: the creator's client credentials (``ca.pem``, ``cert.pem``,
  ``key.pem``), whose subject CN is the OS user that made the pool: its owner;
- ``cluster.pem``/``cluster-key.pem``: a self-signed certificate that a local
  pool's Dask scheduler and workers talk TLS with. It is not signed by the
  pool's CA, so a caller the owner gave credentials to reaches the agent (which
  checks its role) but never the Dask scheduler behind it.

A pool made with the user's own ``security=`` (a ``distributed.Security``
with a CA, a scheduler and a client certificate) serves with those instead:
its scheduler certificate is the agent's, its client certificate's CN the
owner, and credentials for others are signed with the user's own CA.

A caller's identity is the subject CN of the client certificate it showed
(:func:`identity_of`). Credentials for another identity are a folder of the same
three files (:func:`write_credentials`), signed by the pool's CA
(``pool.credentials(identity)``).

>>> import tempfile, pathlib
>>> ca = make_ca("demo")
>>> cert, key = sign(ca, "alice")
>>> folder = write_credentials(pathlib.Path(tempfile.mkdtemp()) / "alice", ca.cert_pem, cert, key)
>>> sorted(p.name for p in folder.iterdir()), oct(folder.stat().st_mode & 0o777)
(['ca.pem', 'cert.pem', 'key.pem'], '0o700')
>>> common_name(cert)
'alice'
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..errors import SpecError

#: What an identity may be: a CN that is also a safe folder name.
IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
#: Certificates of a pool outlive any agent (which removes them when it stops).
VALID_DAYS = 365


def check_identity(identity: Any) -> str:
    """An identity as given to ``pool.grant``/``pool.credentials``; anything else is a SpecError.

    >>> check_identity("alice@lab")
    'alice@lab'
    >>> check_identity("../x")
    Traceback (most recent call last):
    ...
    batchnb.SpecError: identity: '../x' is invalid: expected a name of letters, digits, '.', '_', '@', '-' ...
    """
    if not isinstance(identity, str) or not IDENTITY.match(identity):
        raise SpecError("identity", identity, "expected a name of letters, digits, '.', '_', '@', '-' (at most 128, "
                                              "starting with a letter or digit)")
    return identity


@dataclasses.dataclass(frozen=True)
class Authority:
    """A CA: its certificate and key, PEM."""

    cert_pem: str
    key_pem: str


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> str:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _build(subject: str, issuer: str, public_key, signing_key, *, ca: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:      # Python's ssl checks names only when told to; agents are reached by IP
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject.replace("@", "."))]),
                                        critical=False)
    from cryptography.hazmat.primitives.serialization import Encoding
    return builder.sign(signing_key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


def make_ca(pool: str) -> Authority:
    """A new CA for pool ``pool``."""
    key = _key()
    name = f"batchnb pool {pool} CA"
    return Authority(_build(name, name, key.public_key(), key, ca=True), _pem_key(key))


def sign(ca: Authority, identity: str) -> tuple[str, str]:
    """A certificate (and its key, PEM) with subject CN ``identity``, signed by ``ca``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), None)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.encode()).subject.rfc4514_string().split("=", 1)[1]
    key = _key()
    return _build(identity, issuer, key.public_key(), ca_key, ca=False), _pem_key(key)


def self_signed(name: str) -> tuple[str, str]:
    """A certificate that is its own CA (a Dask cluster's, as ``Security.temporary()`` makes)."""
    key = _key()
    return _build(name, name, key.public_key(), key, ca=True), _pem_key(key)


def common_name(cert_pem: str) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def identity_of(comm) -> str | None:
    """The subject CN of the certificate the peer of ``comm`` showed (None on a plain comm)."""
    cert = (getattr(comm, "extra_info", None) or {}).get("peercert") or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


# -- files ---------------------------------------------------------------------------
def _private_write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)           # mkdir's mode is masked by the umask, and an old folder keeps its own
    return path


def write_credentials(folder: Path, ca_pem: str, cert_pem: str, key_pem: str) -> Path:
    """A client's credentials as a folder (``ca.pem``, ``cert.pem``, ``key.pem``), its owner's only."""
    folder = _private_dir(Path(folder))
    for name, text in (("ca.pem", ca_pem), ("cert.pem", cert_pem), ("key.pem", key_pem)):
        _private_write(folder / name, text)
    return folder


def security_of(folder: str | os.PathLike) -> Any:
    """A ``distributed.Security`` of a credentials folder (its files by path)."""
    from distributed.security import Security
    folder = Path(folder)
    missing = [n for n in ("ca.pem", "cert.pem", "key.pem") if not (folder / n).is_file()]
    if missing:
        raise SpecError("security", str(folder), f"not a credentials folder (no {', '.join(missing)}); "
                                                 "pool.credentials(identity) makes one")
    return Security(require_encryption=True, tls_ca_file=str(folder / "ca.pem"),
                    tls_client_cert=str(folder / "cert.pem"), tls_client_key=str(folder / "key.pem"))


def folder_of(pool: str, home: Path) -> Path:
    return home / f"{pool.lower()}.tls"


def make_pool_files(pool: str, home: Path, owner: str) -> dict:
    """The CA, the agent's and the cluster's certificates and the owner's credentials of a new agent
    of ``pool`` (what an agent that died left there is replaced); their paths."""
    folder = folder_of(pool, home)
    shutil.rmtree(folder, ignore_errors=True)
    _private_dir(folder)
    ca = make_ca(pool)
    agent_cert, agent_key = sign(ca, f"batchnb-agent-{pool.lower()}")
    cluster_cert, cluster_key = self_signed("dask-internal")
    owner_cert, owner_key = sign(ca, owner)
    files = {"ca.pem": ca.cert_pem, "ca-key.pem": ca.key_pem, "agent.pem": agent_cert, "agent-key.pem": agent_key,
             "cluster.pem": cluster_cert, "cluster-key.pem": cluster_key}
    for name, text in files.items():
        _private_write(folder / name, text)
    write_credentials(folder / "owner", ca.cert_pem, owner_cert, owner_key)
    return paths(folder)


def user_pool_files(pool: str, home: Path, security: Any) -> tuple[dict, str] | None:
    """The agent's files from the user's own ``security=`` (its scheduler certificate serves, its
    client certificate is the owner's), and the owner's identity; None if it has no such pair."""
    def text(value):
        return value if value is None or "\n" in value else Path(value).read_text()
    ca, cert, key = (text(getattr(security, f, None)) for f in ("tls_ca_file", "tls_scheduler_cert",
                                                                 "tls_scheduler_key"))
    client_cert, client_key = text(security.tls_client_cert), text(security.tls_client_key)
    if not (ca and cert and key and client_cert and client_key):
        return None
    folder = folder_of(pool, home)
    shutil.rmtree(folder, ignore_errors=True)
    _private_dir(folder)
    _private_write(folder / "agent.pem", cert)
    _private_write(folder / "agent-key.pem", key)
    _private_write(folder / "ca.pem", ca)
    write_credentials(folder / "owner", ca, client_cert, client_key)
    return paths(folder), common_name(client_cert)


def paths(folder: Path) -> dict:
    return {"folder": str(folder), "ca": str(folder / "ca.pem"), "agent_cert": str(folder / "agent.pem"),
            "agent_key": str(folder / "agent-key.pem"), "owner": str(folder / "owner"),
            "cluster_cert": str(folder / "cluster.pem"), "cluster_key": str(folder / "cluster-key.pem")}


def authority(folder: str | os.PathLike) -> Authority:
    folder = Path(folder)
    return Authority((folder / "ca.pem").read_text(), (folder / "ca-key.pem").read_text())


def agent_security(files: dict) -> Any:
    """What the agent listens with: its certificate; callers must show one of the pool's CA."""
    from distributed.security import Security
    return Security(require_encryption=True, tls_ca_file=files["ca"], tls_scheduler_cert=files["agent_cert"],
                    tls_scheduler_key=files["agent_key"])


def cluster_security(files: dict) -> Any:
    """What a local pool's Dask scheduler, workers and the agent's own Dask client talk with."""
    from distributed.security import Security
    cert, key = files["cluster_cert"], files["cluster_key"]
    return Security(require_encryption=True, tls_ca_file=cert, tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key)


def remove_pool_files(pool: str, home: Path) -> None:
    shutil.rmtree(folder_of(pool, home), ignore_errors=True)
