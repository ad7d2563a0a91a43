"""A ledger file that is damaged says so: checked before it is opened, checked, backed up, salvaged.

:func:`verify` runs before :class:`~.ledger.Ledger` writes anything to a
file: an empty file, a text file, a file that is not SQLite, a SQLite file
that is not a ledger and a truncated or overwritten ledger (``PRAGMA
quick_check``) are a :class:`~batchnb.errors.LedgerError` that names the file
and the command to run, and the file is left as it was. A new ledger is made
whole in a file of its own and linked into place, so no other process ever
sees it half made (a 0-byte ledger is never batchnb's).

:func:`check` (``batchnb ledger check``) gives a verdict; :func:`backup`
copies a live ledger with SQLite's online backup API; :func:`salvage` copies
every row it can read into a new ledger of the current schema, skipping the
pages that cannot be read (SQLite's ``.recover`` is not reachable from
Python, so it seeks past a bad page by rowid).

>>> import tempfile, os
>>> d = tempfile.mkdtemp(); bad = os.path.join(d, "l.sqlite")
>>> _ = open(bad, "w").write("not a ledger")
>>> check(bad)["ok"]
False
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from pathlib import Path

from ..errors import LedgerError
from .schema import SCHEMA_VERSION, file_version, migrate

MAGIC = b"SQLite format 3\x00"
#: The tables a ledger holds, in the order salvage copies them.
TABLES = ("jobs", "tasks", "attempts", "events", "nodes", "audit", "schedules", "schedule_runs")
_verified: set[tuple[str, int]] = set()
_verified_lock = threading.Lock()


def _readonly(path: Path, damaged_too: bool = False) -> sqlite3.Connection:
    con = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=30.0,
                          isolation_level=None, check_same_thread=False)
    if damaged_too:    # a truncated file is read up to its end instead of refused whole
        con.execute("PRAGMA writable_schema = ON")
    # A damaged page may hold bytes that are not UTF-8: keep the row, mark the bytes.
    con.text_factory = lambda b: b.decode("utf-8", "replace")
    return con


def _what_to_do(path: Path, problem: str) -> str:
    if problem.startswith("is an empty file"):
        return (f"If it should be a new ledger, delete it (rm {path}) and batchnb starts one; if it held jobs, "
                f"restore it from a backup ('batchnb ledger backup DEST' makes one)")
    if "not a SQLite database" in problem or "not a batchnb ledger" in problem:
        return ("Point batchnb at a ledger (--ledger PATH, dask config 'batchnb.ledger' or BATCHNB_HOME), "
                "or move this file away")
    return (f"Run 'batchnb --ledger {path} ledger check' to see the damage and "
            f"'batchnb --ledger {path} ledger salvage NEW.sqlite' to copy what can be read into a new ledger, "
            "then use that one (--ledger, dask config 'batchnb.ledger' or BATCHNB_HOME)")


def damaged(path, problem: str) -> LedgerError:
    """The error for a ledger that cannot be trusted: what is wrong and what to do."""
    path = Path(path)
    return LedgerError(f"the ledger {path} {problem}; batchnb did not write to it. {_what_to_do(path, problem)}")


def sqlite_error(path, exc: sqlite3.Error) -> LedgerError:
    """A LedgerError for an SQLite error met while reading or writing ``path``."""
    text = str(exc)
    if "malformed" in text or "not a database" in text or type(exc) is sqlite3.DatabaseError:
        return damaged(path, f"is damaged ({_one_line([text])})")
    return LedgerError(f"ledger {path}: {text}")


def _one_line(errors: list[str], limit: int = 300) -> str:
    lines = [x.strip() for e in errors for x in str(e).splitlines() if x.strip() and not x.startswith("***")]
    text = "; ".join(lines)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def problem(path) -> str | None:
    """What makes ``path`` unusable as a ledger, or None when it is a sound one (or can become one)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "is an empty file (0 bytes), not a ledger"
    with open(path, "rb") as f:
        head = f.read(512)
    if not head.startswith(MAGIC):
        try:
            head.decode("utf-8")
            kind = "a text file"
        except UnicodeDecodeError:
            kind = "binary data"
        return f"is {kind}, not a SQLite database (it starts with {head[:16]!r})"
    if size < 512:
        return f"is damaged: {size} bytes, shorter than a SQLite header (truncated)"
    try:
        con = _readonly(path)
        try:
            errors = [r[0] for r in con.execute("PRAGMA quick_check(5)")]
            if errors != ["ok"]:
                return f"is damaged ({_one_line(errors)})"
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = file_version(con)
        finally:
            con.close()
    except LedgerError as exc:
        return f"is not a batchnb ledger ({exc})"
    except sqlite3.Error as exc:
        return f"is damaged ({_one_line([exc])})"
    tables -= {"sqlite_sequence", "sqlite_stat1"}
    # Any of a ledger's own tables makes it one (a ledger from before this code may hold only some);
    # none of them, and it is some other program's database.
    if tables and not tables & {"jobs", "tasks", "attempts", "events", "nodes", "audit", "meta"}:
        return f"is a SQLite database but not a batchnb ledger (its tables: {', '.join(sorted(tables))})"
    if version and not {"jobs", "tasks"} <= tables:
        return f"is damaged: schema version {version} but no {'jobs' if 'jobs' not in tables else 'tasks'} table"
    return None


