"""Tokens of the autoscale formula language, each with its 1-based line and column."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import FormulaError

# Longest first, so "<=" is not read as "<" then "=".
_OPERATORS = ("&&", "||", "<=", ">=", "==", "!=", "+", "-", "*", "/", "<", ">", "!", "?", ":", "=", "(", ")", ",", ".", ";")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_DIGITS = frozenset("0123456789")
_WORD = _ASCII_LETTERS | _DIGITS


@dataclass(frozen=True, slots=True)
class Token:
    """One token. ``kind`` is ``num``, ``str``, ``name``, ``op`` or ``eof``."""

    kind: str
    text: str
    line: int
    column: int
    newline_before: bool = False  # lets a line break end a statement
    value: object = None  # the float of a number, the contents of a string

    @property
    def pos(self) -> tuple[int, int]:
        return (self.line, self.column)

    def describe(self) -> str:
        return "end of formula" if self.kind == "eof" else repr(self.text)


def tokenize(text: str) -> list[Token]:
    """Split formula text into tokens; ``//`` comments and whitespace are dropped.

    >>> [t.text for t in tokenize("$x = 1.5; // done")]
    ['$x', '=', '1.5', ';', '']
    """
    tokens: list[Token] = []
    i, line, col, n = 0, 1, 1, len(text)
    newline = False

    def fail(message: str) -> FormulaError:
        return FormulaError(message, line, col, text)

    while i < n:
        ch = text[i]
        if ch == "\n":
            i, line, col, newline = i + 1, line + 1, 1, True
            continue
        if ch in " \t\r\f\v":
            i, col = i + 1, col + 1
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            col += end - i
            i = end
            continue
        start_col = col
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            if j < n and text[j] == "." and not (j + 1 < n and text[j + 1] in _ASCII_LETTERS):
                j += 1
                while j < n and text[j] in _DIGITS:
                    j += 1
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and text[k] in _DIGITS:
                    j = k
                    while j < n and text[j] in _DIGITS:
                        j += 1
            word = text[i:j]
            if j < n and text[j] in _ASCII_LETTERS:
                raise fail(f"malformed number {text[i:j + 1]!r}")
            value = float(word)
            if not math.isfinite(value):
                raise fail(f"number {word!r} is too large")
            tokens.append(Token("num", word, line, start_col, newline, value))
        elif ch in _ASCII_LETTERS or ch == "$":
            j = i + 1
            while j < n and text[j] in _WORD:
                j += 1
            word = text[i:j]
            if word == "$":
                raise fail("'$' must be followed by a variable name")
            if word[0] == "$" and word[1] in _DIGITS:
                raise fail(f"variable name {word!r} must not start with a digit")
            tokens.append(Token("name", word, line, start_col, newline))
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 1
            if j >= n or text[j] != ch:
                raise fail("string is not closed: add the closing quote on the same line")
            j += 1
            tokens.append(Token("str", text[i:j], line, start_col, newline, text[i + 1:j - 1]))
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                shown = ch if ch.isprintable() else f"U+{ord(ch):04X}"
                hint = " ('%' is not a formula operator)" if ch == "%" else ""
                raise fail(f"unexpected character {shown!r}{hint}")
            j = i + len(op)
            tokens.append(Token("op", op, line, start_col, newline))
        col += j - i
        i = j
        newline = False
    tokens.append(Token("eof", "", line, col, newline))
    return tokens
