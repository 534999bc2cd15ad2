"""Run a callable over shards as one Slurm job array (submitit), watch it, collect what came back.

This is the seam every ``--slurm`` command uses: :func:`run_on_slurm` submits ``fn(shard)`` for
each shard as one array task (or, with one shard, one job), prints the job id, shows a progress
bar from the tasks' Slurm states, and returns one :class:`TaskOutcome` per shard: the value ``fn``
returned, or why the task failed ("cancelled", "hit its time limit of 45 min: raise --time ...").
Interrupting it (Ctrl-C) leaves the jobs running and says how to collect them (the command exits
130 as for any interrupt); :func:`run_on_slurm` with ``resume=JOBID`` attaches to them again.  Each submission leaves ``FOLDER/job_<id>.json`` (the tasks, what each
shard holds, whether it was collected) beside submitit's pickles and the tasks' logs
(``FOLDER/<id>_<task>_0_log.{out,err}``).

The callable and shards are pickled by submitit (cloudpickle) and run by the same Python on the
nodes, so every path must be on a filesystem the nodes share (on Great Lakes: home, /scratch, /nfs).

Example
-------
>>> outcome = TaskOutcome(index=2, job_id="77_2", ok=False, reason="cancelled (scancel, or by an administrator)")
>>> outcome.failure
'Slurm task 2 failed (cancelled (scancel, or by an administrator))'
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import pathlib
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from autograder.atomic import private_dir, write_atomically
from autograder.errors import NotegradeError
from autograder.instructor.slurm import states
from autograder.instructor.slurm.options import SlurmOptions

RESULT_GRACE_S = 20.0  # a shared filesystem may show a finished task's result file a little late


@dataclass
class TaskOutcome:
    """One array task: ``value`` is what ``fn`` returned when ``ok``, else ``reason`` says why not."""

    index: int
    job_id: str
    ok: bool
    value: Any = None
    reason: str = ""
    log: str = ""

    @property
    def failure(self) -> str:
        return f"Slurm task {self.index} failed ({self.reason})"


@dataclass
class ArrayRun:
    """A submitted job (array): what ``job_<id>.json`` in ``folder`` records."""

    job_id: str
    folder: pathlib.Path
    tasks: list[str]  # submitit's job id per task: "<id>_<i>", or "<id>" for a single job
    minutes: int
    job_name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    submitted: str = ""
    collected: bool = False
    announcement: str = field(default="", repr=False)  # "submitted Slurm job ...", printed by collect (not saved)

    @property
    def manifest(self) -> pathlib.Path:
        return self.folder / f"job_{self.job_id}.json"

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k not in ("folder", "announcement")}
        write_atomically(self.manifest, json.dumps(data, indent=1) + "\n", fsync=False)

    @classmethod
    def load(cls, folder: pathlib.Path, job_id: str) -> "ArrayRun":
        path = pathlib.Path(folder) / f"job_{job_id}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            known = ", ".join(sorted(p.stem[4:] for p in pathlib.Path(folder).glob("job_*.json"))) or "none"
            raise NotegradeError(f"no Slurm job {job_id} was submitted from {folder} (jobs there: {known}); "
                                 "--resume takes the job id printed at submission, with the same --out") from None
        except (OSError, json.JSONDecodeError) as err:
            raise NotegradeError(f"{path}: unreadable ({err})") from None
        return cls(folder=pathlib.Path(folder), **data)


def _executor(folder: pathlib.Path, options: SlurmOptions, params: dict[str, Any]):
    try:
        import submitit
    except ImportError:
        raise NotegradeError("--slurm needs submitit (pip install submitit)") from None
    try:
        executor = submitit.SlurmExecutor(folder=folder, python=options.python, max_num_timeout=0)
    except RuntimeError as err:  # no srun on PATH
        raise NotegradeError(f"--slurm needs Slurm's commands (sbatch, squeue, srun) here ({err}): run notegrade "
                             "on a login node of the cluster") from None
    try:
        executor.update_parameters(**params)
    except ValueError as err:
        raise NotegradeError(f"invalid Slurm options: {err}") from None
    return executor


def submit(fn: Callable[[Any], Any], shards: Sequence[Any], *, options: SlurmOptions, folder: pathlib.Path,
           job_name: str, default_minutes: int, meta: dict[str, Any] | None = None) -> ArrayRun:
    """Submit ``fn(shard)`` per shard; return the run (its manifest is saved).

    The line announcing the job id is ``run.announcement``: :func:`collect` prints it once Ctrl-C
    is covered, so nobody sees a job id without being told how to collect the job."""
    from submitit.core.utils import FailedJobError

    if not shards:
        raise NotegradeError("nothing to submit to Slurm")
    folder = pathlib.Path(folder).resolve()
    private_dir(folder)  # pickled shards name students' folders; their results come back here
    params = options.executor_parameters(job_name=job_name, default_minutes=default_minutes)
    executor = _executor(folder, options, params)
    try:
        jobs = executor.map_array(fn, list(shards))
    except FailedJobError as err:
        raise NotegradeError(f"sbatch refused the job: {str(err).strip() or 'no reason given'}") from None
    job_id = jobs[0].job_id.split("_")[0]
    run = ArrayRun(job_id=job_id, folder=folder, tasks=[job.job_id for job in jobs], minutes=params["time"],
                   job_name=job_name, meta=meta or {}, submitted=dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    run.save()
    where = f"{len(jobs)} array tasks" if len(jobs) > 1 else "one job"
    at_once = f", at most {options.array_parallelism} at once" if options.array_parallelism and len(jobs) > 1 else ""
    run.announcement = (f"submitted Slurm job {job_id} ({where}{at_once}, {params['time']} min each"
                        f"{', partition ' + options.partition if options.partition else ''}); "
                        f"follow it with `squeue -j {job_id}`, logs in {folder}")
    return run


def unfinished_runs(folder: pathlib.Path) -> list[ArrayRun]:
    """Runs submitted from ``folder`` that were never collected, oldest first."""
    runs = []
    for path in sorted(pathlib.Path(folder).glob("job_*.json"), key=lambda p: p.stat().st_mtime):
        try:
            run = ArrayRun.load(folder, path.stem[4:])
        except NotegradeError:
            continue
        if not run.collected:
            runs.append(run)
    return runs


def _task_paths(run: ArrayRun, task: str) -> tuple[pathlib.Path, pathlib.Path]:
    return run.folder / f"{task}_0_result.pkl", run.folder / f"{task}_0_log.err"


def _outcome(run: ArrayRun, index: int, state: str) -> TaskOutcome:
    """A finished task's outcome.  Slurm's state decides: a cancelled or timed-out task failed even
    if its function still returned (submitit ignores SIGTERM, so a killed grade becomes an error)."""
    from submitit.core.utils import pickle_load

    task = run.tasks[index]
    result, log = _task_paths(run, task)
    failed = TaskOutcome(index=index, job_id=task, ok=False, log=str(log),
                         reason=states.failure_reason(state, minutes=run.minutes, detail=f"log {log}"))
    if state not in ("COMPLETED", "FAILED") or not result.is_file():
        return failed
    kind, value = pickle_load(result)
    if kind == "success":
        return TaskOutcome(index=index, job_id=task, ok=True, value=value, log=str(log))
    trace = str(value)
    if "timed-out" in trace:  # submitit's own end at the time limit (its USR2 signal, 90 s before)
        failed.reason = states.failure_reason("TIMEOUT", minutes=run.minutes, detail=f"log {log}")
        return failed
    last = [line.strip() for line in trace.strip().splitlines() if line.strip()][-1:] or ["no traceback"]
    failed.reason = f"raised {last[0]}; see {log}"
    return failed


def _poll(run: ArrayRun, ended_at: dict[int, float], reasons: dict[str, int] | None = None) -> dict[int, str]:
    """Each task's state now: squeue, else accounting, else the task's log and result file.

    ``reasons`` (if given) is filled with why pending tasks wait (Priority, Resources, ...)."""
    known = states.squeue_states(run.job_id)
    if reasons is not None:
        reasons.clear()
        for state, reason in known.values():
            if state == "PENDING" and reason and reason != "None":
                reasons[reason] = reasons.get(reason, 0) + 1
    accounting: dict[str, tuple[str, str]] | None = None
    found = {}
    for index, task in enumerate(run.tasks):
        result, log = _task_paths(run, task)
        state = known.get(task, ("", ""))[0]
        if state == "COMPLETED" and not result.is_file():
            # finished, but no result file (yet): give a shared filesystem a moment
            ended_at.setdefault(index, time.monotonic())
            if time.monotonic() - ended_at[index] < RESULT_GRACE_S:
                state = "COMPLETING"
        if not state:
            if accounting is None:
                accounting = states.sacct_states(run.job_id)
            state = accounting.get(task, ("", ""))[0]
        if not state or state in states.ACTIVE and task not in known:  # nobody lists it any more
            state = states.state_from_log(log.read_text(errors="replace") if log.is_file() else "") or ""
            if result.is_file() and state in ("", "PREEMPTED"):  # finished (after a requeue, perhaps)
                state = "COMPLETED"
            state = state or "VANISHED"
        found[index] = state
    return found


def _hint(resume_hint: str, job_id: str) -> str:
    """The command that collects ``job_id`` (``resume_hint`` with JOBID filled in)."""
    return resume_hint.replace("JOBID", job_id) if resume_hint else f"--resume {job_id}"


@contextlib.contextmanager
def detach_on_interrupt(job_id: str, resume_hint: str):
    """Ctrl-C inside: say that the job keeps running and how to collect it, then let it propagate."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        if not getattr(interrupt, "notegrade_told", False):
            print(f"\nSlurm job {job_id} keeps running (scancel {job_id} stops it); collect it later with: "
                  f"{_hint(resume_hint, job_id)}",
                  file=sys.stderr, flush=True)
            interrupt.notegrade_told = True
        raise


