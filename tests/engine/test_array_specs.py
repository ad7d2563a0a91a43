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
