"""The one fan-out over submissions: its threads per grading (issue 20.2), order and failures."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from autograder.instructor.grading.fanout import Job, grade_each
from autograder.sandbox.limits import THREADS_ENV, SandboxLimits

JOBS = [Job(k, Path(k), Path("out") / k) for k in "abcd"]


def _recording_grader(seen: list):
    lock = threading.Lock()

    def grade(*, submission, autograder, metadata, out):
        with lock:  # what a grader process started now would inherit, and the limits it would take
            seen.append((os.environ.get(THREADS_ENV), SandboxLimits().threads))
        if submission.name == "c":
            raise RuntimeError("the grader died")
        return {"score": 1.0}
    return grade


def test_parallel_gradings_share_the_cores_and_the_setting_is_undone(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    seen: list = []
    graded = grade_each(JOBS, _recording_grader(seen), autograder="ag", parallel=2, progress=False)
    assert seen == [("2", 2)] * 4 and THREADS_ENV not in os.environ
    assert [g.job.key for g in graded] == list("abcd") and graded[2].problem == "RuntimeError: the grader died"
    seen.clear()
    grade_each(JOBS, _recording_grader(seen), autograder="ag", parallel=8, progress=False)  # never below one
    assert {s[0] for s in seen} == {"1"}


def test_one_at_a_time_or_the_instructors_own_setting_changes_nothing(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    seen: list = []
    grade_each(JOBS, _recording_grader(seen), autograder="ag", parallel=1, progress=False)
    assert {s[0] for s in seen} == {None} and {s[1] for s in seen} == {min(2, os.cpu_count() or 1)}
    grade_each(JOBS[:1], _recording_grader(seen), autograder="ag", parallel=4, progress=False)  # one job: one grading
    assert seen[-1][0] is None
    monkeypatch.setenv(THREADS_ENV, "3")
    seen.clear()
    grade_each(JOBS, _recording_grader(seen), autograder="ag", parallel=2, progress=False)
    assert {s for s in seen} == {("3", 3)} and os.environ[THREADS_ENV] == "3"
