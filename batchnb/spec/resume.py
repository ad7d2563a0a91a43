"""Resuming a job by id: the options it was made with, and whether new ones are the same.

>>> from batchnb.spec import JobSpec, to_dict
>>> import json
>>> row = {"spec": json.dumps(to_dict(JobSpec("j", max_task_retries=2)))}
>>> check_same(JobSpec("j", max_task_retries=2), row)
>>> check_same(JobSpec("j", max_task_retries=3), row)
Traceback (most recent call last):
...
batchnb.SpecError: job: 'j' is invalid: exists in the ledger with other options (max_task_retries); use the same options to resume it, or another id
"""

from __future__ import annotations

import json

from ..errors import SpecError
from .codec import from_dict, to_dict
from .model import JobSpec


def check_same(spec: JobSpec, row: dict) -> None:
    """A SpecError when ``spec`` differs from the job recorded in ``row`` (naming the options)."""
    old = from_dict(JobSpec, json.loads(row["spec"]))
    if old != spec:
        a, b = to_dict(old), to_dict(spec)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise SpecError("job", spec.id, f"exists in the ledger with other options ({', '.join(diff)}); "
                        "use the same options to resume it, or another id")


def recorded_options(ledger, job_id: str) -> dict:
    """The options job ``job_id`` was made with, as ``pool.job(id, **options)`` takes them."""
    row = ledger.job(job_id)
    if row is None:
        raise SpecError("job id", job_id, f"not in the ledger {ledger.path}")
    data = json.loads(row["spec"])
    data.pop("id", None)
    return data
