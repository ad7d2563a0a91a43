"""Helpers shared by bench/peers.py and bench/million.py: timing, memory, the
machine's load, and the one-line-per-case format of CONVENTIONS.md
(``case: batchnb X, peer Y, ..., ratio R (target T)``)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path


def rate(n: int, fn) -> float:
    """Units per second of ``fn()`` doing ``n`` of them (one run; the benches take medians)."""
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def load() -> str:
    """The 1-minute load average: the machine is shared, so every figure carries it."""
    return f"load {os.getloadavg()[0]:.1f}"


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak RSS in MB: VmHWM, which exec resets (ru_maxrss survives exec, so a
    child started by a large parent would report the parent's peak)."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def ledger_mb(home: str | os.PathLike) -> tuple[float, float]:
    """(ledger file, its WAL) in MB under a BATCHNB_HOME."""
    db = Path(home) / "ledger.sqlite"
    size = lambda p: p.stat().st_size / 2**20 if p.exists() else 0.0  # noqa: E731
    return size(db), size(db.with_name(db.name + "-wal"))


def ratio(ours, base, target: float, name: str, lower_is_better: bool = False) -> str:
    if not all(isinstance(v, (int, float)) for v in (ours, base)):  # a peer not installed or failed
        return f"{name} n/a (target {'<=' if lower_is_better else '>='}{target:g}x)"
    r = ours / base
    met = r <= target if lower_is_better else r >= target
    return f"{name} {r:.2f}x (target {'<=' if lower_is_better else '>='}{target:g}x, {'met' if met else 'MISSED'})"


def round_ratio(ours: list, base: list, target: float, name: str) -> str:
    """The median of the per-round ratios ``ours[r] / base[r]`` (rounds where both ran), each shown."""
    each = [o / b for o, b in zip(ours, base) if isinstance(o, (int, float)) and isinstance(b, (int, float)) and b]
    if not each:
        return f"{name} n/a (target >={target:g}x)"
    r = statistics.median(each)
    return (f"{name} {r:.2f}x (target >={target:g}x, {'met' if r >= target else 'MISSED'}; "
            f"rounds {' '.join(f'{x:.2f}' for x in each)})")


def case_line(case: str, figures: dict[str, float | str | None], unit: str, ratios: list[str]) -> str:
    """A figure is a number, None (not installed) or a string saying why there is none."""
    def shown1(v):
        return "not installed" if v is None else v if isinstance(v, str) else f"{v:,.0f} {unit}"
    shown = ", ".join(f"{k} {shown1(v)}" for k, v in figures.items())
    return f"{case}: {shown}; {'; '.join(ratios)}; {load()}"
