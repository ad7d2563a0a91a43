"""A Python task in a process of its own (used when it has a wall-clock limit).

``python -m batchnb.node.pychild call.pkl``: runs the call in the task's working
directory with the task's environment, writes ``result.pkl`` beside it, so
the runner can kill it and all its children at the limit.
"""

from __future__ import annotations

import pickle
import sys
import traceback


def main(path: str) -> int:
    import cloudpickle
    from .pytask import load_call
    with open(path, "rb") as fh:
        spec = pickle.load(fh)
    try:
        fn, args, kwargs = load_call(spec["payload"], spec["dep_results"], spec["storage_options"])
        outcome = {"ok": True, "value": cloudpickle.dumps(fn(*args, **kwargs))}
    except BaseException as exc:  # noqa: BLE001 - reported to the runner as the task's failure
        traceback.print_exc()
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    with open(spec["result"], "wb") as fh:
        pickle.dump(outcome, fh)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
