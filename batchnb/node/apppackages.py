"""Application packages: archives unpacked once per node, as Azure Batch does.

Each ``bnb.AppPackage(name, version, url)`` of a pool is fetched through
fsspec (with the pool's ``storage_options``) and unpacked into
``<node root>/applications/<name>_<version>`` when a node joins, before its
start task; its folder is in ``AZ_BATCH_APP_PACKAGE_<name>_<version>``
(dots and dashes as underscores). A package already unpacked on the node is
not fetched again. Zip members keep their Unix modes (a packaged program
stays executable), as tar members do.

>>> import zipfile
>>> from batchnb import AppPackage
>>> with zipfile.ZipFile("tool-1.0.zip", "w") as zf:
...     zf.writestr("bin/tool", "echo tool 1.0")
>>> install([AppPackage("tool", "1.0", "tool-1.0.zip")], {"applications": "apps"})
(('tool', '1.0', 'apps/tool_1.0'),)
>>> open("apps/tool_1.0/bin/tool").read()
'echo tool 1.0'
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from ..errors import StagingError

_DONE = ".batchnb-complete"


def install(packages, dirs: dict, storage_options: dict | None = None) -> tuple:
    """Unpack ``packages`` on this node; return ``((name, version, folder), ...)``; StagingError if one fails."""
    out = []
    for pkg in packages:
        folder = Path(dirs["applications"]) / f"{pkg.name}_{pkg.version}"
        if not (folder / _DONE).exists():
            try:
                _unpack(pkg, folder, storage_options or {})
            except StagingError:
                raise
            except Exception as exc:  # noqa: BLE001 - any fetch or archive problem names the package
                raise StagingError(f"application package {pkg.name} {pkg.version} from {pkg.url}: "
                                   f"{type(exc).__name__}: {exc}") from None
        out.append((pkg.name, pkg.version, str(folder)))
    return tuple(out)


def _unpack(pkg, folder: Path, storage_options: dict) -> None:
    import fsspec
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    archive = partial / ".archive"
    protocol = pkg.url.split("://")[0] if "://" in pkg.url else "file"
    with fsspec.open(pkg.url, "rb", **storage_options.get(protocol, {})) as src, open(archive, "wb") as dst:
        shutil.copyfileobj(src, dst)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                path = zf.extract(info, partial)
                # zipfile drops Unix modes; a packaged program must stay executable, as unzip keeps it.
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    os.chmod(path, mode)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(partial, filter="data")   # no absolute paths, links out or devices
    else:
        raise StagingError(f"application package {pkg.name} {pkg.version} from {pkg.url}: "
                           "not a zip or tar archive")
    archive.unlink()
    (partial / _DONE).touch()
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)    # whole or not at all: a node that died mid-unpack starts over
