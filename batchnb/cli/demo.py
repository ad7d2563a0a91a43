"""``batchnb demo``: a real job on the embedded local pool.

50 command-line tasks and 50 Python tasks estimate pi by Monte Carlo, a
dependent reduce task combines the Python chunks, a deliberately flaky
task succeeds on its third attempt, and a final check task depends on
everything. Progress is drawn as it runs; a summary is printed at the end.
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time

SAMPLES = 200_000
CHUNKS = 50

# A command task: its own Monte Carlo chunk, printing "hits samples".
MC_COMMAND = (
    "{python} -c \"import random,os; r=random.Random(int(os.environ['SEED'])); n={n}; "
    "print(sum(r.random()**2 + r.random()**2 <= 1 for _ in range(n)), n)\""
)
# Fails on its first two attempts, succeeds on the third (a counter file outlives attempts).
FLAKY_COMMAND = 'n=$(cat "$COUNTER" 2>/dev/null || echo 0); echo $((n+1)) > "$COUNTER"; ' \
                'echo "attempt $((n+1))"; [ "$n" -ge 2 ] || { echo "failing on purpose" >&2; exit 1; }'


def monte_carlo(seed: int, n: int = SAMPLES) -> tuple[int, int]:
    """Hits inside the quarter circle out of ``n`` random points."""
    rng = random.Random(seed)
    return sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(n)), n


def combine(parts: list) -> float:
    hits = sum(h for h, _ in parts)
    total = sum(n for _, n in parts)
    return 4.0 * hits / total


def run(dedicated: int | None = None, quiet: bool = False, job_id: str | None = None) -> int:
    import batchnb as bnb
    work = tempfile.mkdtemp(prefix="batchnb-demo-")
    job_id = job_id or time.strftime("demo-%Y%m%d-%H%M%S")
    t0 = time.time()
    # A vm_size on a local pool prices the work as if it ran on that size in Azure.
    with bnb.Pool("demo", dedicated=dedicated, vm_size="Standard_D2s_v5") as pool:
        print(f"pool 'demo': {len(pool.nodes())} local nodes ({os.cpu_count()} cores); job {job_id}")
        job = pool.job(job_id, max_task_retries=0)
        cmd_tasks = [bnb.TaskSpec(f"cmd-{i}", MC_COMMAND.format(python=sys.executable, n=SAMPLES // 4),
                                  env={"SEED": str(1000 + i)}) for i in range(CHUNKS)]
        job.add_tasks(cmd_tasks)
        parts = job.map(monte_carlo, range(CHUNKS), task_prefix="py-")
        pi = job.submit(combine, parts, task_id="reduce")
        flaky = job.add_task("flaky", FLAKY_COMMAND, env={"COUNTER": os.path.join(work, "flaky-count")},
                             retry=bnb.Retry(max=3, delay="0.2s"))
        job.add_task("check", "echo all parts done", depends_on=[pi, flaky])
        result = job.wait(quiet=quiet)
        cmd_hits = cmd_n = 0
        for i in range(CHUNKS):
            hits, n = job.task(f"cmd-{i}").stdout().split()
            cmd_hits, cmd_n = cmd_hits + int(hits), cmd_n + int(n)
        estimate = pi.result()
        if quiet:  # otherwise the progress display has printed the summary already
            print(result)
        print(f"pi from {CHUNKS} Python tasks: {estimate:.5f} (error {abs(estimate - math.pi):.5f})")
        print(f"pi from {CHUNKS} command tasks: {4 * cmd_hits / cmd_n:.5f}")
        print(f"flaky task: {len(flaky.attempts)} attempts, final state {flaky.state.value}")
        print(f"wall time {time.time() - t0:.1f}s; ledger {pool.ledger.path}")
        return 0 if result.ok else 1
