"""How an Azure VM comes to run exactly this batchnb: its wheel, its pins, its cloud-init.

batchnb is not on PyPI, so the driver carries itself: :func:`build_wheel`
assembles a wheel of the running batchnb from its files (reproducible: fixed
timestamps and order; cached per version and content), :func:`ship_wheel`
puts it in the pool's storage and signs a read URL for it (a SAS URL on
Azure Blob), and each VM's cloud-init (:func:`cloud_init`) runs a bootstrap
that makes a venv, installs the driver's versions of batchnb's dependencies
(:func:`driver_pins`: dask, distributed and cloudpickle must match for
pickles to travel), downloads the wheel with Python's urllib, checks its
SHA-256, installs it, checks the versions, and only then runs the start task
and the Dask scheduler or worker from that venv. A wheel does not fit in
Azure's custom data (64 KB), hence the storage.

>>> pins = driver_pins(extra=())
>>> sorted(p.split("==")[0] for p in pins)[:3]
['cloudpickle', 'croniter', 'dask']
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import os
import re
import shlex
import sys
import zipfile
from pathlib import Path

import yaml

#: Ubuntu 24.04 LTS (Canonical's current marketplace reference; 18.04 is out of standard support).
UBUNTU_LTS = {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}
#: Where the bootstrap keeps the venv, the wheel and its log on a VM.
BOOTSTRAP_DIR = "/opt/batchnb"
#: Packages the nodes need beyond batchnb's own requirements, at the driver's versions when it has them.
NODE_EXTRAS = ("adlfs",)
#: What must match between the driver and the nodes for pickles to work.
MATCHED = ("dask", "distributed", "cloudpickle")

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def driver_pins(extra: tuple = NODE_EXTRAS) -> list[str]:
    """``name==version`` of batchnb's requirements (and ``extra``) as installed here."""
    names = []
    for req in metadata.requires("batchnb") or []:
        if "extra ==" in req:
            continue
        names.append(re.match(r"[A-Za-z0-9_.\-]+", req).group(0))
    names += [n for n in extra if n not in names]
    pins = []
    for name in names:
        version = _version(name)
        if version is not None:
            pins.append(f"{name}=={version}")
    return pins


def _package_files() -> list[tuple[str, Path]]:
    """(path in the wheel, file here) of the running batchnb, widgets included."""
    import batchnb
    root = Path(batchnb.__file__).resolve().parent
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            files.append(("batchnb/" + path.relative_to(root).as_posix(), path))
    widgets = root.parent / "widgets"      # a checkout: hatchling puts them in batchnb/_static
    if not (root / "_static").is_dir() and widgets.is_dir():
        files += [("batchnb/_static/" + p.relative_to(widgets).as_posix(), p)
                  for p in sorted(widgets.rglob("*")) if p.is_file()]
    return files


def _dist_files(version: str) -> dict[str, bytes]:
    dist = metadata.distribution("batchnb")
    meta = dist.read_text("METADATA") or f"Metadata-Version: 2.1\nName: batchnb\nVersion: {version}\n"
    out = {"METADATA": meta.encode(),
           "WHEEL": b"Wheel-Version: 1.0\nGenerator: batchnb._azure_bootstrap\nRoot-Is-Purelib: true\n"
                    b"Tag: py3-none-any\n"}
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        out["entry_points.txt"] = entry_points.encode()
    return out


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(cache_dir: str | os.PathLike | None = None) -> Path:
    """A wheel of the running batchnb (``batchnb-<version>-py3-none-any.whl``), made once per content.

    Assembled from the package's files, so it works for a checkout and an
    installed batchnb alike, with no build backend: same files, same bytes.
    """
    import batchnb
    version = batchnb.__version__
    files = [(arc, path.read_bytes()) for arc, path in _package_files()]
    dist = f"batchnb-{version}.dist-info"
    files += [(f"{dist}/{name}", data) for name, data in _dist_files(version).items()]
    digest = hashlib.sha256()
    for arc, data in files:
        digest.update(arc.encode() + b"\0" + hashlib.sha256(data).digest())
    cache = Path(cache_dir or os.environ.get("BATCHNB_WHEEL_CACHE") or Path.home() / ".cache" / "batchnb" / "wheels")
    out = cache / f"{version}-{digest.hexdigest()[:16]}" / f"batchnb-{version}-py3-none-any.whl"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    record = "".join(f"{arc},{_record_hash(data)},{len(data)}\n" for arc, data in files) + f"{dist}/RECORD,,\n"
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in [*files, (f"{dist}/RECORD", record.encode())]:
            info = zipfile.ZipInfo(arc, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    os.replace(tmp, out)
    return out


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ship_wheel(wheel: Path, store: str, storage_options: dict | None) -> str:
    """Put ``wheel`` under the ``store`` folder (an fsspec URL) once; its path there."""
    import fsspec
    protocol = store.split("://")[0] if "://" in store else "file"
    fs, folder = fsspec.core.url_to_fs(store, **((storage_options or {}).get(protocol) or {}))
    path = f"{folder.rstrip('/')}/{sha256(wheel)[:16]}/{wheel.name}"
    if not (fs.exists(path) and fs.size(path) == wheel.stat().st_size):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(wheel), path)
    return f"{protocol}://{path}" if "://" in store else path


