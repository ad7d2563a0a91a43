"""Output patterns as Azure Batch reads them.

``*`` matches within one path component, ``?`` one character, ``[abc]`` and
``[!abc]`` a character class, and a ``**`` component any number of folders
(none included). Hidden files match like any other: Azure uploads them too.
A file's path relative to the pattern's *base* (its folders before the
first wildcard; for a pattern without wildcards, its folder) is what a
folder destination keeps.

>>> match("out/**/*.png", ["out/a.png", "out/x/y/b.png", "out/c.txt", "top.png"])
[('out/a.png', 'a.png'), ('out/x/y/b.png', 'x/y/b.png')]
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from ..errors import StagingError

_WILD = frozenset("*?[")


def has_wildcard(text: str) -> bool:
    return any(c in _WILD for c in text)


def base(pattern: str) -> str:
    """The folders of ``pattern`` before its first wildcard component ('' for the top)."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if has_wildcard(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def compile_pattern(pattern: str) -> re.Pattern:
    parts = pattern.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_component(part) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _component(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            while i + 1 < len(part) and part[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            first = i + 2 if part[i + 1:i + 2] in ("!", "^") else i + 1
            end = part.find("]", first + 1)  # a ']' right after '[' is a member, as in fnmatch
            if end < 0:
                out.append(re.escape(c))
            else:
                body = part[i + 1:end]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                out.append("[" + ("^/" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def match(pattern: str, paths: Iterable[str]) -> list[tuple[str, str]]:
    """``(path, path relative to the pattern's base)`` for each path that matches, in order."""
    regex = compile_pattern(pattern)
    root = base(pattern) if has_wildcard(pattern) else pattern.rpartition("/")[0]
    cut = len(root) + 1 if root else 0
    return [(p, p[cut:]) for p in paths if regex.match(p)]


def list_files(folder: Path) -> list[str]:
    """Every file under ``folder`` as a sorted '/'-separated relative path.

    Symbolic links to folders are not followed (they may lead out of the
    working dir); links to files count as files.
    """
    found = []
    for dirpath, _dirs, names in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        for name in names:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return sorted(found)


def check_inside(local: Path, task_dir: Path, what: str, rel: str) -> None:
    """Refuse a matched file that is a link to something outside the task's folder.

    Not skipped: as on Azure, where an output that cannot be uploaded fails the task
    (FileUploadError), a declared output never goes missing silently; and not followed,
    or ``ln -s /etc/shadow x.txt`` would upload what the task could only point at.
    """
    if not os.path.islink(local):
        return
    target = os.path.realpath(local)
    root = os.path.realpath(task_dir)
    if os.path.commonpath([target, root]) != root:
        raise StagingError(f"{what}: {rel} is a symbolic link to {target}, outside the task's folder; "
                           "it is not uploaded")
