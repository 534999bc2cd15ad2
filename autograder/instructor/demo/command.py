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

This module is the command line; the demo is :func:`autograder.instructor.demo.run.run_demo`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from autograder.instructor.demo.run import run_demo
from autograder.instructor.demo.summary import summary_text
from autograder.instructor.grading.fanout import add_jobs_argument

EXAMPLES = """examples:
  notegrade demo --jobs auto              # everything in ./demo-out (about 1 minute on 2 quiet cores)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="directory for every artefact")
    add_jobs_argument(parser, "parallel workers, and submissions graded at once (`make demo` uses auto)")
    parser.add_argument("--keep", action="store_true", help="keep the rendered WAV files")



def run(args: argparse.Namespace) -> int:
    result = run_demo(out=args.out, jobs=args.jobs, keep=args.keep)
    print()
    print(summary_text(result))
    if result.problems:
        print(f"\n{len(result.problems)} expectation(s) not met:")
        for line in result.problems:
            print(f"  - {line}")
        return 1
    print(f"\ndemo finished in {result.seconds:.0f} s; everything is in {result.out}")
    return 0
