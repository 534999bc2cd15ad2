"""Grading on Slurm: ``regrade --slurm`` and ``grade DIR --slurm`` as job arrays.

Each array task grades a shard of ``--per-task`` submissions with exactly the local code path
(``regrade.jobs.grade_all`` / ``grading.batch.grade_folders``, both the one fan-out of
``grading/fanout.py``: the same grader process, sandbox and rubric, and SIGTERM stops the task's
graders), writing into the same ``--out`` on the shared filesystem, so the gradebooks are built
from the same files a local run leaves and come out identical.  A regrade task writes each
submission's ``grade_key.json`` as it finishes it, so:

- a task that fails, is cancelled or times out loses only the submissions it had not finished;
  their students show "not graded: Slurm task N failed (reason)";
- a rerun (same command) grades only what is missing, in a new, smaller array; if an earlier
  array from this ``--out`` is still queued or running, the rerun waits for it first instead of
  grading the same submissions twice;
- ``--resume JOBID`` only collects that job: nothing new is submitted.

The time limit per task defaults to ``--per-task`` x the rubric's time budget (its worst case)
plus 10 minutes of start-up, so a slow but legal submission never times a task out.

Example
-------
>>> shards_of(list("abcdefg"), 3)
[['a', 'b', 'c'], ['d', 'e', 'f'], ['g']]
"""
from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from dataclasses import dataclass
from typing import Any, Sequence

from autograder.atomic import PRIVATE, write_atomically
from autograder.errors import NotegradeError
from autograder.instructor.slurm import array
from autograder.instructor.slurm.node_isolation import NodeIsolation
from autograder.instructor.slurm.options import SlurmOptions

DEFAULT_PER_TASK = 5
DEFAULT_CPUS = 2  # the grader process and the worker (held-out inference uses 2 threads)
STARTUP_MIN = 10  # per task: queue-to-start, Python and torch imports on a busy node


def shards_of(items: Sequence[Any], per_task: int) -> list[list[Any]]:
    return [list(items[i:i + per_task]) for i in range(0, len(items), per_task)]


def _time_budget_s(autograder: pathlib.Path) -> float:
    from autograder.instructor.slurm.options import autograder_rubric
    from autograder.rubric import DEFAULT_TIME_BUDGET_S

    try:
        rubric = autograder_rubric(autograder)
    except NotegradeError:  # a malformed rubric: the grader reports it for every submission
        rubric = None
    return rubric.time_budget_s if rubric is not None else DEFAULT_TIME_BUDGET_S


