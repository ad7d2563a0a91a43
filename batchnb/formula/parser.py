"""Parser of the autoscale formula language: tokens -> statements (a small AST).

Grammar, loosest binding first::

    formula    := statement? ((';' | line break) statement?)*
    statement  := NAME '=' expr | NAME '(' args ')'     (a bare call: stop())
    expr       := or ('?' expr ':' expr)?
    or         := and ('||' and)*          and := equality ('&&' equality)*
    equality   := compare (('=='|'!=') compare)*
    compare    := additive (('<'|'<='|'>'|'>=') additive)*
    additive   := term (('+'|'-') term)*   term := unary (('*'|'/') unary)*
    unary      := ('-'|'!'|'+') unary | postfix
    postfix    := primary ('.' NAME ('(' args ')')?)*
    primary    := NUMBER | STRING | NAME | NAME '(' args ')' | '(' expr ')'

Everything that can be known without data is checked here, so a bad formula
fails when a pool is created rather than at its first evaluation: unknown
functions and methods, argument counts, assignment to read-only variables,
variables used before they are assigned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import names as names
from .lexer import Token, tokenize
from ..errors import FormulaError

# Both bounds keep Python's own recursion (parser and evaluator) far below its
# limit, so no RecursionError can escape, whatever the text.
MAX_NESTING = 40
MAX_DEPTH = 80

_BINARY_PRECEDENCE = {
    "||": 1, "&&": 2,
    "==": 3, "!=": 3,
    "<": 4, "<=": 4, ">": 4, ">=": 4,
    "+": 5, "-": 5,
    "*": 6, "/": 6,
}


@dataclass(frozen=True, slots=True)
class Node:
    pos: tuple[int, int]
    depth: int = field(default=1, kw_only=True)


@dataclass(frozen=True, slots=True)
class Num(Node):
    value: float


@dataclass(frozen=True, slots=True)
class Str(Node):
    value: str


@dataclass(frozen=True, slots=True)
class Name(Node):
    name: str
    kind: str  # "user", "read_only", "settable" or "constant"


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Chain(Node):
    """``first op1 x1 op2 x2 ...`` at one precedence level, left to right.

    A flat chain, not nested binary nodes, so ``1+1+...+1`` stays shallow.
    """

    first: Node
    rest: tuple[tuple[str, tuple[int, int], Node], ...]


@dataclass(frozen=True, slots=True)
class Ternary(Node):
    cond: Node
    then: Node
    other: Node


@dataclass(frozen=True, slots=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Method(Node):
    target: str  # canonical name of a read-only system variable
    method: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Member(Node):
    obj: Node
    member: str


@dataclass(frozen=True, slots=True)
class Statement:
    pos: tuple[int, int]
    target: str | None  # None for a bare expression such as ``stop()``
    expr: Node


def _depth(*children: Node) -> int:
    return 1 + max((c.depth for c in children), default=0)


class Parser:
    """Parses one formula text; use :func:`parse_statements`."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.nesting = 0
        self.assigned: set[str] = set()
        self.target: str | None = None  # of the statement being parsed

    # -- helpers ---------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, at: Token | tuple[int, int]) -> FormulaError:
        line, col = at.pos if isinstance(at, Token) else at
        return FormulaError(message, line, col, self.text)

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def expect(self, op: str, context: str) -> Token:
        if not self.is_op(op):
            raise self.error(f"expected '{op}' {context}, found {self.tok.describe()}", self.tok)
        return self.advance()

    def checked(self, node: Node) -> Node:
        if node.depth > MAX_DEPTH:
            raise self.error(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", node.pos)
        return node

    def enter(self, at: Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(f"expression is nested too deeply (more than {MAX_NESTING} levels)", at)

    # -- statements ------------------------------------------------------
    def parse(self) -> list[Statement]:
        statements: list[Statement] = []
        while self.tok.kind != "eof":
            if self.is_op(";"):
                self.advance()
                continue
            statements.append(self.statement())
            if len(statements) > names.MAX_STATEMENTS:
                raise self.error(f"a formula holds at most {names.MAX_STATEMENTS} statements (Azure's limit)", statements[-1].pos)
            if self.is_op(";"):
                self.advance()
            elif self.tok.kind != "eof" and not self.tok.newline_before:
                raise self.error(f"expected ';' or a line break before {self.tok.describe()}", self.tok)
        return statements

    def statement(self) -> Statement:
        first = self.tok
        nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else first
        if first.kind == "name" and nxt.kind == "op" and nxt.text == "=":
            self.check_target(first)
            self.i += 2
            target = self.target = names.canonical(first.text)
            expr = self.expr()
            self.target = None
            if target == names.DEALLOCATION:
                self.check_deallocation(expr)
            self.assigned.add(first.text)
            return Statement(first.pos, first.text, expr)
        expr = self.expr()
        # A bare expression can only matter for its effect, and the only
        # function with one is stop(); anything else is a typo such as
        # "$TargetDedicatedNodes == 5" that would silently scale nothing.
        if not isinstance(expr, Call):
            hint = "; did you mean '=' instead of '=='?" if isinstance(expr, Chain) and expr.rest[0][0] == "==" else ""
            raise self.error("a statement must assign a value: name = expression" + hint, first)
        return Statement(first.pos, None, expr)

    def check_target(self, tok: Token) -> None:
        name = tok.text
        if names.is_read_only(name):
            raise self.error(
                f"{name} is read-only; a formula may set only "
                "$TargetDedicatedNodes, $TargetLowPriorityNodes and $NodeDeallocationOption", tok)
        if names.is_constant(name):
            raise self.error(f"{name} is a constant and cannot be assigned", tok)
        self.check_case(tok)
        near = None if names.is_settable(name) else names.near_miss(name, (*names.SETTABLE, *names.SETTABLE_ALIASES))
        if near:
            # Setting a near miss makes a user variable and silently scales nothing.
            raise self.error(f"unknown system variable {name}: did you mean {near}? (a formula sets "
                             "$TargetDedicatedNodes, $TargetLowPriorityNodes and $NodeDeallocationOption)", tok)

    def check_deallocation(self, expr: Node) -> None:
        """A literal value of $NodeDeallocationOption is checked now, not at the first evaluation."""
        if isinstance(expr, Str) and expr.value.lower() not in names.DEALLOCATION_OPTIONS:
            raise self.error(f"$NodeDeallocationOption must be one of {', '.join(names.DEALLOCATION_OPTIONS)}, "
                             f"not {expr.value!r}" + _did_you_mean(expr.value, names.DEALLOCATION_OPTIONS), expr.pos)
        if isinstance(expr, Num):
            raise self.error(f"$NodeDeallocationOption must be one of {', '.join(names.DEALLOCATION_OPTIONS)}, "
                             "not a number", expr.pos)

    def check_case(self, tok: Token) -> None:
        near = names.near_builtin(tok.text)
        if near:
            raise self.error(f"unknown name {tok.text}; names are case-sensitive: did you mean {near}?", tok)

    # -- expressions -----------------------------------------------------
    def expr(self) -> Node:
        cond = self.binary(1)
        if not self.is_op("?"):
            return cond
        q = self.advance()
        self.enter(q)
        then = self.expr()
        self.expect(":", "in 'condition ? value : value'")
        other = self.expr()
        self.nesting -= 1
        return self.checked(Ternary(cond.pos, cond, then, other, depth=_depth(cond, then, other)))

    def binary(self, min_prec: int) -> Node:
        left = self.unary()
        while True:
            tok = self.tok
            prec = _BINARY_PRECEDENCE.get(tok.text) if tok.kind == "op" else None
            if prec is None or prec < min_prec:
                return left
            rest = []
            while self.tok.kind == "op" and _BINARY_PRECEDENCE.get(self.tok.text) == prec:
                op = self.advance()
                rest.append((op.text, op.pos, self.binary(prec + 1)))
            left = self.checked(Chain(left.pos, left, tuple(rest), depth=_depth(left, *(r[2] for r in rest))))

    def unary(self) -> Node:
        if self.is_op("-", "!", "+"):
            op = self.advance()
            self.enter(op)
            operand = self.unary()
            self.nesting -= 1
            if op.text == "+":
                return operand
            if op.text == "-" and isinstance(operand, Num):
                return Num(op.pos, -operand.value)
            return self.checked(Unary(op.pos, op.text, operand, depth=_depth(operand)))
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while self.is_op("."):
            self.advance()
            member = self.tok
            if member.kind != "name" or member.text.startswith("$"):
                raise self.error(f"expected a method or member name after '.', found {member.describe()}", member)
            self.advance()
            if self.is_op("("):
                node = self.method(node, member)
            else:
                if member.text not in names.TIMESTAMP_MEMBERS:
                    raise self.error(
                        f"unknown member '{member.text}'; a timestamp has "
                        + ", ".join(names.TIMESTAMP_MEMBERS), member)
                node = self.checked(Member(member.pos, node, member.text, depth=_depth(node)))
        return node

    def method(self, target: Node, member: Token) -> Node:
        if member.text not in names.METHODS:
            raise self.error(f"unknown method '{member.text}'; the methods are " + ", ".join(names.METHODS), member)
        if not (isinstance(target, Name) and target.kind == "read_only"):
            raise self.error(
                f"{member.text}() applies to a sampled system variable such as $PendingTasks or $CPUPercent", member)
        args = self.arguments(member)
        low, high = names.METHODS[member.text]
        if not low <= len(args) <= high:
            raise self.error(f"{member.text}() takes {_count(low, high)}, not {len(args)}", member)
        return self.checked(Method(member.pos, target.name, member.text, args, depth=_depth(*args)))

    def arguments(self, at: Token) -> tuple[Node, ...]:
        open_tok = self.expect("(", "")
        self.enter(open_tok)
        args: list[Node] = []
        if not self.is_op(")"):
            args.append(self.expr())
            while self.is_op(","):
                self.advance()
                args.append(self.expr())
        self.expect(")", f"to close the arguments of {at.text}()")
        self.nesting -= 1
        return tuple(args)

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "num":
            self.advance()
            return Num(tok.pos, tok.value)
        if tok.kind == "str":
            self.advance()
            return Str(tok.pos, tok.value)
        if self.is_op("("):
            self.advance()
            self.enter(tok)
            inner = self.expr()
            self.expect(")", "to close '('")
            self.nesting -= 1
            return inner
        if tok.kind == "name":
            self.advance()
            if self.is_op("("):
                return self.call(tok)
            return self.name(tok)
        raise self.error(f"expected a value, found {tok.describe()}", tok)

    def call(self, tok: Token) -> Node:
        if tok.text not in names.FUNCTIONS:
            raise self.error(f"unknown function '{tok.text}'; the functions are " + ", ".join(sorted(names.FUNCTIONS)), tok)
        args = self.arguments(tok)
        low, high = names.FUNCTIONS[tok.text]
        if len(args) < low or (high is not None and len(args) > high):
            raise self.error(f"{tok.text}() takes {_count(low, high)}, not {len(args)}", tok)
        return self.checked(Call(tok.pos, tok.text, args, depth=_depth(*args)))

    def name(self, tok: Token) -> Node:
        text = tok.text
        if names.is_read_only(text):
            return Name(tok.pos, names.canonical(text), "read_only")
        if names.is_settable(text):
            return Name(tok.pos, text, "settable")
        if names.is_constant(text):
            return Name(tok.pos, text, "constant")
        self.check_case(tok)
        if text not in self.assigned:
            if self.target == names.DEALLOCATION and not text.startswith("$"):
                raise self.error(f"'{text}' is not a node deallocation option; $NodeDeallocationOption is one of "
                                 + ", ".join(names.DEALLOCATION_OPTIONS)
                                 + _did_you_mean(text, names.DEALLOCATION_OPTIONS), tok)
            raise self.error(f"variable '{text}' is used before it is assigned"
                             + _did_you_mean(text, (*names.BUILTIN_NAMES, *self.assigned)), tok)
        return Name(tok.pos, text, "user")


def _did_you_mean(name: str, candidates) -> str:
    near = names.near_miss(name, candidates)
    return f"; did you mean {near}?" if near else ""


def _count(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} argument" + ("s" if low != 1 else "")
    if low == high:
        return f"{low} argument" + ("s" if low != 1 else "")
    return f"{low} to {high} arguments"


def parse_statements(text: str) -> list[Statement]:
    """Parse formula text into statements, raising FormulaError at the first problem."""
    if not isinstance(text, str):
        raise FormulaError(f"a formula is a string, not {type(text).__name__}", 0, 0, None)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > names.MAX_FORMULA_BYTES:
        raise FormulaError(f"the formula is {size} bytes; Azure allows at most {names.MAX_FORMULA_BYTES}", 1, 1, text)
    try:
        return Parser(text).parse()
    except RecursionError:  # only when called from an already deep stack
        raise FormulaError("the formula is nested too deeply to parse here", 1, 1, text) from None
