"""Slurm through dask-jobqueue: ``bnb.Pool("hpc", backend="slurm", dedicated=2, walltime="1h", memory="1GB")``.

A node is one Slurm batch job running one Dask worker, named by its node id
(job name ``bnb-<pool>-<node id>`` in ``squeue``); the pool's scheduler runs
in the driver, as dask-jobqueue's ``SLURMCluster`` does. Every node is
dedicated: a batch job is not taken back the way a spot VM is. ``dedicated``,
``pool.resize``, autoscale formulas and Python policies submit and cancel
jobs (``sbatch``/``scancel``).

**Walltime is a planned node loss.** Slurm ends a job at its walltime, so a
node's worker ends its life ``lifetime`` after it joined (by default a little
before the walltime): the scheduler retires it, its running tasks are
requeued (not retried), and, while the pool's target still wants the node, a
new job takes its place under a new node id.

Options (keyword arguments of ``bnb.Pool``): ``queue`` (``#SBATCH -p``),
``account`` (``-A``), ``walltime`` (``"1h"`` or Slurm's ``"01:00:00"``,
``"2-00:00:00"``), ``lifetime`` (how long a worker stays; default: the
walltime less a margin), ``cores`` (CPUs a job asks for; default: the task
slots), ``memory`` (per job, e.g. ``"4GB"``; required), ``job_extra_directives``
(more ``#SBATCH`` lines, e.g. ``["--qos=debug"]``), ``job_script_prologue``
(shell lines run before the worker, e.g. ``["module load python"]``),
``worker_extra_args``, ``host`` and ``interface`` (where the scheduler
listens: it must be reachable from the compute nodes), ``log_directory``
(the jobs' output files; default ``<batchnb home>/slurm/<pool>``),
``local_directory``, ``python``, ``nanny``, ``death_timeout`` and
``security``: by default the scheduler and workers talk TLS with a temporary
certificate (distributed's ``Security.temporary()``; the workers' copy is
written, readable by its owner only, into the log directory, which the
compute nodes must see); a ``Security`` of your own, or False for plain TCP.

>>> from batchnb.spec import PoolSpec
>>> b = SlurmBackend(PoolSpec("hpc", backend="slurm", dedicated=2), queue="debug", walltime="1h", memory="1GB")
>>> b.walltime, b.lifetime
('01:00:00', 3420.0)
>>> print("\\n".join(b.job_script("dedicated-0").splitlines()[2:10]))
#SBATCH -J bnb-hpc-dedicated-0
#SBATCH -e ...
#SBATCH -o ...
#SBATCH -p debug
#SBATCH -n 1
#SBATCH --cpus-per-task=1
#SBATCH --mem=954M
#SBATCH -t 01:00:00
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from datetime import timedelta

from .. import _config
from ..errors import BackendError, SpecError
from ..spec.validate import duration
from ..states import NodeGroup
from .base import SpecClusterBackend

log = logging.getLogger("batchnb.backends.slurm")

# Slurm's own time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds (sbatch --time).
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_seconds(value, field: str = "walltime") -> float:
    """Seconds from a walltime: Slurm's ``"01:30:00"``, ``"2-00:00:00"`` or batchnb's ``"90m"``.

    A bare number is refused: Slurm reads it as minutes, batchnb as seconds.

    >>> slurm_seconds("01:30:00"), slurm_seconds("2-12"), slurm_seconds("45"), slurm_seconds("90m")
    (5400.0, 216000.0, 2700.0, 5400.0)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise SpecError(field, value, "give a duration with its unit ('1h', '30m') or Slurm's '01:00:00': "
                                      "a bare number is minutes to Slurm and seconds to batchnb")
    match = _SLURM_TIME.match(value.strip()) if isinstance(value, str) else None
    if match:
        days, first, second, third = (int(g) if g is not None else None for g in match.groups())
        if days is not None:       # days-hours[:minutes[:seconds]]
            seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
        elif third is not None:    # hours:minutes:seconds
            seconds = first * 3600 + second * 60 + third
        else:                      # minutes[:seconds]
            seconds = first * 60 + (second or 0)
    else:
        seconds = duration(value, field, allow_none=False)
    if seconds <= 0:
        raise SpecError(field, value, "a walltime must be longer than zero")
    return float(seconds)