def signed_url(url: str, storage_options: dict | None, expires: int) -> str:
    """A read URL for ``url`` that a VM can fetch with plain HTTP(S) (a SAS URL on Azure Blob)."""
    import fsspec
    if url.startswith(("http://", "https://")):
        return url
    protocol = url.split("://")[0] if "://" in url else "file"
    fs, path = fsspec.core.url_to_fs(url, **((storage_options or {}).get(protocol) or {}))
    return fs.sign(path, expiration=expires)


_FETCH = """\
import hashlib, sys, urllib.request
url, dest, want = sys.argv[1:4]
with urllib.request.urlopen(url, timeout=120) as r:
    data = r.read()
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"batchnb bootstrap: the wheel from the pool's storage has SHA-256 {got}, expected {want}")
open(dest, "wb").write(data)
"""

_CHECK = """\
import sys, importlib.metadata as m
want = dict(a.split("==", 1) for a in sys.argv[1:])
bad = {n: (m.version(n), v) for n, v in want.items() if m.version(n) != v}
if bad:
    sys.exit("batchnb bootstrap: this environment does not match the driver (name: (here, driver)): %r" % bad)
"""


def python_name() -> str:
    """The interpreter a node needs: the driver's major.minor (pickled code is version-bound)."""
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def pins_marker(pins: list[str]) -> str:
    """The name of the file that says a venv holds ``pins`` (for this interpreter)."""
    return ".pins-" + hashlib.sha256(" ".join([python_name(), *sorted(pins)]).encode()).hexdigest()[:16]


def venv_script(venv: str, pins: list[str], apt: bool = True) -> str:
    """Shell lines that make ``venv`` (once per pins): the interpreter, a venv, the pinned packages."""
    py, q = python_name(), shlex.quote
    apt_lines = [
        f'if ! command -v {py} >/dev/null || ! {py} -c "import venv, ensurepip" 2>/dev/null; then',
        f"  export DEBIAN_FRONTEND=noninteractive; apt-get update -y && "
        f"{{ apt-get install -y {py}-venv || {{ add-apt-repository -y ppa:deadsnakes/ppa && apt-get update -y "
        f"&& apt-get install -y {py}-venv; }}; }}",
        "fi",
    ] if apt else []
    return "\n".join([
        *apt_lines,
        f'if [ ! -f {q(venv)}/{pins_marker(pins)} ]; then',
        f'  rm -rf {q(venv)} && {py} -m venv {q(venv)}',
        f'  {q(venv)}/bin/python -m pip install --quiet --disable-pip-version-check {" ".join(map(q, pins))}',
        f'  touch {q(venv)}/{pins_marker(pins)}',
        "fi",
    ])


def bootstrap_script(root: str, pins: list[str], wheel_url: str, wheel_sha: str, apt: bool = True) -> str:
    """The shell script that makes ``<root>/venv`` hold exactly the driver's batchnb and pins."""
    import batchnb
    venv, q = f"{root}/venv", shlex.quote
    matched = [p for p in pins if p.split("==")[0] in MATCHED] + [f"batchnb=={batchnb.__version__}"]
    return "\n".join([
        "#!/bin/sh",
        "# batchnb bootstrap: a venv with this driver's batchnb and the versions it was pickled with",
        "set -eu",
        f"root={q(root)}; venv={q(venv)}",
        'mkdir -p "$root/wheels" && rm -f "$root/ready"',
        'exec 9>"$root/bootstrap.lock"; flock 9        # VMs of one host (the stand-in) share a root',
        venv_script(venv, pins, apt),
        f'if [ "$(cat "$venv/.batchnb-wheel" 2>/dev/null)" != {wheel_sha} ]; then',
        f'  wheel="$root/wheels/batchnb-{batchnb.__version__}-py3-none-any.whl"',
        f'  "$venv/bin/python" -c {q(_FETCH)} {q(wheel_url)} "$wheel" {wheel_sha}',
        '  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel"',
        f'  echo {wheel_sha} > "$venv/.batchnb-wheel"',
        "fi",
        f'"$venv/bin/python" -c {q(_CHECK)} {" ".join(map(q, matched))}',
        'touch "$root/ready"',
        "",
    ])


def image_check(image: str, pins: list[str], docker_args: str = "") -> str:
    """A command that fails, saying why, unless ``image`` holds this batchnb and the matched versions."""
    import batchnb
    matched = [p for p in pins if p.split("==")[0] in MATCHED] + [f"batchnb=={batchnb.__version__}"]
    return f"docker run --rm {docker_args} {image} python -c {shlex.quote(_CHECK)} {' '.join(map(shlex.quote, matched))}"