def watch(run: ArrayRun, *, progress: bool = True, resume_hint: str = "", poll_s: float | None = None) -> list[TaskOutcome]:
    """Wait for every task of ``run`` (progress bar from the states); :func:`collect` says what Ctrl-C leaves."""
    from tqdm import tqdm

    started, failures_since, ended_at, waiting = time.monotonic(), None, {}, {}
    bar = tqdm(total=len(run.tasks), desc=f"Slurm job {run.job_id}", unit="task", disable=None if progress else True)
    with bar:
        while True:
            try:
                found = _poll(run, ended_at, waiting)
                failures_since = None
            except RuntimeError as err:  # squeue failed: the controller may be busy; keep trying for a while
                failures_since = failures_since or time.monotonic()
                if time.monotonic() - failures_since > 600:
                    raise NotegradeError(f"{err} for 10 minutes; the jobs may still be running: "
                                         f"{_hint(resume_hint, run.job_id)}") from None
                bar.set_postfix_str(str(err)[:60])
                time.sleep(10)
                continue
            done = sum(state not in states.ACTIVE for state in found.values())
            counts: dict[str, int] = {}
            for state in found.values():
                counts[state.lower()] = counts.get(state.lower(), 0) + 1
            bar.n = done
            why = f" ({max(waiting, key=waiting.get)})" if waiting else ""  # e.g. "3 pending (Priority)"
            bar.set_postfix_str(", ".join(f"{n} {s}" + (why if s == "pending" else "") for s, n in sorted(counts.items())))
            if done == len(run.tasks):
                break
            elapsed = time.monotonic() - started
            time.sleep(poll_s if poll_s is not None else min(30.0, 2.0 + elapsed / 20))
    return [_outcome(run, index, state) for index, state in sorted(found.items())]


