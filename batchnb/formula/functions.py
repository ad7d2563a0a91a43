"""The built-in functions of the autoscale formula language (Azure's "Functions" table).

Functions marked ``doubleVecList`` take any mix of doubles and doubleVecs and
see them as one vector: ``avg(v, 7)`` with ``v = [1,2,3]`` is ``avg(1,2,3,7)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from .values import Stop, parse_time, type_name

if TYPE_CHECKING:
    from .evaluator import Context
    from .parser import Call


def _flatten(ctx: "Context", node: "Call", values: list[object]) -> list[float]:
    flat: list[float] = []
    for index, value in enumerate(values, 1):
        if isinstance(value, float):
            flat.append(value)
        elif isinstance(value, tuple):
            flat.extend(value)
        else:
            raise ctx.fail(
                f"argument {index} of {node.name}() must be a double or a doubleVec, not a {type_name(value)}",
                node.args[index - 1])
    return flat


def _nonempty(ctx: "Context", node: "Call", flat: list[float]) -> list[float]:
    if not flat:
        raise ctx.fail(f"{node.name}() of an empty vector has no value (too few samples?)", node)
    return flat


def _std(flat: list[float]) -> float | None:
    if len(flat) < 2:
        return None
    mean = math.fsum(flat) / len(flat)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in flat) / (len(flat) - 1))


_AGGREGATES: dict[str, Callable[[list[float]], float | None]] = {
    "avg": lambda f: math.fsum(f) / len(f),
    "max": max,
    "min": min,
    "range": lambda f: max(f) - min(f),
    "std": _std,
}


def _log(base: float | None) -> Callable[[float], float | None]:
    def apply(x: float) -> float | None:
        if x <= 0.0:
            return None
        return math.log(x) if base is None else math.log(x, base)

    return apply


# ceil, floor and round give doubles; round halves to even, as .NET's Math.Round does.
_ELEMENTWISE: dict[str, Callable[[float], float | None]] = {
    "lg": _log(2.0),
    "ln": _log(None),
    "log": _log(10.0),
    "ceil": lambda x: float(math.ceil(x)),
    "floor": lambda x: float(math.floor(x)),
    "round": lambda x: float(round(x)),
}


def call_function(ctx: "Context", node: "Call") -> object:
    """Evaluate a function call; stop() raises :class:`~batchnb.formula.values.Stop`."""
    try:
        return _call(ctx, node)
    except OverflowError:  # fsum and ** raise rather than give inf
        raise ctx.fail(f"the result of {node.name}() is too large to be a double", node) from None


def _call(ctx: "Context", node: "Call") -> object:
    name = node.name
    if name == "stop":
        raise Stop()
    if name == "rand":
        return ctx.rng.random()
    args = [ctx.eval(a) for a in node.args]
    if name == "time":
        if not args:
            return ctx.now
        if not isinstance(args[0], str):
            raise ctx.fail(f"time() takes a string, not a {type_name(args[0])}", node.args[0])
        stamp = parse_time(args[0])
        if stamp is None:
            raise ctx.fail(
                f"time({args[0]!r}): not a W3C-DTF (2024-05-01T08:00:00Z) or RFC 1123 "
                "(Wed, 01 May 2024 08:00:00 GMT) date", node.args[0])
        return stamp
    if name in ("val", "percentile"):
        vector, number = args
        if not isinstance(vector, tuple):
            raise ctx.fail(f"the first argument of {name}() must be a doubleVec, not a {type_name(vector)}", node.args[0])
        if not isinstance(number, float):
            raise ctx.fail(f"the second argument of {name}() must be a double, not a {type_name(number)}", node.args[1])
        if name == "val":
            if not 0.0 <= number < len(vector):
                raise ctx.fail(f"val(): index {number:g} is outside the vector of length {len(vector)}", node.args[1])
            return vector[int(number)]
        if not 0.0 <= number <= 100.0:
            raise ctx.fail(f"percentile(): the percentile must be between 0 and 100, not {number:g}", node.args[1])
        ordered = sorted(_nonempty(ctx, node, list(vector)))
        # Nearest rank: "the percentile element of the vector" is one of its elements.
        rank = max(1, math.ceil(number / 100.0 * len(ordered)))
        return ordered[rank - 1]
    if name in _ELEMENTWISE:
        apply = _ELEMENTWISE[name]
        single = len(args) == 1 and isinstance(args[0], float)
        flat = _flatten(ctx, node, args)
        results = []
        for x in flat:
            y = apply(x)
            if y is None:
                raise ctx.fail(f"{name}() of {x:g} is not defined (it needs a positive number)", node)
            results.append(ctx.finite(y, node))
        return results[0] if single else tuple(results)
    flat = _flatten(ctx, node, args)
    if name == "len":
        return float(len(flat))
    if name == "sum":
        return ctx.finite(math.fsum(flat), node)
    if name == "norm":
        return ctx.finite(math.hypot(*flat), node) if flat else 0.0
    result = _AGGREGATES[name](_nonempty(ctx, node, flat))
    if result is None:
        raise ctx.fail(f"{name}() needs at least two values", node)
    return ctx.finite(result, node)
