"""batchnb.log-format: json makes batchnb's loggers write one JSON object per line."""

from __future__ import annotations

import json

import dask
import pytest

import batchnb as bnb
from batchnb.engine.logjson import apply_log_format
from pools import temporary_pool


def test_a_pool_logs_json_lines_naming_job_and_task(capsys):
    try:
        with dask.config.set({"batchnb.log-format": "json"}):
            with temporary_pool("mon-json", dedicated=1) as pool:
                job = pool.job("jl")
                job.add_task("bad", "exit 4")
                job.wait(timeout=60)
    finally:
        apply_log_format("text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("task") == "bad"]
    assert failed and failed[0]["job"] == "jl" and failed[0]["logger"] == "batchnb.dispatch"
    assert set(failed[0]) >= {"time", "level", "logger", "message"}


def test_an_unknown_log_format_is_a_spec_error():
    with pytest.raises(bnb.SpecError) as err:
        apply_log_format("xml")
    assert err.value.field == "batchnb.log-format"
