"""A million-task ``job.map`` on a local pool (issue 17, point 1).

Prints the driver's peak RSS, the ledger's size (and its WAL), and the wall
time for adding the tasks and for completing them; targets: RSS < 1 GB,
ledger < 1 GB, adding < 60 s. The driver runs in a child process in its own
session, so ``--limit-seconds`` can stop it cleanly at any point (even inside
``job.map``) by ending that session, then say how far it got: the phase, the
task counts last read from the ledger's counters, and the figures so far.

``--kind commands`` adds ``n`` command tasks (``/bin/true``) from a generator of
TaskSpecs through ``job.add_tasks`` instead of a ``job.map``; ``--kind sweep`` adds them
as one command template over ``range(n)`` (``job.sweep``, one array spec).
``--detached`` runs the pool's engine in its agent process (``detached=True``) and
reports the agent's peak RSS beside the driver's.

Usage: ``python bench/million.py [--n N] [--kind map|commands|sweep] [--detached] [--limit-seconds S]
[--nodes K] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time


from _peers import ledger_mb, load, peak_rss_mb


def noop(x):
    return x


def driver(n: int, nodes: int, kind: str = "map", detached: bool = False) -> None:
    """The child: maps n tasks, waits, and prints a JSON progress line every second."""
    import batchnb as bnb
    state = {"phase": "starting pool", "counts": {}, "add_s": None, "run_s": None}
    t0 = time.perf_counter()
    job = None

    ended = threading.Event()

    def report():
        while not ended.is_set():     # the last line is the final one: no read racing the pool's close
            if job is not None:
                try:
                    state["counts"] = {k: v for k, v in job.counts().items() if v}
                except Exception as e:  # a read racing the pool's close is not a figure
                    state["counts"] = {"unreadable": repr(e)}
            if not ended.is_set():
                print(json.dumps({**state, "t": time.perf_counter() - t0}), flush=True)
            time.sleep(1.0)

    threading.Thread(target=report, daemon=True).start()
    with bnb.Pool("million", dedicated=nodes, detached=detached) as pool:
        if detached:      # the parent samples the agent's memory too
            state["agent_pid"] = next((p["pid"] for p in bnb.pools() if p["name"] == "million"), None)
        job = pool.job("million")
        state["phase"] = "adding"
        t1 = time.perf_counter()
        if kind == "map":
            job.map(noop, range(n))
        elif kind == "sweep":     # one array spec: a template over an index
            job.sweep("/bin/true {0}", range(n), id="c{0}")
        else:       # a generator: read in chunks, never held whole
            job.add_tasks(bnb.TaskSpec(f"c{i}", "/bin/true") for i in range(n))
        state["add_s"] = time.perf_counter() - t1
        state["phase"] = "running"
        t2 = time.perf_counter()
        result = job.wait(quiet=True)
        state["run_s"] = time.perf_counter() - t2
        state["phase"] = "done" if result.ok else f"ended: {result.counts}"
        state["counts"] = {k: v for k, v in job.counts().items() if v}
        ended.set()
    print(json.dumps({**state, "t": time.perf_counter() - t0}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--limit-seconds", type=float, default=None)
    ap.add_argument("--nodes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--kind", choices=("map", "commands", "sweep"), default="map")
    ap.add_argument("--detached", action="store_true", help="the pool's engine runs in its agent process")
    ap.add_argument("--keep", action="store_true", help="keep the pool's home (its ledger) afterwards")
    ap.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        return driver(args.n, args.nodes, args.kind, args.detached)
    home = tempfile.mkdtemp(prefix="batchnb-million-")
    print(f"# n={args.n:,}, local pool of {args.nodes} nodes x 1 slot, home {home}; {load()} at start", flush=True)
    proc = subprocess.Popen([sys.executable, __file__, "--driver", "--n", str(args.n), "--nodes", str(args.nodes),
                             "--kind", args.kind, *(["--detached"] if args.detached else [])],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "BATCHNB_HOME": home},
                            start_new_session=True)
    last: dict = {}
    peak = {"rss": 0.0, "ledger": 0.0, "wal": 0.0, "agent": None}

    def sample():
        while proc.poll() is None:
            try:
                peak["rss"] = peak_rss_mb(proc.pid)
            except (OSError, RuntimeError):  # it has just ended
                return
            if last.get("agent_pid"):
                try:
                    peak["agent"] = peak_rss_mb(last["agent_pid"])
                except (OSError, RuntimeError):  # the agent has just ended: its last figure stands
                    pass
            db, wal = ledger_mb(home)
            peak["ledger"], peak["wal"] = max(peak["ledger"], db), max(peak["wal"], wal)
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    timer = None
    stopped = threading.Event()
    if args.limit_seconds:
        def stop():
            stopped.set()
            os.killpg(proc.pid, signal.SIGTERM)     # the driver and the pool's workers: its session
            if last.get("agent_pid"):               # a detached pool's agent runs in a session of its own
                try:
                    os.killpg(os.getpgid(last["agent_pid"]), signal.SIGTERM)
                except OSError:
                    pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        timer = threading.Timer(args.limit_seconds, stop)
        timer.start()
    for raw in proc.stdout:
        try:
            last = json.loads(raw)
        except ValueError:
            continue
    proc.wait()
    if timer:
        timer.cancel()
    db, wal = ledger_mb(home)

    def secs(v):
        return "-" if v is None else f"{v:,.1f} s"

    how = f"stopped at the {args.limit_seconds:g} s limit" if stopped.is_set() else f"exit {proc.returncode}"
    print(f"million {args.kind} (n={args.n:,}): {how}, phase {last.get('phase')!r} at {last.get('t', 0):,.1f} s, "
          f"counts {last.get('counts')}; add {secs(last.get('add_s'))} (target < 60 s), "
          f"complete {secs(last.get('run_s'))}; driver peak RSS {peak['rss']:,.0f} MB (target < 1024)"
          + (f", agent peak RSS {peak['agent']:,.0f} MB (target < 1024)" if peak["agent"] is not None else "")
          + "; "
          f"ledger {db:,.0f} MB + WAL {wal:,.0f} MB now, peak {peak['ledger']:,.0f} + {peak['wal']:,.0f} MB "
          f"(target < 1024); {load()}", flush=True)
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)     # a million-task ledger is most of a GB


if __name__ == "__main__":
    sys.exit(main())
