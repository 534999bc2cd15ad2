"""The integrity analysis on Slurm: each submission's held-out logits computed by a job array.

``notegrade integrity ... --slurm`` and ``notegrade regrade ... --slurm --integrity``.  The
expensive part of the analysis is each submission's held-out logits in the grading sandbox;
the pair analysis after it takes seconds.  So only the logits go to the cluster: every array task
runs the local :func:`~autograder.instructor.class_integrity.logits.all_logits` over its shard of
``--per-task`` submissions (default 10: a submission's logits take seconds, not a grade's
minute), into the same content-addressed cache (``OUT/cache/logits/``, on the shared
filesystem), and the analysis then runs here from that cache, so its outputs are a local run's.

- Logits already in the cache are never submitted, and byte-identical submissions run once.
- A task returns only each submission's status; the logits themselves stay in the cache.
- A failed, cancelled or timed-out task loses only the submissions it had not finished: their
  students show "logits not computed: Slurm task N failed (reason)", and a rerun computes only those.
- Ctrl-C leaves the array running.  ``integrity --resume JOBID`` collects it, and so does a rerun
  (it waits for every uncollected array of its ``--out`` first).  Under ``regrade --integrity`` the
  logits job is collected by rerunning the regrade (grades are reused), since ``regrade --resume``
  names a grading job.

The time limit per task defaults to ``--per-task`` x ``--timeout`` (a submission's worst case) + 10 min.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib

from autograder.atomic import private_dir
from autograder.errors import NotegradeError
from autograder.instructor.class_integrity.logits import (
    HeldOut,
    LogitsOutcome,
    all_logits,
    cache_key,
    load_cached,
    read_heldout,
)
from autograder.instructor.class_integrity.members import Member
from autograder.instructor.slurm import array
from autograder.instructor.slurm.grading import SlurmGrading, resume_hint, shards_of, wait_for_earlier
from autograder.instructor.slurm.node_isolation import NodeIsolation

DEFAULT_PER_TASK = 10
NOT_COMPUTED = "slurm"  # LogitsOutcome.status of a submission whose Slurm task did not compute it


def logits_shard(shard: list[Member], *, heldout: pathlib.Path, heldout_sha256: str, cache: pathlib.Path, jobs: int,
                 timeout_s: float, hide: tuple[str, ...], isolation: NodeIsolation = NodeIsolation()
                 ) -> dict[str, tuple[str, str]]:
    """One array task (on a node): the local ``all_logits`` over its shard, into the shared cache, once the
    node isolates student code (or ``--allow-unisolated`` said it need not).

    Returns ``{cache key: (status, message)}``; the logits are in the cache."""
    isolation.enforce()
    held = read_heldout(heldout)
    if held.sha256 != heldout_sha256:
        raise NotegradeError(f"{heldout} changed after the job was submitted: rerun the analysis")
    outcomes = all_logits(shard, held, cache=cache, jobs=jobs, timeout_s=timeout_s, hide=hide, progress=False)
    return {cache_key(m, held): (outcomes[m.key].status, outcomes[m.key].message) for m in shard}


def for_regrade(slurm: SlurmGrading | None) -> SlurmGrading | None:
    """``regrade --slurm --integrity``: the logits job as a fresh submission (``--resume`` names the
    grading job), collected later by rerunning the same regrade."""
    if slurm is None:
        return None
    hint = resume_hint("regrade")
    command = hint.removesuffix(" --resume JOBID") if hint.endswith(" --resume JOBID") else \
        "the same `notegrade regrade ... --slurm --integrity` command"
    return dataclasses.replace(slurm, resume=None, resume_hint=f"{command}  (without --resume: it reuses the grades "
                                                                 "and waits for job JOBID)")


def slurm_logits(slurm: SlurmGrading, members: list[Member], heldout: HeldOut, *, cache: pathlib.Path,
                 folder: pathlib.Path, jobs: int = 1, timeout_s: float = 180.0, hide: tuple[str, ...] = (),
                 progress: bool = True) -> dict[str, LogitsOutcome]:
    """``all_logits``'s contract (``{member key: LogitsOutcome}``), computed by a Slurm job array
    whose job files go to ``folder``.  Every path must be on a filesystem the nodes share."""
    cache, folder = pathlib.Path(cache).resolve(), pathlib.Path(folder).resolve()
    private_dir(cache)
    keys = {m.key: cache_key(m, heldout) for m in members if m.folder is not None}
    if not slurm.resume:
        wait_for_earlier(folder, progress=progress, resume_hint=slurm.resume_hint)  # never compute anything twice
    todo: dict[str, Member] = {}  # cache key -> the first member with it (byte-identical submissions run once)
    for m in members:
        if m.folder is not None and keys[m.key] not in todo and load_cached(cache, keys[m.key]) is None:
            # What a node needs: the files (absolute), their digest; not the people or their results.
            todo[keys[m.key]] = dataclasses.replace(m, folder=pathlib.Path(m.folder).resolve(), people=[], results=None)
    reported: dict[str, tuple[str, str]] = {}  # cache key -> (status, message) from the task that had it
    failed: dict[str, str] = {}  # cache key -> its task's failure
    if slurm.resume or todo:
        options, per_task, minutes = slurm.settings(jobs, len(todo), seconds_each=timeout_s,
                                                    default_per_task=DEFAULT_PER_TASK)
        shards = shards_of(list(todo.items()), per_task)
        task = functools.partial(logits_shard, heldout=heldout.path.resolve(), heldout_sha256=heldout.sha256,
                                 cache=cache, jobs=jobs, timeout_s=timeout_s,
                                 hide=tuple(str(pathlib.Path(h).resolve()) for h in hide), isolation=slurm.isolation)
        run, tasks = array.run_on_slurm(
            task, [[m for _, m in shard] for shard in shards], options=options, folder=folder,
            job_name="notegrade-integrity", default_minutes=minutes, resume=slurm.resume, progress=progress,
            meta={"shards": [[key for key, _ in shard] for shard in shards]}, resume_hint=slurm.resume_hint)
        for outcome, shard in zip(tasks, run.meta.get("shards", [])):
            for key in shard:
                if outcome.ok and key in outcome.value:
                    reported[key] = tuple(outcome.value[key])
                else:
                    failed[key] = outcome.failure
    results = {}
    for m in members:
        if m.folder is None:
            results[m.key] = LogitsOutcome(None, "missing", "the export has no folder for it")
        else:
            results[m.key] = _outcome(keys[m.key], cache=cache, reported=reported, failed=failed, resume=slurm.resume)
    return results


def _outcome(key: str, *, cache: pathlib.Path, reported: dict[str, tuple[str, str]], failed: dict[str, str],
             resume: str | None) -> LogitsOutcome:
    """One submission's logits after the array: from the cache, else why they are not there."""
    cached = load_cached(cache, key)
    if cached is not None:
        cached.reused = key not in reported and key not in failed  # computed by an earlier run, not this job
        return cached
    if key in reported:
        status, message = reported[key]
        if status in ("ok", "error"):  # the task cached it, yet it is not readable here
            return LogitsOutcome(None, "crash", f"logits not computed here: the Slurm task wrote them to {cache}, which "
                                                "this machine cannot read back (is --out on a filesystem every node shares?)")
        return LogitsOutcome(None, status, message)  # a timeout or crash in the sandbox: not cached, tried again
    if key in failed:
        return LogitsOutcome(None, NOT_COMPUTED, f"logits not computed: {failed[key]}")
    return LogitsOutcome(None, NOT_COMPUTED, f"logits not computed: not part of Slurm job {resume}; rerun without "
                                             "--resume to compute them")
