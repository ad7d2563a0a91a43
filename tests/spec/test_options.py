"""Misspelt and missing options: a SpecError naming the keyword, with a "did you mean", at the call.

The specs, ``pool.job()``'s options, ``submit()``/``map()``'s task options
beside the function's own keywords, and the backends' declared options.
The same on a live pool is in ``tests/test_api.py``.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import batchnb as bnb
from batchnb import spec as s
from batchnb.backends import get_backend
from batchnb.backends.base import Backend
from batchnb.spec.options import job_options, task_options, unpicklable

from test_loaders_fuzz import SETTINGS, json_like, only_spec_errors, python_only


@pytest.mark.parametrize("make, field, hint", [
    (lambda: bnb.Retry(max_retries=3), "max_retries", "did you mean 'max'?"),
    (lambda: bnb.Retry(dely="1s"), "dely", "did you mean 'delay'?"),
    (lambda: s.TaskSpec("t", "true", max_wallclock="1m"), "max_wallclock", "did you mean 'max_wall_clock'?"),
    (lambda: s.TaskSpec("t", "true").with_(depends=["a"]), "depends", "did you mean 'depends_on'?"),
    (lambda: s.JobSpec("j", max_task_retry=2), "max_task_retry", "did you mean 'max_task_retries'?"),
    (lambda: s.PoolSpec(dedicted=2), "dedicted", "did you mean 'dedicated'?"),
    (lambda: bnb.ExitOptions(dependency="block"), "dependency", "did you mean 'dependency_action'?"),
    (lambda: bnb.StartTask("true", max_retry=1), "max_retry", "did you mean 'max_retries'?"),
    (lambda: bnb.OutputFile("*.txt", "memory://o/", condition="failure"), "condition",
     "it takes destination, pattern, upload_condition"),
    (lambda: bnb.ResourceFile("in.txt"), "url", "is required by bnb.ResourceFile"),
    (lambda: bnb.ResourceFile("a", "memory://x", path="b"), "path", "given twice to bnb.ResourceFile"),
    (lambda: bnb.TaskIdRange(1, 2, 3), "bnb.TaskIdRange", "takes at most 2 positional arguments"),
])
def test_spec_classes_name_a_misspelt_or_missing_keyword(make, field, hint):
    with pytest.raises(bnb.SpecError) as err:
        make()
    assert err.value.field == field and hint in str(err.value)


@SETTINGS
@given(st.sampled_from(["ResourceFile", "OutputFile", "Retry", "ExitOptions", "MultiInstance", "StartTask",
                        "AppPackage", "TaskSpec", "JobSpec", "PoolSpec", "TaskIdRange"]),
       st.lists(st.one_of(json_like, python_only), max_size=5),
       st.dictionaries(st.sampled_from(["id", "path", "max", "delay", "retries", "command", "name", "x"]),
                       st.one_of(json_like, python_only), max_size=2))
def test_every_spec_class_only_raises_spec_errors(name, args, kwargs):
    only_spec_errors(getattr(s, name), *args, **kwargs)


def test_job_options():
    assert job_options({"max_task_retries": 2, "prep": None}) == {"max_task_retries": 2}
    with pytest.raises(bnb.SpecError, match="did you mean 'max_task_retries'") as err:
        job_options({"max_task_retry": 2})
    assert err.value.field == "max_task_retry"
    assert job_options({"prep": "pip install x", "release": "rm -rf scratch"}) == {
        "prep": "pip install x", "release": "rm -rf scratch"}
    with pytest.raises(bnb.SpecError, match="did you mean 'release'"):
        job_options({"relase": "rm -rf scratch"})


def plain(x, factor=2):
    return x * factor


def own_timeout(x, max_wallclock=None):
    return x


def anything(x, **options):
    return options


@pytest.mark.parametrize("fn, kwargs, left", [
    (plain, {"factor": 3, "retry": bnb.Retry(max=1), "secrets": {"T": "env:T"}}, {"factor": 3}),
    # The function's own keyword reaches it, however much it looks like a task option.
    (own_timeout, {"max_wallclock": 5}, {"max_wallclock": 5}),
    (anything, {"max_wallclock": 5, "colour": "red"}, {"max_wallclock": 5, "colour": "red"}),
    (print, {"sep": "-"}, {"sep": "-"}),
])
def test_task_options_leave_the_function_its_own_keywords(fn, kwargs, left):
    opts = task_options(fn, kwargs, "job.submit()")
    assert kwargs == left and not set(opts) & set(left)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_wallclock": "1m"}, "max_wallclock: '1m' is invalid: not a task option of job.submit(); did you mean "
                              "'max_wall_clock'? (plain() takes no 'max_wallclock' either)"),
    ({"depends": ["a"]}, "did you mean 'depends_on'?"),
    ({"secret": {"T": "env:T"}}, "did you mean 'secrets'?"),
    ({"colour": "red"}, "plain() takes no keyword 'colour' (it takes factor, x)"),
])
def test_a_keyword_neither_the_task_nor_the_function_takes_is_refused(kwargs, message):
    with pytest.raises(bnb.SpecError) as err:
        task_options(plain, dict(kwargs), "job.submit()")
    assert message in str(err.value) and err.value.field == next(iter(kwargs))


def test_what_cannot_be_pickled_is_named_as_the_argument():
    lock = threading.Lock()
    err = unpicklable("t", plain, (1, lock), {}, TypeError("x"))
    assert err.field == "task 't' argument 'factor'" and err.value is lock
    assert unpicklable("t", plain, (1,), {"factor": lock}, TypeError("x")).field == "task 't' argument 'factor'"
    assert unpicklable("t", lock, (), {}, TypeError("no")).field == "task 't' function"


def test_backends_declare_their_options():
    assert {"memory_limit", "start_timeout"} <= get_backend("local").option_names()
    assert get_backend("address").option_names() >= {"address", "groups", "security", "timeout"}
    assert {"location", "resource_group", "vnet", "max_price"} <= get_backend("azure").option_names()

    class Open(Backend):       # keeps the base's __init__: its options land in self.options
        pass
    assert Open.option_names() is None