@dataclass
class SlurmGrading:
    """How to grade on Slurm: the merged options, and ``resume`` to collect an earlier job."""

    options: SlurmOptions
    resume: str | None = None
    resume_hint: str = ""  # the command that collects the job (printed on Ctrl-C); JOBID is replaced
    allow_unisolated: bool = False  # --allow-unisolated: tasks may grade where student code can't be isolated

    @property
    def isolation(self) -> NodeIsolation:
        """What each task requires of its node before it runs student code (slurm/node_isolation.py)."""
        return NodeIsolation(bwrap=self.options.bwrap, allow_unisolated=self.allow_unisolated)

    def settings(self, jobs: int, count: int, *, seconds_each: float,
                 default_per_task: int = DEFAULT_PER_TASK) -> tuple[SlurmOptions, int, int]:
        """Options with the defaults, submissions per task, and the default minutes for ``count``
        submissions that take at most ``seconds_each`` each, ``jobs`` at a time within a task."""
        per_task = self.options.per_task or default_per_task
        options = SlurmOptions(cpus_per_task=DEFAULT_CPUS * jobs).merged(self.options)
        rounds = math.ceil(min(per_task, max(count, 1)) / jobs)  # one after another in the biggest task
        minutes = math.ceil(rounds * seconds_each / 60) + STARTUP_MIN
        return options, per_task, minutes

    # ------------------------------------------------------------------------------ regrade
    def regrade(self, jobs_in: list[tuple[Any, dict]], *, out: pathlib.Path, autograder: pathlib.Path, grade,
                jobs: int, progress: bool) -> dict[str, tuple[dict | None, str | None, bool]]:
        """``regrade.jobs.grade_all``'s contract, on Slurm: ``{entry key: (results, error, reused)}``."""
        from autograder.instructor.regrade.jobs import earlier_grade, grade_key, sha256_of

        out, autograder = pathlib.Path(out).resolve(), pathlib.Path(autograder).resolve()
        folder = out / "slurm"
        autograder_sha = sha256_of(autograder)
        jobs_in = [(dataclasses.replace(e, folder=pathlib.Path(e.folder).resolve()), m) for e, m in jobs_in]
        keys = {e.key: grade_key(e, m, autograder_sha) for e, m in jobs_in}

        def on_disk(key: str) -> dict | None:
            return earlier_grade(out / "submissions" / key, keys[key])

        outcomes: dict[str, tuple[dict | None, str | None, bool]] = {}
        announcement = ""
        if self.resume:
            submitted = [self.resume]
        else:
            wait_for_earlier(folder, progress=progress, resume_hint=self.resume_hint)  # never grade anything twice
            todo = [(e, m) for e, m in jobs_in if on_disk(e.key) is None]
            submitted = []
            if todo:
                options, per_task, minutes = self.settings(jobs, len(todo), seconds_each=_time_budget_s(autograder))
                # A task (on a node) is the local grade_all over its shard; a cancelled one stops grading at
                # once (SIGTERM), instead of grading on until Slurm's SIGKILL.
                task = functools.partial(regrade_task, out=out, autograder=autograder, grade=grade, jobs=jobs,
                                         isolation=self.isolation)
                shards = shards_of(todo, per_task)
                run = array.submit(task, shards, options=options, folder=folder, job_name="notegrade-regrade",
                                   default_minutes=minutes, meta={"shards": [[e.key for e, _ in s] for s in shards]})
                submitted, announcement = [run.job_id], run.announcement
        for job_id in submitted:
            run, tasks = array.collect(folder, job_id, progress=progress, resume_hint=self.resume_hint,
                                       announcement=announcement)
            for task, shard in zip(tasks, run.meta.get("shards", [])):
                for key in shard:
                    if key not in keys:
                        continue  # a student since removed from the export
                    if task.ok and key in task.value:
                        outcomes[key] = tuple(task.value[key])
                    elif (results := on_disk(key)) is not None:  # finished before its task failed
                        outcomes[key] = (results, None, False)
                    else:
                        outcomes[key] = (None, task.failure, False)
                        write_atomically(out / "submissions" / key / "error.txt", task.failure + "\n", mode=PRIVATE,
                                         fsync=False)
        for entry, _ in jobs_in:
            if entry.key not in outcomes:
                results = on_disk(entry.key)
                outcomes[entry.key] = (results, None, True) if results is not None else \
                    (None, f"not part of Slurm job {self.resume}: rerun without --resume to grade it", False)
        return outcomes

    # --------------------------------------------------------------------------- grade DIR
    def grade_batch(self, folders: list[pathlib.Path], *, autograder: pathlib.Path, metadata: pathlib.Path | None,
                    out: pathlib.Path, python: str | None, jobs: int = 1) -> list[dict]:
        """``grading.batch.grade_batch``'s rows, each shard of folders graded by one array task."""

        out, autograder = pathlib.Path(out).resolve(), pathlib.Path(autograder).resolve()
        folders = [pathlib.Path(f).resolve() for f in folders]
        if any(f.name == "slurm" for f in folders):
            raise NotegradeError("a submission folder is named 'slurm', which is where --slurm keeps its job files: "
                                 "rename it")
        options, per_task, minutes = self.settings(jobs, len(folders), seconds_each=_time_budget_s(autograder))
        shards = shards_of(folders, per_task)
        # A task (on a node) is the local per-folder grading; a cancelled one stops at once (SIGTERM).
        task = functools.partial(grade_task, autograder=autograder, metadata=metadata and pathlib.Path(metadata).resolve(),
                                 out=out, python=python, jobs=jobs, isolation=self.isolation)
        run, tasks = array.run_on_slurm(task, shards, options=options, folder=out / "slurm", job_name="notegrade-grade",
                                        default_minutes=minutes, resume=self.resume, resume_hint=self.resume_hint,
                                        meta={"shards": [[f.name for f in s] for s in shards]})
        rows = []
        for outcome, names in zip(tasks, run.meta["shards"]):
            if outcome.ok:
                rows.extend(outcome.value)
            else:
                rows.extend({"name": name, "score": None, "total": None, "status": f"not graded: {outcome.failure}",
                             "seconds": 0.0} for name in names)
        return rows


