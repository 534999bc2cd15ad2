"""Regrade a Gradescope "Export Submissions" archive with the same grader and late policy.

Each submission is graded in the Gradescope layout with a ``submission_metadata.json`` rebuilt
from the export: ``created_at`` comes from the export (never the clock), the due dates from
``--due``/``--late-due`` or ``--assignment`` (the export has none), extensions from
``--extensions``.  Grading runs ``--jobs`` submissions at a time (grader processes, or containers
with ``--docker``); a rerun skips submissions already graded with the same autograder,
metadata and files (the sha256s are kept in ``submissions/<id>/grade_key.json``); one broken
submission never stops the batch.

Writes into ``--out``: ``grades.csv`` (one row per student), ``grades.json`` (item maxima and
per-submission confusion matrices, read by ``notegrade report``), ``canvas.csv`` (Canvas
gradebook import), ``score_changes.csv`` (against the scores Gradescope recorded),
``reports/`` (per-student Markdown and HTML), ``submissions/<id>/`` (metadata, results.json)
and ``problems.txt`` (export entries that could not be used, grading failures).

This module is the command line; the regrade is :func:`autograder.instructor.regrade.run.regrade_export`.
"""
from __future__ import annotations

import argparse
import pathlib

from autograder.instructor.grading.fanout import add_jobs_argument
from autograder.instructor.regrade.run import regrade_export
from autograder.instructor.slurm import options as slurm_options

EXAMPLES = """examples:
  notegrade regrade assignment_4242_export.zip --autograder autograder.zip --due 2024-10-01T23:59:00-07:00 \\
      --late-due 2024-10-04T23:59:00-07:00 --extensions extensions.csv --jobs 2 --out regrade/
  notegrade regrade export_dir/ --autograder build/autograder/ --assignment a2.toml --docker --jobs 4
  notegrade regrade export.zip --autograder autograder.zip --assignment a2.toml --out regrade/ \\
      --slurm --cluster great_lakes.toml --per-task 5          (a job array; rerun or --resume JOBID to collect)
  notegrade report regrade/grades.csv --out class.html

The export has no due dates: give --due (and --late-due), or --assignment FILE (TOML/JSON with
title, due_date, late_due_date, total_points).  extensions.csv: columns sid and/or email, due_date
[, late_due_date]; all times ISO 8601 with a time zone.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export", type=pathlib.Path, help="the 'Export Submissions' zip, or its unpacked folder")
    parser.add_argument("--autograder", type=pathlib.Path, required=True, help="autograder zip or unpacked directory")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("regrade"), help="output directory")
    add_jobs_argument(parser, "submissions graded at once (with --slurm: in each array task)")
    parser.add_argument("--docker", action="store_true", help="grade each submission in a container")
    parser.add_argument("--image", help="Docker image tag to use or build (with --docker)")
    parser.add_argument("--base-image", default=None,
                        help="with --docker: the image to build FROM (default: $NOTEGRADE_BASE_IMAGE, else "
                             "gradescope/autograder-base:latest)")
    parser.add_argument("--python", default=None,
                        help="the interpreter that grades (default: a cached venv built from the autograder's "
                             "requirements.txt, as setup.sh builds on Gradescope)")
    parser.add_argument("--due", help="due date, ISO 8601 with time zone (the export has none)")
    parser.add_argument("--late-due", help="late due date, ISO 8601 with time zone")
    parser.add_argument("--assignment", type=pathlib.Path,
                        help="TOML/JSON with title, due_date, late_due_date, total_points (options override it)")
    parser.add_argument("--title", help="assignment title (Canvas column name unless --canvas-column)")
    parser.add_argument("--extensions", type=pathlib.Path, help="CSV: sid and/or email, due_date[, late_due_date]")
    parser.add_argument("--canvas-column", help="Canvas assignment column, e.g. 'Assignment 2 (123456)'")
    parser.add_argument("--tolerance", type=float, default=0.005, help="score difference still counted as unchanged")
    slurm_options.add_arguments(parser)
    parser.add_argument("--integrity", action="store_true",
                        help="also compare the submissions for shared checkpoints, copied code and suspicious "
                             "agreement into OUT/integrity/ (see 'notegrade integrity --help'; no score changes)")


def run(args: argparse.Namespace) -> int:
    from autograder.instructor.slurm.grading import from_arguments as slurm_grading

    summary = regrade_export(export=args.export, autograder=args.autograder, out=args.out, jobs=args.jobs,
                             docker=args.docker, image=args.image, extensions=args.extensions, due=args.due,
                             late_due=args.late_due, assignment=args.assignment, title=args.title,
                             canvas_column=args.canvas_column, tolerance=args.tolerance,
                             slurm=slurm_grading(args, command="regrade"), integrity=args.integrity,
                             python=args.python, base_image=args.base_image)
    print(f"graded {summary.graded} submission(s), reused {summary.reused} from an earlier run, "
          f"{len(summary.failed)} could not be graded")
    for line in summary.failed:
        print(f"  not graded: {line}")
    if summary.problems:
        print(f"{len(summary.problems)} export problem(s), listed in {summary.paths['problems']}")
    print(f"{len(summary.changed)} student(s) whose score differs from Gradescope's:")
    for line in summary.changed:
        print(f"  {line}")
    if summary.integrity is not None:
        from autograder.instructor.class_integrity.compare import report_lines

        print(f"integrity analysis, into {summary.integrity.out}:\n" + report_lines(summary.integrity, paths=False))
    for name, path in summary.paths.items():
        print(f"{name:>10}: {path}")
    return 1 if summary.failed else 0
