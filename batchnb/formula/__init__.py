"""Azure Batch autoscale formulas: parse and evaluate them without a pool.

The language is Azure's ("Create a formula to automatically scale compute
nodes in a Batch pool"): statements separated by ``;`` or line breaks, ``//``
comments, user variables and ``$`` service variables, the operators and
functions of Azure's tables, and the sample methods of the metrics
(``$PendingTasks.GetSample(TimeInterval_Minute * 15, 70)``).

Values map to Python as: double -> ``float``, doubleVec -> ``tuple`` of floats,
string -> ``str``, timestamp -> aware UTC ``datetime``, timeinterval ->
:class:`TimeInterval`. Every problem, at parse or at evaluation, raises
:class:`~batchnb.FormulaError` with the 1-based line and column of the
offending token; invalid ``metrics``/``variables``/``now`` arguments raise
:class:`~batchnb.SpecError` naming the argument.

Where Azure's documentation is silent, this module chooses (and
``tests/test_formula.py`` pins down): division by zero, logs of non-positive
numbers and results beyond a double are errors; ``GetSample`` vectors are
oldest first; ``weekday`` is 1 (Monday) to 7 (Sunday); ``&&``, ``||`` and
``?:`` evaluate only what they need; a negative final target is an error;
a sampled variable read as a plain value gives the value in ``variables``,
else its latest sample, else 0 (1 for ``$TaskSlotsPerNode``).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from . import names
from .evaluator import Context
from .names import DEALLOCATION_OPTIONS, READ_ONLY, SETTABLE
from .parser import Method, Name, Node, Statement, parse_statements
from .samples import History
from .values import Stop, TimeInterval, as_utc, format_value, from_python, type_name
from ..errors import FormulaError, SpecError

__all__ = [
    "DEALLOCATION_OPTIONS", "READ_ONLY", "SETTABLE", "Formula", "TimeInterval",
    "evaluate", "format_results", "parse",
]

Samples = Mapping[str, Iterable[tuple[datetime, float]]]
DEFAULT_SAMPLE_PERIOD = timedelta(seconds=30)  # Azure samples its metrics every 30 s


class Formula:
    """A parsed autoscale formula; evaluate it as often as needed (it holds no state).

    >>> f = parse("$TargetDedicatedNodes = min(10, $PendingTasks.GetSample(1))")
    >>> f.evaluate(metrics={"$PendingTasks": [(datetime(2024, 5, 1, 8), 4.0)]},
    ...            now=datetime(2024, 5, 1, 8, 1))["$TargetDedicatedNodes"]
    4.0
    """

    __slots__ = ("text", "_statements", "system_variables")

    def __init__(self, text: str, statements: list[Statement]):
        self.text = text
        self._statements = tuple(statements)
        #: Read-only service variables the formula reads: the metrics worth recording.
        self.system_variables: frozenset[str] = frozenset(_read_only_names(statements))

    def __repr__(self) -> str:
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return f"<Formula {len(self._statements)} statements: {first[:60]!r}>"

    def evaluate(self, metrics: Samples | None = None, now: datetime | None = None,
                 variables: Mapping[str, Any] | None = None, *,
                 sample_period: timedelta | float = DEFAULT_SAMPLE_PERIOD,
                 rng: random.Random | int | None = None) -> dict[str, object]:
        """Run the formula; return every variable it assigned plus the three settable ones.

        Parameters
        ----------
        metrics : mapping, optional
            ``{"$PendingTasks": [(timestamp, value), ...], ...}``: the sample
            history of the sampled service variables. Naive timestamps are UTC.
        now : datetime, optional
            The evaluation time (default: the current UTC time). Samples stamped
            later are ignored.
        variables : mapping, optional
            Plain values of service variables, e.g. ``{"$CurrentDedicatedNodes": 3}``.
            The settable targets start from ``$TargetDedicatedNodes`` (else
            ``$CurrentDedicatedNodes``, else 0) and the low-priority equivalents;
            ``$NodeDeallocationOption`` from its value here, else ``requeue``.
        sample_period : timedelta or float
            The interval at which metrics are expected (Azure: 30 s); it sets
            the 100 % of ``GetSamplePercent`` and the ``samplePercent`` of
            ``GetSample``.
        rng : random.Random or int, optional
            Source (or seed) for ``rand()``.

        Returns
        -------
        dict
            ``$TargetDedicatedNodes``, ``$TargetLowPriorityNodes`` (floats) and
            ``$NodeDeallocationOption`` (str) first, then each assigned variable
            in order of first assignment. Targets are not rounded here;
            :mod:`batchnb.autoscale` truncates them, as Azure does.

        Examples
        --------
        >>> parse("n = 3; $TargetLowPriorityNodes = n * 2").evaluate()["$TargetLowPriorityNodes"]
        6.0
        """
        when = _now(now)
        ctx = Context(self.text, {}, _histories(metrics), _scalars(variables), when,
                      _period(sample_period), _rng(rng))
        env = ctx.env
        for name in (*SETTABLE, *names.SETTABLE_ALIASES):
            env[name] = _default(names.canonical(name), ctx.scalars)
        assigned: dict[str, tuple[int, int]] = {}
        for statement in self._statements:
            try:
                value = ctx.eval(statement.expr)
            except Stop:
                break
            except FormulaError:
                raise
            except Exception as exc:  # a bug of ours must still come out as a FormulaError
                raise FormulaError(f"cannot evaluate this statement ({type(exc).__name__}: {exc})",
                                   *statement.pos, self.text) from exc
            if statement.target is not None:
                env[statement.target] = _settable(ctx, statement, value)
                assigned[statement.target] = statement.pos
        for alias, full in names.SETTABLE_ALIASES.items():
            if alias in assigned and full not in assigned:  # the full name wins when both are set
                env[full] = env[alias]
                assigned.setdefault(full, assigned[alias])
        for target in (names.TARGET_DEDICATED, names.TARGET_LOW_PRIORITY):
            if env[target] < 0:
                line, col = assigned.get(target, (0, 0))
                raise FormulaError(f"{target} is {env[target]:g}; a target number of nodes cannot be negative "
                                   "(write max(0, ...))", line, col, self.text)
        out = {name: env[name] for name in SETTABLE}
        out.update((name, env[name]) for name in assigned)
        return out


def parse(text: str) -> Formula:
    """Parse an autoscale formula; raise FormulaError with line and column if it is invalid.

    >>> parse("$TargetDedicatedNodes = max(0, $PendingTasks.GetSample(1)")
    Traceback (most recent call last):
    ...
    batchnb.FormulaError: autoscale formula, line 1, column 58: expected ')' to close the arguments of max(), found end of formula
    """
    return Formula(text, parse_statements(text))


def evaluate(text: str, metrics: Samples | None = None, now: datetime | None = None,
             variables: Mapping[str, Any] | None = None, **options: Any) -> dict[str, object]:
    """Parse and evaluate a formula at once; see :meth:`Formula.evaluate`.

    >>> out = evaluate("$TargetDedicatedNodes = $CurrentDedicatedNodes + 1;",
    ...                variables={"$CurrentDedicatedNodes": 3})
    >>> out["$TargetDedicatedNodes"], out["$NodeDeallocationOption"]
    (4.0, 'requeue')
    """
    return parse(text).evaluate(metrics, now, variables, **options)


def format_results(results: Mapping[str, object]) -> str:
    """Results in the text form of Azure's EvaluateAutoScale (``$name=value;...``).

    >>> format_results({"$TargetDedicatedNodes": 10.0, "$NodeDeallocationOption": "requeue"})
    '$TargetDedicatedNodes=10;$NodeDeallocationOption=requeue'
    """
    return ";".join(f"{name}={format_value(value)}" for name, value in results.items())


# -- helpers ---------------------------------------------------------------
def _read_only_names(statements: list[Statement]) -> Iterable[str]:
    stack: list[Node] = [s.expr for s in statements]
    while stack:
        node = stack.pop()
        if isinstance(node, Name) and node.kind == "read_only":
            yield node.name
        elif isinstance(node, Method):
            yield node.target
        for slot in getattr(node, "__slots__", ()):
            child = getattr(node, slot, None)
            if isinstance(child, Node):
                stack.append(child)
            elif isinstance(child, tuple):
                stack.extend(c for c in child if isinstance(c, Node))
                stack.extend(c[2] for c in child if isinstance(c, tuple) and len(c) == 3)


def _settable(ctx: Context, statement: Statement, value: object) -> object:
    target = names.canonical(statement.target or "")
    if target in (names.TARGET_DEDICATED, names.TARGET_LOW_PRIORITY) and not isinstance(value, float):
        raise ctx.fail(f"{statement.target} must be a double, not a {type_name(value)}", statement.expr)
    if target == names.DEALLOCATION:
        if not (isinstance(value, str) and value.lower() in DEALLOCATION_OPTIONS):
            raise ctx.fail(f"$NodeDeallocationOption must be one of {', '.join(DEALLOCATION_OPTIONS)}, "
                           f"not {format_value(value)!r}", statement.expr)
        return value.lower()
    return value


def _default(name: str, scalars: Mapping[str, object]) -> object:
    if name == names.DEALLOCATION:
        return scalars.get(name, "requeue")
    current = "$CurrentDedicatedNodes" if name == names.TARGET_DEDICATED else "$CurrentLowPriorityNodes"
    return scalars.get(name, scalars.get(current, 0.0))


def _now(now: object) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if not isinstance(now, datetime):
        raise SpecError("now", now, "expected a datetime (naive ones are taken as UTC)")
    return as_utc(now)


def _period(value: object) -> TimeInterval:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (0 < seconds < 1e9):
        raise SpecError("sample_period", value, "expected a positive timedelta or number of seconds")
    return TimeInterval(round(seconds * 10_000_000))


def _rng(value: object) -> random.Random:
    if value is None:
        return random.Random()
    if isinstance(value, random.Random):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return random.Random(value)
    raise SpecError("rng", value, "expected a random.Random or an int seed")


def _histories(metrics: Samples | None) -> dict[str, History]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise SpecError("metrics", metrics, "expected a mapping of '$Metric' -> [(timestamp, value), ...]")
    histories: dict[str, History] = {}
    for name, samples in metrics.items():
        if not (isinstance(name, str) and names.is_read_only(name)):
            near = names.near_miss(name, READ_ONLY) if isinstance(name, str) else None
            raise SpecError("metrics", name, "not a sampled service variable; " + (
                f"did you mean {near}?" if near else "use one of " + ", ".join(READ_ONLY)))
        checked = []
        try:
            for sample in samples:
                when, value = sample
                number = from_python(value)
                if not isinstance(when, datetime) or not isinstance(number, float):
                    raise SpecError(f"metrics[{name!r}]", sample, "a sample is (datetime, finite number)")
                checked.append((as_utc(when), number))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"metrics[{name!r}]", samples, "expected a list of (datetime, number) pairs") from None
        histories[names.canonical(name)] = History(checked)
    return histories


def _scalars(variables: Mapping[str, Any] | None) -> dict[str, object]:
    if variables is None:
        return {}
    if not isinstance(variables, Mapping):
        raise SpecError("variables", variables, "expected a mapping of '$Variable' -> value")
    scalars: dict[str, object] = {}
    for name, raw in variables.items():
        if not (isinstance(name, str) and (names.is_read_only(name) or names.is_settable(name))):
            near = names.near_miss(name, (*READ_ONLY, *SETTABLE)) if isinstance(name, str) else None
            raise SpecError("variables", name, f"not a service variable; did you mean {near}?" if near else
                            "not a service variable; use e.g. $CurrentDedicatedNodes")
        key = names.canonical(name)
        value = from_python(raw)
        if key == names.DEALLOCATION:
            if not (isinstance(value, str) and value.lower() in DEALLOCATION_OPTIONS):
                raise SpecError(f"variables[{name!r}]", raw, "expected one of " + ", ".join(DEALLOCATION_OPTIONS))
            value = value.lower()
        elif not isinstance(value, float):
            raise SpecError(f"variables[{name!r}]", raw, "expected a finite number")
        elif key in (names.TARGET_DEDICATED, names.TARGET_LOW_PRIORITY) and value < 0:
            raise SpecError(f"variables[{name!r}]", raw, "a number of nodes cannot be negative")
        scalars[key] = value
    return scalars