def _embed(path: str, text: str) -> str:
    data = base64.b64encode(text.encode()).decode()
    return f"mkdir -p {shlex.quote(os.path.dirname(path))} && echo {data} | base64 -d > {shlex.quote(path)}"


def cloud_init(command: str, *, root: str, pins: list[str], wheel_url: str | None, wheel_sha: str | None,
               start: list[str], env_vars: dict, extra_bootstrap: list | None, apt: bool, auto_shutdown: bool,
               docker_image: str | None = None, docker_args: str = "") -> str:
    """A VM's cloud-init: bootstrap, then ``start`` (the start task lines), then the Dask process.

    ``command`` is dask-cloudprovider's ``env DASK_INTERNAL_INHERIT_CONFIG=... python -m ...``.
    Without ``docker_image`` it runs from the venv; with one, in that image after
    :func:`image_check`. The start task and the Dask process run only once the
    bootstrap succeeded (cloud-init runs every line whatever the one before did).
    """
    command = command.replace("''", "'")      # dask-cloudprovider quotes for its own YAML template
    exports = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (env_vars or {}).items())
    runcmd: list[str] = []
    doc: dict = {}
    ready = f"[ -f {shlex.quote(root)}/ready ]"
    if docker_image is None:
        script = f"{root}/bootstrap.sh"
        runcmd.append(f"{_embed(script, bootstrap_script(root, pins, wheel_url, wheel_sha, apt))} && "
                      f"sh {shlex.quote(script)} > {shlex.quote(root)}/bootstrap.log 2>&1")
        env = f"export PATH={shlex.quote(root)}/venv/bin:$PATH VIRTUAL_ENV={shlex.quote(root)}/venv"
        env += f" {exports}" if exports else ""
        runcmd += [str(c) for c in extra_bootstrap or []]
        runcmd += [f"{ready} && {env} && {line}" for line in start]
        runcmd.append(f"{ready} && {env} && cd / && " + command.replace(
            " python -m ", f" {shlex.quote(root)}/venv/bin/python -m ", 1))
        if apt:
            doc["packages"] = [python_name() + "-venv"]
    else:
        if apt:
            doc["packages"] = ["docker.io"]
        envs = " ".join(f'-e {k}="{v}"' for k, v in (env_vars or {}).items())
        runcmd.append(f"mkdir -p {shlex.quote(root)} && {image_check(docker_image, pins, docker_args)} "
                      f"> {shlex.quote(root)}/bootstrap.log 2>&1 && touch {shlex.quote(root)}/ready")
        runcmd += [str(c) for c in extra_bootstrap or []]
        runcmd += [f"{ready} && docker run --rm --net=host {docker_args} {docker_image} sh -c {shlex.quote(line)}"
                   for line in start]
        runcmd.append(f"{ready} && docker run --net=host {envs} {docker_args} {docker_image} {command}")
    if auto_shutdown:
        runcmd.append("shutdown -h now")
    doc["runcmd"] = runcmd
    return "#cloud-config\n" + yaml.safe_dump(doc, default_flow_style=False, width=1 << 20, sort_keys=False)


def prepare_wheel(boot: dict, store: str | None, storage_options: dict, start_timeout: float) -> None:
    """Put this batchnb's wheel where the VMs fetch it; ``boot`` gets its SHA-256 and a URL signer."""
    from ..errors import BackendError, SpecError
    if boot["docker_image"] is not None:
        return          # the image holds batchnb: nothing to ship
    if store is None:
        raise SpecError("wheel_store", None, "an azure pool without docker_image needs a storage folder for this "
                        "batchnb's wheel, such as 'abfs://deploy/batchnb' (and wheel_storage_options)")
    wheel = build_wheel()
    try:
        url = ship_wheel(wheel, store, storage_options)
    except Exception as exc:
        raise BackendError(f"cannot upload batchnb's wheel to wheel_store={store!r}: {type(exc).__name__}: {exc}") \
            from exc
    expiry = int(start_timeout) + 3600
    # Signed per VM: a node made days later still gets a URL valid while it boots.
    boot.update(wheel_sha=sha256(wheel), wheel_url=lambda: signed_url(url, storage_options, expiry))


def render(cluster, process) -> str:
    """``process``'s cloud-init (a ``BatchnbAzureVMCluster``'s ``render_process_cloud_init``)."""
    boot = cluster.boot
    image = boot.get("docker_image")
    text = cloud_init(process.command, root=boot["root"], pins=boot["pins"],
                      wheel_url=None if image else boot["wheel_url"](), wheel_sha=boot.get("wheel_sha"),
                      start=getattr(process, "start_lines", []), env_vars=process.env_vars,
                      extra_bootstrap=process.extra_bootstrap, apt=bool(process.bootstrap),
                      auto_shutdown=bool(process.auto_shutdown), docker_image=image,
                      docker_args=process.docker_args or "")
    if cluster.debug:
        print(f"\nCloud init of {process.name}\n{text}")
    return text