def slurm_time(seconds: float) -> str:
    """``sbatch --time`` for ``seconds`` (whole seconds, rounded up).

    >>> slurm_time(3600), slurm_time(90061)
    ('01:00:00', '1-01:01:01')
    """
    days, rest = divmod(int(-(-seconds // 1)), 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def default_lifetime(walltime: float) -> float:
    """How long a worker stays in a job of ``walltime`` seconds: long enough to be worth its
    queue wait, short enough to leave before Slurm kills it (5 %, at least a minute, at most
    ten, never more than a quarter of the walltime).

    >>> default_lifetime(3600), default_lifetime(60), default_lifetime(86400)
    (3420.0, 45.0, 85800.0)
    """
    return walltime - min(max(60.0, walltime * 0.05), 600.0, walltime / 4)


def _words(value, field: str) -> list[str]:
    """A list of strings that go into the job script, one line each: no line breaks."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise SpecError(field, value, "expected a list of strings, e.g. ['--qos=debug']")
    for item in value:
        if not isinstance(item, str) or "\n" in item or "\r" in item:
            raise SpecError(field, item, "each entry must be a string of one line")
    return list(value)


def _name(value, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise SpecError(field, value, "expected a Slurm name (no spaces), or None for the cluster's default")
    return value


class SlurmBackend(SpecClusterBackend):
    """Nodes as Slurm batch jobs (see the module's docstring for the options)."""

    name = "slurm"
    can_scale = True
    can_preempt = False
    preemptible_groups: tuple[str, ...] = ()

    def __init__(self, spec, *, queue: str | None = None, account: str | None = None,
                 walltime: str | timedelta = "1h", lifetime: str | float | timedelta | None = None,
                 cores: int | None = None, memory: str | int | None = None,
                 job_extra_directives: Sequence[str] = (), job_script_prologue: Sequence[str] = (),
                 worker_extra_args: Sequence[str] = (), host: str | None = None, interface: str | None = None,
                 log_directory: str | None = None, local_directory: str | None = None, python: str | None = None,
                 nanny: bool = True, death_timeout: float = 60.0, security=True, **options):
        super().__init__(spec, **options)
        if options:
            name = sorted(options)[0]
            raise SpecError(name, "<hidden>", "not an option of the slurm backend; see batchnb.backends.slurm")
        if spec.spot:
            raise SpecError("spot", spec.spot, "a Slurm pool's nodes are batch jobs, all dedicated: use dedicated=")
        self.queue, self.account = _name(queue, "queue"), _name(account, "account")
        self.walltime_seconds = slurm_seconds(walltime)
        self.walltime = slurm_time(self.walltime_seconds)
        self.lifetime = default_lifetime(self.walltime_seconds) if lifetime is None else duration(lifetime, "lifetime")
        if not 0 < self.lifetime < self.walltime_seconds:
            raise SpecError("lifetime", lifetime, f"a worker must leave before its job's walltime ({self.walltime})")
        slots = spec.task_slots_per_node
        if cores is None:
            cores = slots
        if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
            raise SpecError("cores", cores, "expected a whole number of CPUs per job, at least 1")
        if memory is None:
            raise SpecError("memory", memory, "say how much memory each node's job asks for, e.g. memory='4GB'")
        from dask.utils import parse_bytes
        try:
            mem_bytes = parse_bytes(memory)
        except (ValueError, TypeError):
            raise SpecError("memory", memory, "expected an amount such as '4GB' or '512MiB'") from None
        if mem_bytes < 2**20:
            raise SpecError("memory", memory, "Slurm needs at least a megabyte per job")
        for field, value in (("host", host), ("interface", interface), ("python", python)):
            if value is not None and (not isinstance(value, str) or not value):
                raise SpecError(field, value, "expected a non-empty string")
        from distributed.security import Security
        if not (isinstance(security, (bool, Security)) or security is None):
            raise SpecError("security", security, "expected True (temporary TLS certificates), a "
                                                   "distributed.security.Security, or False for plain TCP")
        self.security = security or None
        self.host = host
        self.log_directory = log_directory
        self.job_kwargs = dict(
            cores=slots, job_cpu=cores, memory=memory, processes=1, queue=self.queue, account=self.account,
            walltime=self.walltime, nanny=bool(nanny), death_timeout=death_timeout,
            # dask-jobqueue writes "#SBATCH " before each; one already there would be doubled
            job_extra_directives=[re.sub(r"^#SBATCH\s+", "", d) for d in
                                  _words(job_extra_directives, "job_extra_directives")],
            job_script_prologue=_words(job_script_prologue, "job_script_prologue"),
            worker_extra_args=["--resources", f"slots={slots}", *_words(worker_extra_args, "worker_extra_args")],
            local_directory=local_directory, python=python, interface=interface)
        self._ended: dict[str, str] = {}        # node id -> why its worker was retired (its walltime)
        self._joined: dict[str, str] = {}       # worker address -> node id
        self._first_joined: dict[str, float] = {}   # node id -> when its job's first worker joined (loop time)

    # -- what a job is -----------------------------------------------------------------
    def _log_directory(self) -> str:
        if self.log_directory is None:
            self.log_directory = str(_config.home() / "slurm" / self.spec.name)
        os.makedirs(self.log_directory, mode=0o700, exist_ok=True)
        return self.log_directory

    def _job_options(self, node_id: str) -> dict:
        return {**self.job_kwargs, "name": node_id, "job_name": f"bnb-{self.spec.name}-{node_id}",
                "log_directory": self._log_directory()}

    def job_script(self, node_id: str, scheduler: str = "tcp://<scheduler>:8786") -> str:
        """The batch script of node ``node_id`` (what ``sbatch`` is given)."""
        from dask_jobqueue.slurm import SLURMJob
        return SLURMJob(scheduler, **self._job_options(node_id)).job_script()

    def _worker_spec(self, group: str, node_id: str) -> dict:
        if group != NodeGroup.DEDICATED.value:
            raise BackendError(f"a Slurm pool has dedicated nodes only, not {group!r} ones")
        # The cluster's own job options carry its workers' TLS files and protocol.
        options = {**self.cluster.new_spec["options"], **self._job_options(node_id)}
        for key in ("security", "protocol"):
            options[key] = self.cluster.new_spec["options"].get(key)
        return {"cls": self.cluster.job_cls, "options": options}

    # -- starting and scaling -------------------------------------------------------------
    def start(self):
        from dask_jobqueue import SLURMCluster
        from distributed import Client
        if shutil.which("sbatch") is None:
            raise BackendError("the slurm backend needs Slurm's sbatch, squeue and scancel on PATH "
                               "(run the notebook where jobs can be submitted)")
        scheduler = {"dashboard_address": ":0", **({"host": self.host} if self.host else {})}
        kwargs = {k: v for k, v in self._job_options("dedicated-0").items() if k not in ("name", "job_name")}
        try:
            # The workers' temporary certificate and key go to files beside the jobs' logs (readable
            # by their owner only), which the compute nodes see as the logs' folder.
            self.cluster = SLURMCluster(n_workers=0, scheduler_options=scheduler, silence_logs=logging.ERROR,
                                        name=f"batchnb-{self.spec.name}", security=self.security,
                                        shared_temp_directory=self._log_directory(), **kwargs)
        except (ValueError, TypeError, OSError) as exc:
            raise BackendError(f"cannot start the Slurm pool's scheduler: {exc}") from None
        client = Client(self.cluster, security=self.cluster.security, set_as_default=False)
        try:
            self.cluster.sync(self._watch_workers)
            count = self.spec.dedicated if self.spec.dedicated is not None else 0 if self.spec.autoscale else 1
            for _ in range(count):
                self._add(NodeGroup.DEDICATED.value)
            self._apply(wait=True)
        except Exception as exc:
            from distributed.core import Status
            with self._lock:        # jobs sbatch refused never started: nothing of theirs to close
                self.cluster.worker_spec.clear()
                for node_id, job in list(self.cluster.workers.items()):
                    if job.status == Status.created:
                        del self.cluster.workers[node_id]
            client.close()
            self.close()
            why = _first_error(exc)
            for field, value, word in (("queue", self.queue, "partition"), ("account", self.account, "account")):
                if value is not None and word in why.lower():
                    raise SpecError(field, value, f"Slurm refused it: {why}") from None
            raise BackendError(f"the Slurm pool could not submit its jobs: {why}") from None
        return client

    def scale(self, group: str, count: int) -> list[str]:
        if group != NodeGroup.DEDICATED.value and count > 0:
            raise BackendError(f"a Slurm pool has dedicated nodes only; it cannot have {count} {group} node(s)")
        return super().scale(group, count)

    # -- walltime: a planned node loss ----------------------------------------------------
    async def _watch_workers(self) -> None:
        from distributed.diagnostics.plugin import SchedulerPlugin

        backend = self

        class Lifetimes(SchedulerPlugin):
            """Retires each node's worker when its lifetime is up; replaces the node when it left so."""

            name = "batchnb-slurm-lifetimes"

            def add_worker(self, scheduler, worker):
                ws = scheduler.workers.get(worker)
                if ws is not None:
                    loop = asyncio.get_running_loop()
                    backend._joined[worker] = node_id = str(ws.name)
                    # The walltime runs from the job's start: a worker its nanny restarted in the
                    # same job keeps the first one's deadline.
                    first = backend._first_joined.setdefault(node_id, loop.time())
                    loop.call_later(max(0.0, first + backend.lifetime - loop.time()), backend._expire, scheduler,
                                    worker)

            def remove_worker(self, scheduler, worker, **kwargs):
                backend._left(worker)

        self.cluster.scheduler.add_plugin(Lifetimes())

    def _expire(self, scheduler, address: str) -> None:
        node_id = self._joined.get(address)
        if node_id is None or address not in scheduler.workers:
            return
        self._ended[node_id] = (f"its Slurm job reached the end of its walltime ({self.walltime}): the worker "
                                f"left after its lifetime of {self.lifetime:g}s")
        asyncio.ensure_future(self._retire(scheduler, address))

    async def _retire(self, scheduler, address: str) -> None:
        stimulus = f"batchnb-walltime-{time.time()}"
        try:
            await scheduler.retire_workers(workers=[address], close_workers=True, remove=True, stimulus_id=stimulus)
        finally:
            if address in scheduler.workers:      # retirement aborted: its data had nowhere to go
                await scheduler.remove_worker(address, stimulus_id=stimulus, expected=True, close=True)

    def _left(self, address: str) -> None:
        node_id = self._joined.pop(address, None)
        if node_id is not None and node_id in self._ended and node_id in self.requested():
            new = self.replace(node_id)
            log.info("slurm node %s reached its lifetime; %s takes its place", node_id, new)

    def planned_loss(self, node_id: str) -> str | None:
        return self._ended.get(node_id)

    def job_ids(self) -> dict[str, str]:
        """Node id -> Slurm job id of the jobs submitted for the nodes asked for now."""
        workers = dict(self.cluster.workers) if self.cluster is not None else {}
        return {n: str(w.job_id) for n, w in workers.items() if n in self.requested() and w.job_id}

    def close(self) -> None:
        if self.cluster is None:
            return
        try:
            self.cluster.close(timeout=30)      # scancels every job it submitted
        except Exception:  # noqa: BLE001 - closing must not hide why the pool ends (a timeout, a refused job)
            log.warning("batchnb: the Slurm pool did not close cleanly; its jobs: %s",
                        ", ".join(self.job_ids().values()) or "none", exc_info=True)

def _first_error(exc: BaseException) -> str:
    """sbatch's own complaint (dask-jobqueue wraps it in a long RuntimeError)."""
    text = str(exc)
    errors = [line.strip() for line in text.splitlines() if "error" in line.lower() and "sbatch" in line.lower()]
    return errors[0] if errors else text.strip().splitlines()[0] if text.strip() else type(exc).__name__
