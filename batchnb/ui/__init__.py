"""Views of jobs, pools and cost. Imported only when something is displayed,
so ``import batchnb`` never loads the widget stack."""

from __future__ import annotations


def job_bundle(job) -> dict:
    text = repr(job)
    from .snapshot import job_result_html
    return {"text/plain": text, "text/html": job_result_html(job.result())}


def pool_bundle(pool) -> dict:
    return {"text/plain": repr(pool)}
