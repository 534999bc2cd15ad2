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
call; this shows what they are.  ``--from calibration.json --rubric R.toml`` prices an earlier
calibration under another rubric's points in a second, without grading (the checks' verdicts do
not depend on the points): the quick way to try weights.

This module is the command line; the work is :func:`autograder.instructor.calibrate.calibration.calibrate`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.instructor.calibrate.calibration import NEARLY_FREE, calibrate, render_text, write_tables
from autograder.instructor.calibrate.reweigh import price
from autograder.instructor.grading.fanout import add_jobs_argument

EXAMPLES = """examples:
  notegrade calibrate --autograder autograder.zip --model runs/ref/model.pt
  notegrade calibrate --autograder autograder.zip --model runs/ref/model.pt --jobs 2 --out calibration/
  notegrade calibrate --from calibration/calibration.json --rubric rubrics/winter2025_hw3.toml
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--autograder", type=Path, help="the autograder zip (or its unpacked folder); required "
                        "unless --from")
    parser.add_argument("--model", type=Path,
                        help="the trained reference's model.pt (or checkpoint.pt), from `notegrade train`; required "
                        "unless --from")
    parser.add_argument("--from", dest="from_json", type=Path, metavar="CALIBRATION_JSON",
                        help="no grading: price the mistakes of an earlier calibration (the calibration.json of its "
                        "--out) under the points of --rubric")
    parser.add_argument("--rubric", type=Path, help="with --from: the rubric whose points to use")
    parser.add_argument("--out", type=Path, help="also write calibration.md, calibration.csv, calibration.json and "
                        "each case's results")
    add_jobs_argument(parser, "mistakes graded at once")
    parser.add_argument("--python", default=None,
                        help="the interpreter that grades (default: the grading runtime built from the zip's "
                             "requirements.txt, as `notegrade grade`)")
    parser.add_argument("--only", action="append", metavar="MISTAKE",
                        help="grade only this mistake (repeat; the reference is always graded)")
    parser.add_argument("--nearly-free", type=float, default=NEARLY_FREE, metavar="POINTS",
                        help="mark mistakes that cost at most this many points")


def _priced(args: argparse.Namespace) -> int:
    if args.rubric is None or args.autograder is not None or args.model is not None:
        raise NotegradeError("--from prices an earlier calibration: give --rubric R.toml, and no --autograder or "
                             "--model (those grade anew)")
    calibration = price(args.from_json, args.rubric, nearly_free=args.nearly_free)
    print(render_text(calibration), end="")
    if args.out is not None:
        write_tables(calibration, args.out)
        print(f"wrote {args.out / 'calibration.md'}, {args.out / 'calibration.csv'} and {args.out / 'calibration.json'}")
    return 1 if any(r.error for r in calibration.rows) else 0


def run(args: argparse.Namespace) -> int:
    if args.from_json is not None:
        return _priced(args)
    if args.autograder is None or args.model is None or args.rubric is not None:
        raise NotegradeError("calibrate grades with --autograder ZIP and --model model.pt (--rubric goes with --from "
                             "CALIBRATION_JSON, which prices an earlier calibration instead)")
    calibration = calibrate(autograder=args.autograder, model=args.model, out=args.out, jobs=args.jobs,
                            python=args.python, only=args.only, nearly_free=args.nearly_free)
    print(render_text(calibration), end="")
    if args.out is not None:
        print(f"wrote {args.out / 'calibration.md'}, {args.out / 'calibration.csv'} and {args.out / 'cases'}/")
    return 1 if any(r.error for r in calibration.rows) else 0