def regrade_task(shard: list, *, isolation: NodeIsolation = NodeIsolation(), **kwargs: Any) -> dict:
    """One regrade array task (on a node): the local ``grade_all`` over its shard, once the node isolates
    student code (or ``--allow-unisolated`` said it need not: :class:`NodeIsolation`); a cancelled task
    stops grading at once (SIGTERM) instead of grading on until Slurm's SIGKILL."""
    from autograder.instructor.regrade.jobs import grade_all

    isolation.enforce()
    return grade_all(shard, progress=False, stop_on_sigterm=True, **kwargs)


def grade_task(folders: list, *, python: "str | None", isolation: NodeIsolation = NodeIsolation(),
               **kwargs: Any) -> list:
    """One ``grade DIR --slurm`` array task (on a node): the local per-folder grading, ``jobs`` at a time,
    once the node isolates student code (or ``--allow-unisolated`` said it need not)."""
    from autograder.instructor.grading.batch import grade_folders

    isolation.enforce(python)
    return grade_folders(folders, python=python, progress=False, stop_on_sigterm=True, **kwargs)


def resume_hint(command: str) -> str:
    """The command line that collects a job later: this one with ``--resume JOBID``."""
    import shlex
    import sys

    argv = sys.argv[1:]
    if argv[:1] != [command]:
        return f"the same `notegrade {command} ... --slurm` command with --resume JOBID"
    kept, args = [], iter(argv)
    for arg in args:
        if arg == "--resume":
            next(args, None)  # and its value
        elif not arg.startswith("--resume="):
            kept.append(arg)
    return shlex.join(["notegrade", *kept]) + " --resume JOBID"


def from_arguments(args, *, command: str) -> "SlurmGrading | None":
    """The CLI's ``--slurm`` options as a :class:`SlurmGrading`, or None without ``--slurm``."""
    from autograder.instructor.slurm import options as slurm_options

    if not args.slurm:
        slurm_options.refuse_without_slurm(args)
        return None
    if getattr(args, "docker", False):
        raise NotegradeError("--slurm and --docker don't combine: the nodes grade in local grader processes, "
                             "with the same sandbox (clusters rarely offer Docker)")
    return SlurmGrading(options=slurm_options.from_arguments(args, autograder=args.autograder), resume=args.resume,
                        resume_hint=resume_hint(command), allow_unisolated=bool(getattr(args, "allow_unisolated", False)))


def wait_for_earlier(folder: pathlib.Path, *, progress: bool, resume_hint: str = "", resuming: str | None = None) -> None:
    """Wait for every array submitted from ``folder`` that was never collected, and collect it
    (its work lands in the same ``--out``); ``resuming`` is the job ``--resume`` names (no notice)."""
    for earlier in array.unfinished_runs(folder):
        if earlier.job_id != resuming:
            print(f"Slurm job {earlier.job_id} from an earlier run has not been collected: waiting for it "
                  "(Ctrl-C leaves it running)", flush=True)
        array.collect(folder, earlier.job_id, progress=progress, resume_hint=resume_hint)


def settle_earlier_runs(out: pathlib.Path, slurm: "SlurmGrading | None", *, progress: bool,
                        doing: str = "grading") -> None:
    """Before a run unpacks its export again into (or computes into) ``out``, whose ``slurm/`` holds
    the job files: no array of an earlier run may still be reading or writing there.

    With ``--slurm`` wait for such arrays (that is how a rerun collects them, and a half-unpacked
    export never meets a running task); without, refuse while one is queued or running."""
    if slurm is None:
        refuse_if_slurm_is_grading(out, doing=doing)
        return
    folder = pathlib.Path(out) / "slurm"
    if slurm.resume:
        array.ArrayRun.load(folder, slurm.resume)  # an unknown job id: say so before waiting for anything
    wait_for_earlier(folder, progress=progress, resume_hint=slurm.resume_hint, resuming=slurm.resume)


def refuse_if_slurm_is_grading(out: pathlib.Path, *, doing: str = "grading") -> None:
    """A local run must not grade into an ``--out`` that a Slurm array is still grading into."""
    from autograder.instructor.slurm import states

    for run in array.unfinished_runs(pathlib.Path(out) / "slurm"):
        try:
            active = [s for s, _ in states.squeue_states(run.job_id).values() if s in states.ACTIVE]
        except RuntimeError:
            continue  # no Slurm here (e.g. the folder was copied to a laptop): nothing can still be running
        if active:
            raise NotegradeError(f"Slurm job {run.job_id} is still {doing} into {out} ({len(active)} task(s) queued or "
                                 f"running): add --slurm to collect it (a rerun waits for it), or stop it with "
                                 f"scancel {run.job_id}")
