"""Run the demo's eight steps into one folder, one line each with its time, then check what it shows.

:func:`run_demo` makes ``--out`` an empty folder it may replace later (:func:`prepare_out`: only an
earlier demo's, marked by ``demo.json``), runs the steps of :class:`.steps.Context` in order,
records them in ``demo.json`` (also when a step fails) and lists the expectations that did not hold
(:func:`.summary.check_expectations`).  The command line is :mod:`autograder.instructor.demo.command`.

Example
-------
(Skipped by the doctest run: it renders a dataset and trains, minutes; tests/instructor/demo/ runs it.)

>>> result = run_demo(out=Path("demo-out"))          # doctest: +SKIP
>>> result.scores["reference"]["score"]              # doctest: +SKIP
100.0
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autograder.atomic import private_dir
from autograder.errors import NotegradeError
from autograder.instructor.demo import steps as demo_steps
from autograder.instructor.demo.summary import check_expectations
from autograder.instructor.grading.fanout import check_jobs

DEMO_RUBRIC = Path(__file__).resolve().parent / "demo_rubric.toml"
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
MARKER = "demo.json"  # written first: an --out holding it is a demo's and may be replaced
N_STEPS = 8

@dataclass
class DemoResult:
    """What :func:`run_demo` did: step times, where everything is, the scores and what was off."""

    out: Path
    steps: list[dict[str, Any]] = field(default_factory=list)  # {number, title, seconds, detail}
    paths: dict[str, Path] = field(default_factory=dict)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # submission -> score summary
    class_rows: list[dict[str, Any]] = field(default_factory=list)  # the regrade's grades.csv rows
    integrity: list[dict[str, Any]] = field(default_factory=list)  # the regrade's integrity flags
    problems: list[str] = field(default_factory=list)  # expectations that did not hold
    worker_python: str | None = None
    seconds: float = 0.0


class _Steps:
    """Runs the numbered steps: one line each with its time; a failure names its step."""

    def __init__(self, result: DemoResult, echo: Callable[[str], None]) -> None:
        self.result, self.echo, self.number = result, echo, 0

    def run(self, title: str, work: Callable[[], str]) -> None:
        self.number += 1
        label = f"step {self.number}/{N_STEPS} ({title})"
        started = time.perf_counter()
        try:
            detail = work()
        except NotegradeError as err:
            raise NotegradeError(f"{label} failed: {err}") from err
        except Exception:
            print(f"notegrade demo: {label} failed:", file=sys.stderr, flush=True)
            raise  # the CLI reports it as an internal error (--debug: the traceback)
        seconds = time.perf_counter() - started
        self.result.steps.append({"number": self.number, "title": title, "seconds": round(seconds, 1), "detail": detail})
        self.echo(f"[{self.number}/{N_STEPS}] {title:<34} {seconds:6.1f} s  {detail}")


def prepare_out(out: Path) -> None:
    """Make ``out`` an empty, writable directory; replace it only if it is an earlier demo's output."""
    if out.exists() and not out.is_dir():
        raise NotegradeError(f"--out {out} is a file; give a directory")
    try:
        if out.is_dir() and any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise NotegradeError(f"--out {out} is not empty and is not an earlier demo's output (no {MARKER}); "
                                     "give a new or empty directory")
            shutil.rmtree(out)
        private_dir(out)  # held-out file, zip, secret, students' grades: none of it for other users
        (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")
    except OSError as err:
        raise NotegradeError(f"cannot write to --out {out}: {err.strerror or err}") from None


def _save(result: DemoResult, status: str) -> None:
    record = {"status": status, "seconds": round(result.seconds, 1), "steps": result.steps,
              "paths": {k: str(v) for k, v in result.paths.items()}, "scores": result.scores,
              "class": result.class_rows, "integrity": result.integrity, "problems": result.problems,
              "worker_python": result.worker_python}
    (result.out / MARKER).write_text(json.dumps(record, indent=2, default=str) + "\n")


def run_demo(*, out: Path = Path("demo-out"), jobs: int = 1, keep: bool = False, progress: bool = True,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Run the eight steps into ``out``; return what happened (``problems`` lists unmet expectations)."""
    from autograder.instructor.grading.student_python import ensure_worker_python

    check_jobs(jobs)
    if not Path(SOUNDFONT).is_file():
        raise NotegradeError(f"{SOUNDFONT} is missing: install the Debian packages with scripts/system-deps.sh")
    out = Path(out)
    prepare_out(out)
    result = DemoResult(out=out.resolve())
    result.worker_python = ensure_worker_python()
    if result.worker_python:
        echo(f"running as root: student code runs as an unprivileged user with {result.worker_python}")
    ctx = demo_steps.Context(out=result.out, jobs=jobs, keep=keep, progress=progress, rubric=DEMO_RUBRIC,
                             soundfont=SOUNDFONT, result=result)
    steps = _Steps(result, echo)
    started = time.perf_counter()
    try:
        steps.run("render an NSynth-format dataset", ctx.render)
        steps.run("build feature files", ctx.features)
        steps.run("train the reference briefly", ctx.train)
        steps.run("held-out file + autograder zip", ctx.build)
        steps.run("generate the starter code", ctx.starter)
        steps.run(f"grade {len(demo_steps.SUBMISSIONS)} submissions", ctx.grade)
        steps.run("regrade a synthetic class export", ctx.regrade)
        steps.run("write the class report", ctx.report)
    except BaseException:
        result.seconds = time.perf_counter() - started
        try:
            _save(result, "failed")
        except OSError:
            pass  # --out vanished or filled up: the step's own error is the one to report
        raise
    result.seconds = time.perf_counter() - started
    result.problems = check_expectations(result)
    _save(result, "done")
    return result