def _new_file(path: Path) -> None:
    """Make a ledger of the current schema at ``path`` unless a file is there; never a half-made one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    os.close(fd)
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            migrate(con, path)
        finally:
            con.close()
        try:
            os.link(tmp, path)           # atomic, and fails when another process made it first
        except FileExistsError:
            pass
        except OSError:                  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def verify(path) -> None:
    """Make a new ledger at ``path`` or raise :class:`LedgerError` when the file there is no sound ledger.

    A file is checked once per process (and again when it is replaced).
    """
    path = Path(path)
    if not path.exists():
        _new_file(path)
    key = (str(path.resolve()), path.stat().st_ino)
    with _verified_lock:
        if key in _verified:
            return
    found = problem(path)
    if found:
        raise damaged(path, found)
    with _verified_lock:
        _verified.add(key)


def check(path) -> dict:
    """``{"ok", "path", "problems", "version", "tables"}``: PRAGMA integrity_check and the schema version."""
    path = Path(path)
    out = {"path": str(path), "ok": False, "problems": [], "version": None, "tables": {}}
    if not path.exists():
        raise LedgerError(f"there is no ledger at {path}")
    found = problem(path)
    if found:
        out["problems"].append(found)
        if "not a SQLite database" in found or found.startswith("is an empty file"):
            return out
    try:
        con = _readonly(path, damaged_too=True)
        try:
            try:
                errors = [r[0] for r in con.execute("PRAGMA integrity_check(20)")]
            except sqlite3.Error as exc:
                errors = [str(exc)]
            if errors != ["ok"]:
                out["problems"] += [x for e in errors for x in e.splitlines() if x and not x.startswith("***")]
            out["version"] = file_version(con)
            if out["version"] > SCHEMA_VERSION:
                out["problems"].append(f"schema version {out['version']} is newer than this batchnb's "
                                       f"{SCHEMA_VERSION}: upgrade batchnb")
            for table in TABLES:
                try:
                    out["tables"][table] = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                except sqlite3.Error as exc:
                    out["tables"][table] = None
                    if "no such table" not in str(exc):
                        out["problems"].append(f"{table}: {exc}")
        finally:
            con.close()
    except (sqlite3.Error, LedgerError) as exc:
        out["problems"].append(str(exc))
    out["problems"] = list(dict.fromkeys(out["problems"]))
    out["ok"] = not out["problems"]
    return out


def _fresh_dest(dest) -> Path:
    dest = Path(dest).expanduser()
    if dest.exists() and dest.stat().st_size:
        raise LedgerError(f"{dest} exists; give a new file to write to (nothing was written)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    return dest


def backup(path, dest) -> Path:
    """Copy a live ledger to ``dest`` with SQLite's online backup API (a pool may write meanwhile)."""
    path, dest = Path(path), _fresh_dest(dest)
    if not path.exists():
        raise LedgerError(f"there is no ledger at {path}")
    found = problem(path)
    if found:
        raise damaged(path, found)
    src = _readonly(path)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    except sqlite3.Error as exc:
        raise LedgerError(f"backing up the ledger {path} to {dest} failed: {exc}") from None
    finally:
        src.close()
    return dest


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


