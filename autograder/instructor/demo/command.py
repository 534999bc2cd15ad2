"""Render a small dataset, train, build the autograder, grade, regrade a class, report: all offline.

``notegrade demo --out DIR`` runs the toolkit end to end in a few minutes on a laptop CPU, with
nothing downloaded, and prints one line per step with its time:

1. render an NSynth-format dataset with FluidSynth (TimGM6mb, 8 programs per family, 16 notes each);
2. build the train/valid feature files;
3. train the reference NoteCNN briefly (12 epochs, seed 0, one CPU thread; CUDA when available);
4. build the held-out file from the test split, evaluate the reference on it, and build
   ``autograder.zip`` with the demo rubric (``autograder/instructor/demo/demo_rubric.toml``, calibrated for this data);
5. generate the starter code (``notegrade assign``) and its hand-out zip;
6. grade the reference, the empty starter code and three student mistakes made by editing the
   reference text (conv3 without bias, softmax without the max subtraction, evaluate without
   eval mode and no_grad), each in the sandbox as Gradescope would;
7. regrade a synthetic Gradescope export (:mod:`autograder.instructor.demo.synthetic_class`: on-time,
   late, extended, broken and group submissions) with the real grader, and compare its submissions
   (``--integrity``: they all share the reference's ``model.pt``, so every pair is flagged);
8. write the single-file HTML class report, with its integrity section.

It ends with where each artefact is and a score table, and checks the scores it expects (the
reference gets full marks, the starter 0, each mistake loses points on its item, late penalties
and the extension apply): exit 1 if one is off.  ``DIR/demo.json`` records the steps and scores.

Example
-------
>>> from autograder.instructor.demo.command import main

(The demo itself is skipped by the doctest run: it renders a dataset and trains, minutes;
``tests/instructor/demo/`` runs it.)

>>> result = main(out=Path("demo-out"))             # doctest: +SKIP
>>> result.scores["reference"]["score"]             # doctest: +SKIP
100.0
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autograder.errors import NotegradeError
from autograder.instructor.demo import steps as demo_steps

DEMO_RUBRIC = Path(__file__).resolve().parent / "demo_rubric.toml"
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
MARKER = "demo.json"  # written first: an --out holding it is a demo's and may be replaced
N_STEPS = 8

EXAMPLES = """examples:
  notegrade demo                          # everything in ./demo-out (about 4 minutes on 2 busy cores)
  notegrade demo --out /tmp/demo --jobs 2 --keep

--jobs: processes for rendering and features, and submissions graded at once (default: all cores).
--keep: keep the rendered WAV files (about 170 MB); by default only render_manifest.json stays.
An --out that is not empty must be an earlier demo's output (it holds demo.json); it is replaced.

As root (e.g. in a container), the sandbox runs student code as an unprivileged user
(notegrade-student, created on demand) who must be able to execute Python.  When this
interpreter lives where other users cannot reach it (e.g. a pyenv Python under /root), the demo
makes, once, a venv of the system Python (/usr/bin/python3.X, no pip, no downloads) in the
temp directory that sees this environment's packages through a .pth file, and points
NOTEGRADE_WORKER_PYTHON at it.  Set NOTEGRADE_WORKER_PYTHON yourself to use another interpreter.
"""


@dataclass
class DemoResult:
    """What :func:`main` did: step times, where everything is, the scores and what was off."""

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
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")
    except OSError as err:
        raise NotegradeError(f"cannot write to --out {out}: {err.strerror or err}") from None


def _save(result: DemoResult, status: str) -> None:
    record = {"status": status, "seconds": round(result.seconds, 1), "steps": result.steps,
              "paths": {k: str(v) for k, v in result.paths.items()}, "scores": result.scores,
              "class": result.class_rows, "integrity": result.integrity, "problems": result.problems,
              "worker_python": result.worker_python}
    (result.out / MARKER).write_text(json.dumps(record, indent=2, default=str) + "\n")


def main(*, out: Path = Path("demo-out"), jobs: int | None = None, keep: bool = False, progress: bool = True,
         echo: Callable[[str], None] = print) -> DemoResult:
    """Run the eight steps into ``out``; return what happened (``problems`` lists unmet expectations)."""
    from autograder.instructor.grading.student_python import ensure_worker_python

    jobs = len(os.sched_getaffinity(0)) if jobs is None else jobs
    if jobs < 1:
        raise NotegradeError(f"--jobs must be at least 1, got {jobs}")
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
    result.problems = demo_steps.check_expectations(result)
    _save(result, "done")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="directory for every artefact")
    parser.add_argument("--jobs", type=_positive_int, default=None,
                        help="parallel workers, and submissions graded at once (default: one per core)")
    parser.add_argument("--keep", action="store_true", help="keep the rendered WAV files")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    result = main(out=args.out, jobs=args.jobs, keep=args.keep)
    print()
    print(demo_steps.summary_text(result))
    if result.problems:
        print(f"\n{len(result.problems)} expectation(s) not met:")
        for line in result.problems:
            print(f"  - {line}")
        return 1
    print(f"\ndemo finished in {result.seconds:.0f} s; everything is in {result.out}")
    return 0
