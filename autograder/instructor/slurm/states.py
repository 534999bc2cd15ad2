"""Where each task of a Slurm job stands, from ``squeue``, ``sacct`` and the task's own files.

``squeue --states=all`` lists pending and running tasks, and finished ones for a few minutes
(``MinJobAge``); ``sacct`` knows finished tasks for longer, but only where the cluster keeps
accounting (a test cluster without slurmdbd has none: it then fails and is skipped).  submitit's
result file settles it when present: a task that returned wrote it, a task that raised wrote the
error.  When neither command knows a task any more, its stderr log still tells a cancellation or
a timeout (``*** JOB 42 ON node CANCELLED AT ... DUE TO TIME LIMIT ***``).

A finished task either succeeded or failed with a reason a person can act on (:func:`failure_reason`).

Example
-------
>>> parse_squeue("12_0|RUNNING|None\\n12_1|PENDING|JobArrayTaskLimit\\n")
{'12_0': ('RUNNING', 'None'), '12_1': ('PENDING', 'JobArrayTaskLimit')}
>>> state_from_log("slurmstepd: error: *** JOB 14 ON vm CANCELLED AT 2024-10-01T10:00:00 DUE TO TIME LIMIT ***")
'TIMEOUT'
>>> failure_reason("OUT_OF_MEMORY", minutes=30)
'out of memory: raise --mem'
"""
from __future__ import annotations

import re
import subprocess

# Slurm states in which a task may still produce its result.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
          "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT", "PREEMPTED"}
_LOG_END = re.compile(r"\*\*\* (?:JOB|STEP) [\d._]+ ON \S+ CANCELLED AT \S+( DUE TO TIME LIMIT| DUE TO PREEMPTION)?")


def _run(argv: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def parse_squeue(text: str) -> dict[str, tuple[str, str]]:
    """``{task id: (state, reason)}`` from ``squeue -o %i|%T|%r`` lines."""
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            states[parts[0]] = (parts[1].upper(), parts[2] if len(parts) > 2 else "")
    return states


def squeue_states(job_id: str) -> dict[str, tuple[str, str]]:
    """The tasks of ``job_id`` that the controller still knows (raises RuntimeError if squeue fails)."""
    try:
        done = _run(["squeue", "--states=all", "--array", "--noheader", "--jobs", job_id, "--format=%i|%T|%r"])
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"squeue failed: {err}") from None
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # the controller has forgotten the whole job
            return {}
        raise RuntimeError(f"squeue failed: {done.stderr.strip() or done.returncode}")
    return parse_squeue(done.stdout)


def sacct_states(job_id: str) -> dict[str, tuple[str, str]]:
    """``{task id: (state, exit code)}`` from accounting; {} where the cluster keeps none."""
    try:
        done = _run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job_id,
                     "--format=JobID,State,ExitCode"])
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if done.returncode != 0:
        return {}
    states = {}
    for line in done.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 3:
            # "CANCELLED by 0" -> CANCELLED
            states[parts[0]] = (parts[1].split()[0].upper() if parts[1] else "UNKNOWN", parts[2])
    return states


def state_from_log(text: str | None) -> str | None:
    """CANCELLED, TIMEOUT or PREEMPTED when slurmstepd wrote so into the task's log."""
    matches = list(_LOG_END.finditer(text or ""))
    if not matches:
        return None
    last = matches[-1].group(1) or ""  # the latest run of a requeued task
    return {" DUE TO TIME LIMIT": "TIMEOUT", " DUE TO PREEMPTION": "PREEMPTED"}.get(last, "CANCELLED")


def failure_reason(state: str, *, minutes: int | None = None, detail: str = "") -> str:
    """What happened to a task that left no result, in words that say what to change."""
    limit = f" of {minutes} min" if minutes else ""
    reasons = {
        "TIMEOUT": f"hit its time limit{limit}: raise --time or lower --per-task",
        "OUT_OF_MEMORY": "out of memory: raise --mem",
        "CANCELLED": "cancelled (scancel, or by an administrator)",
        "NODE_FAIL": "its node failed",
        "BOOT_FAIL": "its node failed to boot",
        "PREEMPTED": "preempted by a higher-priority job",
        "DEADLINE": "reached its deadline",
        "FAILED": "exited with an error",
        "COMPLETED": "ended without writing its result",
        "VANISHED": "ended without a result, and Slurm no longer says how (this cluster keeps no accounting)",
    }
    text = reasons.get(state, f"ended in state {state} without a result")
    return f"{text}; {detail}" if detail else text
