"""The one fan-out over submissions: each graded on its own, ``parallel`` at a time, none able to stop the rest.

Every tool that grades many submissions goes through :func:`grade_each`: a local batch and each
``grade DIR --slurm`` task (:mod:`.batch`), ``grade --docker`` (:mod:`.docker.grading`), a regrade
and each of its Slurm tasks (:mod:`autograder.instructor.regrade.jobs`) and ``calibrate``.  It gets
:class:`Job` s (key, submission folder, out folder, metadata) and a *grader*: any callable
``grade(submission=, autograder=, metadata=, out=) -> results.json dict`` (a local grader process,
:func:`.one_submission.grade_submission`; a container, :class:`.docker.grading.ContainerGrader`; a
test's fake).  What it promises, so that no caller writes its own thread pool again:

- ``parallel`` gradings at once, on threads: each grading is its own process or container, so the
  threads only wait; each local grading's worker gets its share of the cores (``$NOTEGRADE_WORKER_THREADS``);
- whatever one grading raises stays on that job's :class:`Graded` (the caller turns it into its own
  row or ``error.txt``): one broken submission never stops the batch;
- ``on_done(graded)`` runs in the grading thread as soon as a job ends, so what marks a grade as
  finished (a regrade's ``grade_key.json``) is on disk before the next grading starts;
- ``stop_on_sigterm`` (a Slurm array task): SIGTERM stops the running graders and starts no new one
  (:func:`.local.stop_graders`) instead of grading on until Slurm's SIGKILL;
- a progress bar (when ``progress`` and stderr is a terminal); results in the order of the jobs;
- a grader that is a context manager (:class:`.one_submission.BatchGrader`, whose zygotes fork the
  grader processes warm) is entered for the whole fan-out and left at its end.

Example
-------
>>> jobs = [Job("a", Path("a"), Path("out/a")), Job("b", Path("b"), Path("out/b"))]
>>> def grade(*, submission, autograder, metadata, out):
...     if submission.name == "b":
...         raise RuntimeError("the grader died")
...     return {"score": 1.0}
>>> [(g.job.key, g.results, g.problem) for g in grade_each(jobs, grade, autograder=Path("ag"), progress=False)]
[('a', {'score': 1.0}, ''), ('b', None, 'RuntimeError: the grader died')]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from autograder.errors import NotegradeError

GradeFn = Callable[..., dict]  # grade(submission=, autograder=, metadata=, out=) -> the results.json dict


@dataclass(frozen=True)
class Job:
    """One submission to grade: ``key`` names it to the caller (a batch's folder, an export entry)."""

    key: str
    submission: Path
    out: Path  # the grader's own outputs go here
    metadata: "Path | None" = None  # a submission_metadata.json (late penalty), or none


@dataclass
class Graded:
    """How one job went: its results, or what its grading raised (with the traceback)."""

    job: Job
    results: "dict | None" = None
    error: "Exception | None" = None
    details: str = ""  # the traceback of ``error``
    seconds: float = 0.0

    @property
    def problem(self) -> str:
        """``error`` in one line: a NotegradeError's own message, anything else with its type; "" without one."""
        if self.error is None:
            return ""
        return str(self.error) if isinstance(self.error, NotegradeError) else f"{type(self.error).__name__}: {self.error}"


def add_jobs_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """The one ``--jobs`` option of every command that works on many submissions: a whole number or
    ``auto`` (the cores this process may use), default 1 everywhere (each job holds a grading process
    of ~0.7 GB, so more is the instructor's choice)."""
    parser.add_argument("--jobs", type=jobs_value, default=1, metavar="N|auto", help=what)


def jobs_value(text: "str | int") -> int:
    """``--jobs``: a whole number >= 1, or ``auto`` for one per usable core.

    >>> jobs_value("3"), jobs_value("auto") == len(os.sched_getaffinity(0))
    (3, True)
    >>> jobs_value("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: --jobs must be a whole number of at least 1 or 'auto', got '0'
    """
    if str(text).strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be a whole number of at least 1 or 'auto', got {str(text)!r}")
    return value


def check_jobs(jobs: int) -> None:
    """The library functions' check of ``jobs`` (a caller that did not come through :func:`jobs_value`)."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise NotegradeError(f"--jobs must be at least 1, got {jobs}")


def _grade_one(job: Job, grade: GradeFn, autograder: Path, on_done: "Callable[[Graded], None] | None") -> Graded:
    started = time.monotonic()
    try:
        graded = Graded(job, results=grade(submission=job.submission, autograder=autograder, metadata=job.metadata,
                                           out=job.out))
    except Exception as err:  # noqa: BLE001 - one broken submission never stops the batch
        graded = Graded(job, error=err, details=traceback.format_exc())
    graded.seconds = time.monotonic() - started
    if on_done is not None:
        try:
            on_done(graded)
        except Exception as err:  # noqa: BLE001 - e.g. a full disk while recording it: that job only
            graded = Graded(job, error=err, details=traceback.format_exc(), seconds=graded.seconds)
    return graded


def grade_each(jobs: "list[Job]", grade: GradeFn, *, autograder: "str | Path", parallel: int = 1,
               progress: bool = True, desc: str = "grading", unit: str = "submission",
               on_done: "Callable[[Graded], None] | None" = None, stop_on_sigterm: bool = False) -> "list[Graded]":
    """Grade every job with ``grade``, ``parallel`` at a time; one :class:`Graded` per job, in their order."""
    from tqdm import tqdm

    if stop_on_sigterm:
        from autograder.instructor.grading.local import stop_graders_on_sigterm

        stop_graders_on_sigterm()
    autograder = Path(autograder)
    # A grader that is a context manager (BatchGrader: its zygotes) lives as long as the fan-out.
    owned = grade if hasattr(grade, "__enter__") else contextlib.nullcontext()
    with owned, _threads_per_grading(min(parallel, len(jobs))), cf.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool, \
            tqdm(total=len(jobs), desc=desc, unit=unit, disable=None if progress else True) as bar:
        futures = [pool.submit(_grade_one, job, grade, autograder, on_done) for job in jobs]
        for _ in cf.as_completed(futures):
            bar.update(1)
        return [future.result() for future in futures]


@contextlib.contextmanager
def _threads_per_grading(parallel: int) -> Iterator[None]:
    """With several gradings at once, each worker gets its share of the cores (``$NOTEGRADE_WORKER_THREADS``,
    read by :func:`autograder.sandbox.limits.default_threads` in the grader processes): two workers of two
    threads each on two cores lose time to each other.  One at a time: nothing changes."""
    from autograder.sandbox.limits import THREADS_ENV

    if parallel <= 1 or THREADS_ENV in os.environ:  # the instructor's own setting wins
        yield
        return
    os.environ[THREADS_ENV] = str(max(1, len(os.sched_getaffinity(0)) // parallel))
    try:
        yield
    finally:
        os.environ.pop(THREADS_ENV, None)