def _rows(src: sqlite3.Connection, table: str, cols: list[str], chunk: int = 500):
    """Yield ``(rows, lost)``: readable rows in rowid order, and how many rowids were skipped over bad pages."""
    select = f"SELECT rowid, {', '.join(cols)} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    last = -(2 ** 63)
    while True:
        try:
            rows = src.execute(select, (last, chunk)).fetchall()
        except sqlite3.DatabaseError:
            rows = None
        if rows:
            yield [r[1:] for r in rows], 0
            last = rows[-1][0]
            continue
        if rows is not None:
            return                                  # the end of the table
        # A chunk failed: read row by row up to the bad page, then find where reading works again.
        while True:
            try:
                row = src.execute(select, (last, 1)).fetchone()
            except sqlite3.DatabaseError:
                break
            if row is None:
                return
            yield [row[1:]], 0
            last = row[0]
        resume = _next_readable(src, table, last)
        if resume is None:
            yield [], 1                             # the rest is unreadable: at least one row lost
            return
        yield [], max(resume - last - 1, 1)
        last = resume - 1


def _readable(src, table: str, after: int) -> int | None:
    try:
        row = src.execute(f"SELECT rowid FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 1", (after,)).fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else -1


def _next_readable(src, table: str, last: int) -> int | None:
    """The first rowid after ``last`` that can be read past the bad page, or None."""
    step, hi = 1, None
    while last + step < 2 ** 63 - 1:
        if _readable(src, table, last + step) is not None:
            hi = last + step
            break
        step *= 2
    if hi is None:
        return None
    lo = last + step // 2 if step > 1 else last     # reading after lo fails (or lo is last)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _readable(src, table, mid) is None:
            lo = mid
        else:
            hi = mid
    first = _readable(src, table, hi)
    return None if first in (None, -1) else first


def salvage(path, dest) -> dict[str, dict[str, int]]:
    """Copy every readable row of the ledger at ``path`` into a new ledger at ``dest``.

    Returns ``{table: {"kept": n, "lost": m}}``; ``lost`` counts the rowids
    skipped over unreadable pages (exact for tables that were only appended
    to, a lower bound otherwise).
    """
    path, dest = Path(path), _fresh_dest(dest)
    if not path.exists() or path.stat().st_size == 0:
        raise LedgerError(f"the ledger {path} is missing or empty: there is nothing to salvage")
    with open(path, "rb") as f:
        if not f.read(16).startswith(MAGIC):
            raise damaged(path, "is not a SQLite database: there is nothing to salvage")
    _new_file(dest)
    report: dict[str, dict[str, int]] = {}
    src = _readonly(path, damaged_too=True)
    out = sqlite3.connect(dest, isolation_level=None)
    out.execute("PRAGMA synchronous = OFF")      # a new file: if this dies, salvage again
    try:
        for table in TABLES:
            try:
                have = set(_columns(src, table))
            except sqlite3.DatabaseError:
                have = set()
            if not have:                    # not in this (old or damaged) file: nothing to copy
                report[table] = {"kept": 0, "lost": 0}
                continue
            cols = [c for c in _columns(out, table) if c in have] or _columns(out, table)
            insert = f"INSERT OR IGNORE INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            kept = lost = 0
            out.execute("BEGIN")
            for rows, skipped in _rows(src, table, cols):
                lost += skipped
                kept += out.executemany(insert, rows).rowcount if rows else 0
            out.execute("COMMIT")
            report[table] = {"kept": kept, "lost": lost}
    finally:
        src.close()
        out.close()
    return report
