"""A map task's spec, made from its array when it is dispatched, costs no pickling of the function."""

from __future__ import annotations

import cloudpickle

from batchnb.engine.arrays import ArrayBuilder, Arrays
from batchnb.engine.ledger import Ledger


class Scale:
    """A callable that counts how often it is pickled."""

    pickled = 0

    def __init__(self, k: int):
        self.k = k

    def __call__(self, x: int) -> int:
        return self.k * x

    def __reduce__(self):
        type(self).pickled += 1
        return Scale, (self.k,)


def test_a_maps_function_is_pickled_once_for_all_its_task_specs(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    b = ArrayBuilder(Scale(3), "scale", (range(500),), {"unused": None}, {"max_wall_clock": "1m"},
                     ("scale-", 0), tmp_path.as_uri(), {})
    for first, rows in b.chunks():
        b.store_chunk(first, rows)
    led.put_array("j", b.id, b.record())
    arrays = Arrays(led, {})
    Scale.pickled = 0
    made = [arrays.spec("j", b.id, i) for i in range(500)]
    assert Scale.pickled == 1                       # once for the array, not once per task
    fn, args, kwargs = cloudpickle.loads(made[499].python.payload)
    assert fn(*args) == 3 * 499 and kwargs == {"unused": None}
    assert [s.id for s in made[:2]] == ["scale-0", "scale-1"] and made[7].max_wall_clock == 60.0
    # Equal to the task job.submit would have made: same name and the same digest of its arguments.
    from batchnb.spec import PythonCall
    assert made[5].python.args_digest == PythonCall("scale", b"", cloudpickle.dumps(((5,), {"unused": None}))).args_digest


class Counted(Scale):
    """A Scale that counts how often it is made, unpickling included."""

    made = 0

    def __init__(self, k: int):
        type(self).made += 1
        super().__init__(k)

    def __reduce__(self):
        return Counted, (self.k,)


def test_a_maps_function_is_unpickled_once_on_a_node_for_all_its_tasks(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    b = ArrayBuilder(Counted(7919), "scale", (range(50),), {}, {}, ("c-", 0), tmp_path.as_uri(), {})
    for first, rows in b.chunks():
        b.store_chunk(first, rows)
    led.put_array("j", b.id, b.record())
    payloads = [Arrays(led, {}).spec("j", b.id, i).python.payload for i in range(50)]
    Counted.made = 0
    calls = [cloudpickle.loads(p) for p in payloads]        # as the node's runner loads each task
    assert Counted.made == 1                                # the first task's; the rest reuse it
    assert [fn(*args) for fn, args, _ in calls] == [7919 * i for i in range(50)]


def test_a_task_rows_array_reference_is_read_as_written_and_any_other_form_as_json():
    from batchnb.engine.arrays import array_ref, task_refs
    assert array_ref(task_refs("a1b2", "fn")(41)) == ("a1b2", 41)
    assert array_ref(task_refs("s0f", "echo {0}", "command")(0)) == ("s0f", 0)
    assert array_ref('{"array": "a\\"q", "index": 3, "name": "x"}') == ('a"q', 3)
    assert array_ref('{"array": "a1", "name": "x", "index": 5}') == ("a1", 5)
    assert array_ref('{"id": "t1", "command": "true"}') is None
