"""Structured logs of the engine on request: ``batchnb.log-format: json``.

With ``json``, the ``batchnb`` logger (and so every ``batchnb.*`` logger) writes
one JSON object per line to stderr — ``time`` (ISO 8601, UTC), ``level``,
``logger``, ``message``, and ``job`` and ``task`` where known (given as
``extra=`` or named first in a ``"job %s: task %s ..."`` message) — and
no longer passes its records on to the root logger, so each is written once.
With ``text`` (the default) nothing is changed. Applied when a pool's engine
starts, in whichever process runs it (the kernel or a detached agent).

>>> import logging
>>> rec = logging.LogRecord("batchnb.dispatch", logging.INFO, __file__, 1, "job %s: task %s failed", ("j", "t"), None)
>>> line = json.loads(JsonFormatter().format(rec))
>>> line["message"], line["job"], line["task"], line["level"]
('job j: task t failed', 'j', 't', 'INFO')
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from .. import _config
from ..errors import SpecError

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        job, task = getattr(record, "job", None), getattr(record, "task", None)
        if job is None and isinstance(record.msg, str) and isinstance(record.args, tuple) and record.args:
            if record.msg.startswith("job %s"):
                job = record.args[0]
                if record.msg.startswith("job %s: task %s") and len(record.args) > 1:
                    task = record.args[1]
        if job is not None:
            out["job"] = str(job)
        if task is not None:
            out["task"] = str(task)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def apply_log_format(fmt: str | None = None) -> None:
    """Put batchnb's loggers in the configured format (``batchnb.log-format``); idempotent."""
    fmt = fmt if fmt is not None else (_config.get("log-format") or "text")
    if fmt not in FORMATS:
        raise SpecError("batchnb.log-format", fmt, f"expected one of {list(FORMATS)}")
    logger = logging.getLogger("batchnb")
    ours = [h for h in logger.handlers if getattr(h, "_batchnb_json", False)]
    if fmt == "json" and not ours:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._batchnb_json = True
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    elif fmt == "text" and ours:
        for handler in ours:
            logger.removeHandler(handler)
        logger.propagate = True
