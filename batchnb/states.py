"""Task, job and node states, with the sets that end them.

The names and meanings follow Azure Batch, so a user who knows its portal
reads batchnb's views without a glossary.
"""

from __future__ import annotations

from enum import Enum


class _Described(str, Enum):
    def __new__(cls, value: str, doc: str):
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.__doc__ = doc
        return obj

    def __str__(self) -> str:
        return self.value


class TaskState(_Described):
    """The state of a task (Azure Batch's task states, plus ``blocked``)."""

    PENDING = ("pending", "Added; waits for its dependencies.")
    ACTIVE = ("active", "Ready to run; waits for a free slot (or a retry delay).")
    RUNNING = ("running", "An attempt runs on a node.")
    SUCCEEDED = ("succeeded", "Ended with exit code 0 (or a Python return).")
    FAILED = ("failed", "Ended without success after its retries.")
    BLOCKED = ("blocked", "A dependency failed with dependency action 'block'; never runs.")
    CANCELLED = ("cancelled", "The job was terminated or cancelled before it ended.")


class JobState(_Described):
    """The state of a job."""

    ACTIVE = ("active", "Accepts and dispatches tasks.")
    TERMINATING = ("terminating", "Being terminated; running tasks are being killed.")
    COMPLETED = ("completed", "Ended; see its reason.")


class ScheduleState(_Described):
    """The state of a job schedule (Azure's JobScheduleState words)."""

    ACTIVE = ("active", "Makes a job whenever a run comes due.")
    DISABLED = ("disabled", "Makes no job until enabled; runs due meanwhile are not made up.")
    COMPLETED = ("completed", "No run is left (past do_not_run_after, or its one run made) and its jobs ended.")
    DELETING = ("deleting", "Being deleted: its active jobs are being terminated.")


class ScheduleRunOutcome(_Described):
    """What became of one due run of a job schedule."""

    STARTED = ("started", "Its job was made.")
    SKIPPED = ("skipped", "Not started: past its start window, a newer run came due first, or no pool ran it then.")
    FAILED = ("failed", "Its job could not be made: the builder raised, or the job was refused.")


class NodeState(_Described):
    """The state of a compute node (Azure Batch's node states)."""

    STARTING = ("starting", "Requested; the worker is starting or runs its start task.")
    IDLE = ("idle", "Up and running no task.")
    RUNNING = ("running", "Up and running one or more tasks.")
    START_TASK_FAILED = ("start_task_failed", "Its start task failed; it gets no tasks.")
    UNUSABLE = ("unusable", "Too many consecutive failures not of the tasks' own making.")
    PREEMPTED = ("preempted", "A spot node taken back; its tasks were requeued.")
    LEAVING = ("leaving", "Being removed (scale down); gets no new tasks.")
    OFFLINE = ("offline", "Gone, or taken out of scheduling.")


class NodeGroup(_Described):
    """Which of a pool's two kinds of node a node is (Azure's dedicated and low-priority/spot)."""

    DEDICATED = ("dedicated", "Kept until the pool lets it go; billed at the dedicated price.")
    SPOT = ("spot", "Cheaper; Azure may take it back at any time (preemption).")


def group_of(name: str) -> str:
    """The node group an old name convention implies (``spot-*`` is spot; anything else dedicated).

    A fallback only, where nothing declares a group: ledger rows written before
    nodes carried their group (:mod:`batchnb.cost.replay`), requests made
    without one (a start task's), and the address backend's default for
    workers it was given no ``groups`` for. Everywhere else a node's group is
    what its backend declares (``Backend.group``); node names carry no meaning.

    >>> group_of("spot-3"), group_of("vm-7")
    ('spot', 'dedicated')
    """
    return NodeGroup.SPOT.value if str(name).startswith("spot") else NodeGroup.DEDICATED.value


class FailureCategory(_Described):
    """Why an attempt failed; the dispatcher maps each to retries, requeues and exit conditions."""

    EXIT_CODE = ("exit_code", "The command exited non-zero.")
    TIMEOUT = ("timeout", "Killed at its max_wall_clock.")
    PREPROCESSING = ("preprocessing", "An input could not be staged; the command never ran.")
    UPLOAD = ("upload", "An output could not be uploaded (Azure's file_upload_error).")
    PYTHON = ("python_exception", "A Python task raised.")
    CRASH = ("crash", "The runner itself failed: not the task's fault.")
    NODE_LOST = ("node_lost", "The node died under the attempt.")
    TERMINATED = ("terminated", "Killed by job.terminate(), a job's wall clock or its budget.")


#: Every task state in the order a view lists them: waiting, running, ended.
TASK_STATE_ORDER = (TaskState.PENDING, TaskState.ACTIVE, TaskState.RUNNING, TaskState.SUCCEEDED,
                    TaskState.FAILED, TaskState.BLOCKED, TaskState.CANCELLED)
TERMINAL_TASK_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.BLOCKED, TaskState.CANCELLED})
#: Tasks not yet ended: what a job still waits for.
LIVE_TASK_STATES = frozenset({TaskState.PENDING, TaskState.ACTIVE, TaskState.RUNNING})
#: Ended without success: a job that has any of these is not ``ok``.
UNSUCCESSFUL_TASK_STATES = frozenset({TaskState.FAILED, TaskState.BLOCKED, TaskState.CANCELLED})
#: Ended because of their own failure (or a dependency's): what a failure list shows.
FAILED_TASK_STATES = frozenset({TaskState.FAILED, TaskState.BLOCKED})
TERMINAL_JOB_STATES = frozenset({JobState.COMPLETED})
#: The node groups, dedicated first.
NODE_GROUPS = (NodeGroup.DEDICATED.value, NodeGroup.SPOT.value)
#: Failures that count against the node (batchnb.unusable-after). Not PREPROCESSING:
#: a missing input or a storage outage says nothing about the node.
NOT_TASK_FAULT = frozenset({FailureCategory.CRASH, FailureCategory.NODE_LOST})
#: Nodes that may be given tasks.
SCHEDULABLE_NODE_STATES = frozenset({NodeState.IDLE, NodeState.RUNNING})
#: Nodes that are paid for (counted by the cost meter).
BILLED_NODE_STATES = frozenset({NodeState.STARTING, NodeState.IDLE, NodeState.RUNNING,
                                NodeState.START_TASK_FAILED, NodeState.UNUSABLE, NodeState.LEAVING})
