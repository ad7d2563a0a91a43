"""Evaluator of parsed autoscale formulas: operators, functions, variables.

Operator and function rules follow Azure's tables ("Operations", "Functions");
sample retrieval lives in :mod:`batchnb.formula.samples`. Every failure is a
:class:`~batchnb.FormulaError` at the position of the offending node.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Callable

from . import names
from .parser import Call, Chain, Member, Method, Name, Node, Num, Str, Ternary, Unary
from .samples import History, call_method
from .functions import call_function
from .values import MAX_TICKS, TimeInterval, type_name
from ..errors import FormulaError

Value = object  # float | tuple[float, ...] | str | datetime | TimeInterval


class Context:
    """What one evaluation reads: variables, metric histories, the time, a random source."""

    def __init__(self, text: str, env: dict[str, Value], histories: dict[str, History],
                 scalars: dict[str, Value], now: datetime, period: TimeInterval, rng: random.Random):
        self.text = text
        self.env = env
        self.histories = histories
        self.scalars = scalars
        self.now = now
        self.period = period
        self.rng = rng

    def fail(self, message: str, node: Node | tuple[int, int]) -> FormulaError:
        line, col = node if isinstance(node, tuple) else node.pos
        return FormulaError(message, line, col, self.text)

    # -- dispatch --------------------------------------------------------
    def eval(self, node: Node) -> Value:
        return _HANDLERS[type(node)](self, node)

    def number(self, node: Node, what: str) -> float:
        value = self.eval(node)
        if not isinstance(value, float):
            raise self.fail(f"{what} must be a double, not a {type_name(value)}", node)
        return value

    def finite(self, value: float, node: Node | tuple[int, int]) -> float:
        if not math.isfinite(value):
            raise self.fail("the result is too large to be a double", node)
        return value


def _num(ctx: Context, node: Num) -> Value:
    return node.value


def _str(ctx: Context, node: Str) -> Value:
    return node.value


def _name(ctx: Context, node: Name) -> Value:
    if node.kind == "constant":
        ticks = names.TIME_INTERVALS.get(node.name)
        return TimeInterval(ticks) if ticks is not None else node.name
    if node.kind == "read_only":
        if node.name in ctx.scalars:
            return ctx.scalars[node.name]
        history = ctx.histories.get(node.name)
        latest = history.latest(ctx.now) if history is not None else None
        if latest is not None:
            return latest
        return 1.0 if node.name == "$TaskSlotsPerNode" else 0.0  # an idle, fresh pool
    if node.name not in ctx.env:  # only reachable after stop() in an odd order
        raise ctx.fail(f"variable '{node.name}' has no value", node)
    return ctx.env[node.name]


def _unary(ctx: Context, node: Unary) -> Value:
    value = ctx.eval(node.operand)
    if node.op == "!":
        if isinstance(value, float):
            return 0.0 if value else 1.0
        raise ctx.fail(f"'!' applies to a double, not a {type_name(value)}", node)
    if isinstance(value, float):
        return -value
    if isinstance(value, tuple):
        return tuple(-v for v in value)
    if isinstance(value, TimeInterval):
        return _interval(ctx, -value.ticks, node)
    raise ctx.fail(f"'-' applies to a double, doubleVec or timeinterval, not a {type_name(value)}", node)


def _ternary(ctx: Context, node: Ternary) -> Value:
    cond = ctx.number(node.cond, "the condition of '?:'")
    # Only the chosen branch runs: Azure's pending-tasks example depends on it
    # (avg() of too few samples sits in the branch that is not taken).
    return ctx.eval(node.then if cond != 0.0 else node.other)


def _chain(ctx: Context, node: Chain) -> Value:
    left = ctx.eval(node.first)
    for op, pos, right_node in node.rest:
        if op in ("&&", "||"):
            if not isinstance(left, float):
                raise ctx.fail(f"'{op}' applies to doubles, not a {type_name(left)}", pos)
            # Short-circuit, as C# does, so a guard can protect the right side.
            if (op == "&&" and left == 0.0) or (op == "||" and left != 0.0):
                left = 1.0 if op == "||" else 0.0
                continue
            right = ctx.eval(right_node)
            if not isinstance(right, float):
                raise ctx.fail(f"'{op}' applies to doubles, not a {type_name(right)}", right_node)
            left = 1.0 if right != 0.0 else 0.0
        else:
            left = binary(ctx, op, left, ctx.eval(right_node), pos)
    return left


_COMPARE: dict[str, Callable[[object, object], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}
_COMPARABLE = (float, str, datetime, TimeInterval)


def binary(ctx: Context, op: str, a: Value, b: Value, pos: tuple[int, int]) -> Value:
    """``a op b`` for the arithmetic and comparison operators of Azure's table."""
    if op in _COMPARE:
        if type(a) is type(b) and isinstance(a, _COMPARABLE):
            return 1.0 if _COMPARE[op](a, b) else 0.0
        raise ctx.fail(f"cannot compare a {type_name(a)} with a {type_name(b)} using '{op}'", pos)
    if isinstance(a, float) and isinstance(b, float):
        return _arith(ctx, op, a, b, pos)
    # doubleVec with double or doubleVec, component-wise. Azure's table lists
    # "doubleVec op double"; "double op doubleVec" is allowed too, since a
    # formula author expects 2 * v to mean v * 2.
    if isinstance(a, tuple) and isinstance(b, float):
        return tuple(_arith(ctx, op, x, b, pos) for x in a)
    if isinstance(a, float) and isinstance(b, tuple):
        return tuple(_arith(ctx, op, a, y, pos) for y in b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) != len(b):
            raise ctx.fail(f"'{op}' needs doubleVecs of equal length, not {len(a)} and {len(b)}", pos)
        return tuple(_arith(ctx, op, x, y, pos) for x, y in zip(a, b))
    if isinstance(a, TimeInterval) and isinstance(b, TimeInterval) and op in "+-":
        return _interval(ctx, a.ticks + b.ticks if op == "+" else a.ticks - b.ticks, pos)
    if op == "*" and isinstance(a, TimeInterval) and isinstance(b, float):
        return _scaled(ctx, a, b, pos)
    if op == "*" and isinstance(a, float) and isinstance(b, TimeInterval):
        return _scaled(ctx, b, a, pos)
    if op == "/" and isinstance(a, TimeInterval) and isinstance(b, float):
        if b == 0.0:
            raise ctx.fail("division by zero", pos)
        return _scaled(ctx, a, b, pos, divide=True)
    if op == "+" and isinstance(a, datetime) and isinstance(b, TimeInterval):
        return _shift(ctx, a, b, pos)
    if op == "+" and isinstance(a, TimeInterval) and isinstance(b, datetime):
        return _shift(ctx, b, a, pos)
    if op == "-" and isinstance(a, datetime) and isinstance(b, datetime):
        delta = a - b
        return TimeInterval(((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 10)
    raise ctx.fail(f"'{op}' is not defined between a {type_name(a)} and a {type_name(b)}", pos)


def _arith(ctx: Context, op: str, a: float, b: float, pos: tuple[int, int]) -> float:
    if op == "+":
        result = a + b
    elif op == "-":
        result = a - b
    elif op == "*":
        result = a * b
    else:
        if b == 0.0:
            raise ctx.fail("division by zero", pos)
        result = a / b
    return ctx.finite(result, pos)


def _interval(ctx: Context, ticks: int, pos: Node | tuple[int, int]) -> TimeInterval:
    if abs(ticks) > MAX_TICKS:
        _too_long(ctx, pos)
    return TimeInterval(ticks)


def _too_long(ctx: Context, pos: Node | tuple[int, int]) -> TimeInterval:
    raise ctx.fail("the time interval is too long (more than about 29 000 years)", pos)


def _scaled(ctx: Context, interval: TimeInterval, factor: float, pos: tuple[int, int],
            divide: bool = False) -> TimeInterval:
    ticks = interval.ticks / factor if divide else interval.ticks * factor
    if not math.isfinite(ticks) or abs(ticks) > MAX_TICKS:
        _too_long(ctx, pos)
    return TimeInterval(round(ticks))


def _shift(ctx: Context, stamp: datetime, interval: TimeInterval, pos: tuple[int, int]) -> datetime:
    try:
        return stamp + timedelta(microseconds=round(interval.ticks / 10))
    except OverflowError:
        raise ctx.fail("the timestamp is out of range (years 1 to 9999)", pos) from None


def _member(ctx: Context, node: Member) -> Value:
    value = ctx.eval(node.obj)
    if not isinstance(value, datetime):
        raise ctx.fail(f"'.{node.member}' applies to a timestamp, not a {type_name(value)}", node)
    if node.member == "weekday":
        return float(value.isoweekday())  # 1 for Monday ... 7 for Sunday
    return float(getattr(value, node.member))


def _method(ctx: Context, node: Method) -> Value:
    args = [ctx.eval(a) for a in node.args]
    history = ctx.histories.get(node.target) or History(())
    return call_method(ctx, node, history, args)


def _call(ctx: Context, node: Call) -> Value:
    return call_function(ctx, node)


_HANDLERS: dict[type, Callable[[Context, Node], Value]] = {
    Num: _num, Str: _str, Name: _name, Unary: _unary, Ternary: _ternary,
    Chain: _chain, Member: _member, Method: _method, Call: _call,
}