def collect(folder: pathlib.Path, job_id: str, *, progress: bool = True, resume_hint: str = "",
            announcement: str = "") -> tuple[ArrayRun, list[TaskOutcome]]:
    """Wait for the job ``job_id`` submitted from ``folder`` and collect its tasks (marked collected).

    ``announcement`` (a fresh submission's) is printed first, with Ctrl-C already covered."""
    with detach_on_interrupt(job_id, resume_hint):
        if announcement:
            print(announcement, flush=True)
        run = ArrayRun.load(folder, job_id)
        outcomes = watch(run, progress=progress, resume_hint=resume_hint)
    run.collected = True  # later runs need not wait for it
    run.save()
    return run, outcomes


def run_on_slurm(fn: Callable[[Any], Any], shards: Sequence[Any], *, options: SlurmOptions, folder: pathlib.Path,
                 job_name: str, default_minutes: int, resume: str | None = None, progress: bool = True,
                 meta: dict[str, Any] | None = None, resume_hint: str = "") -> tuple[ArrayRun, list[TaskOutcome]]:
    """Submit ``fn`` over ``shards`` (or, with ``resume``, attach to that earlier job), wait, collect.

    ``resume_hint`` is the command that collects the job later, with ``JOBID`` for its id (printed
    when interrupted).  Returns the run (``run.meta`` as given at submission) and one outcome per shard.
    """
    run = None if resume else submit(fn, shards, options=options, folder=folder, job_name=job_name,
                                     default_minutes=default_minutes, meta=meta)
    job_id = resume or run.job_id
    return collect(pathlib.Path(folder).resolve(), job_id, progress=progress, resume_hint=resume_hint,
                   announcement=run.announcement if run else "")
