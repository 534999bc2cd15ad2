"""What each common student mistake costs under an autograder, item by item, before the assignment is released.

``notegrade calibrate --autograder ZIP --model runs/ref/model.pt`` builds a set of realistic
mistakes from the reference solution and the trained model (:mod:`autograder.instructor.calibrate.cases`:
checkpoint mistakes, architecture, losses, training, a forbidden import, a nested folder; generated at
run time, never shipped to students), grades each one exactly as ``notegrade grade`` does (the
Gradescope layout, the grading runtime built from the zip's requirements.txt) and prints a table:
mistake -> points lost per rubric item -> total lost.  ``--out DIR`` also writes
``calibration.md``, ``calibration.csv`` and each case's ``results.json``.

A mistake that costs almost nothing (at most ``--nearly-free`` points, default 2) is marked: the
rubric may weigh it too lightly for students to notice.  Changing the weights is the instructor's
call; this shows what they are.

This module is the command line; the work is :func:`autograder.instructor.calibrate.calibration.calibrate`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from autograder.instructor.calibrate.calibration import NEARLY_FREE, calibrate, render_text
from autograder.instructor.grading.fanout import add_jobs_argument

EXAMPLES = """examples:
  notegrade calibrate --autograder autograder.zip --model runs/ref/model.pt
  notegrade calibrate --autograder autograder.zip --model runs/ref/model.pt --jobs 2 --out calibration/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--autograder", type=Path, required=True, help="the autograder zip (or its unpacked folder)")
    parser.add_argument("--model", type=Path, required=True,
                        help="the trained reference's model.pt (or checkpoint.pt), from `notegrade train`")
    parser.add_argument("--out", type=Path, help="also write calibration.md, calibration.csv and each case's results")
    add_jobs_argument(parser, "mistakes graded at once")
    parser.add_argument("--python", default=None,
                        help="the interpreter that grades (default: the grading runtime built from the zip's "
                             "requirements.txt, as `notegrade grade`)")
    parser.add_argument("--only", action="append", metavar="MISTAKE",
                        help="grade only this mistake (repeat; the reference is always graded)")
    parser.add_argument("--nearly-free", type=float, default=NEARLY_FREE, metavar="POINTS",
                        help="mark mistakes that cost at most this many points")


def run(args: argparse.Namespace) -> int:
    calibration = calibrate(autograder=args.autograder, model=args.model, out=args.out, jobs=args.jobs,
                            python=args.python, only=args.only, nearly_free=args.nearly_free)
    print(render_text(calibration), end="")
    if args.out is not None:
        print(f"wrote {args.out / 'calibration.md'}, {args.out / 'calibration.csv'} and {args.out / 'cases'}/")
    return 1 if any(r.error for r in calibration.rows) else 0
