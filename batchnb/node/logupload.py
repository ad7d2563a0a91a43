"""An attempt's stdout.txt and stderr.txt, kept beyond its node: uploaded to the pool's ``logs_url``.

Runs on the node that ran the attempt (the engine's logs extension,
:mod:`batchnb.extensions.logs`, asks it to as the attempt ends, on failure
as well), through :mod:`batchnb.staging`'s transfers and their retries.
``read_log`` reads one back wherever the caller is (``t.stdout()`` once the
node's folder is gone).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, Mapping

LOG_NAMES = ("stdout.txt", "stderr.txt")


def attempt_logs_url(logs_url: str, pool: str, job_id: str, task_id: str, attempt: int) -> str:
    """``<logs_url with {pool}>/<job>/<task>/<attempt>/`` (Azure Batch's own layout of a task's files)."""
    return f"{logs_url.format(pool=pool).rstrip('/')}/{job_id}/{task_id}/{attempt}/"


def upload_logs(task_dir: str, dest: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Put the attempt folder's stdout.txt and stderr.txt under ``dest``; return the URLs written."""
    from fsspec.core import split_protocol
    io = _transfers(storage_options)
    written = []
    for name in LOG_NAMES:
        local = Path(task_dir) / name
        if not local.exists():
            continue
        url = dest.rstrip("/") + "/" + name
        fs, rpath = io.resolve(url, f"log {name}")
        if (split_protocol(url)[0] or "file") in ("file", "local", "memory"):
            fs.makedirs(posixpath.dirname(rpath), exist_ok=True)   # object stores have no folders to make
        io.retry(lambda: fs.put_file(str(local), rpath), what=f"log {name}", url=url)
        written.append(url)
    return written


def read_log(url: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The text at ``url`` (None when it cannot be read)."""
    io = _transfers(storage_options)
    try:
        fs, rpath = io.resolve(url, "log")
        return fs.cat_file(rpath).decode(errors="replace")
    except Exception:  # noqa: BLE001 - a log that cannot be read is reported as missing
        return None


def _transfers(storage_options: Mapping[str, Any] | None):
    # Imported here: the pool module imports this one, and staging brings fsspec, which would
    # hold back the start of a new pool's node launcher (engine/jobops.py says the same).
    from ..staging.storage import RetryPolicy, Transfers
    return Transfers(storage_options or {}, RetryPolicy.from_config(), 1)
