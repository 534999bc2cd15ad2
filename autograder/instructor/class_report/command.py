"""A single-file HTML class report from ``grades.csv``: distributions, pass rates, confusion, leaderboard.

Reads ``grades.csv`` as ``notegrade regrade`` writes it, and the ``grades.json`` written beside it
(rubric items with their maximum points, the per-submission held-out confusion matrices: a CSV
row cannot hold an 11x11 matrix; the items that errored), and ``score_changes.csv`` beside it
(against Gradescope's scores) when there is one.  Without ``grades.json`` the items come from the column names
(``"1.1 Title"``), their maxima from the best score seen, and the confusion section says it has
no data.  Figures are matplotlib PNGs embedded as base64, so the page is one file with no
external resources.

This module is the command line; the page is written by
:func:`autograder.instructor.class_report.page.write_class_report`.
"""
from __future__ import annotations

import argparse
import pathlib

from autograder.instructor.class_report.page import write_class_report

EXAMPLES = """examples:
  notegrade report regrade/grades.csv --out class.html --reference-accuracy 0.72
  notegrade report regrade/grades.csv --out class.html --reference-metrics runs/ref/test/metrics.json --top 15

The report reads grades.json beside grades.csv (written by 'notegrade regrade') for the items'
maximum points, the pooled confusion matrix and the items that errored; --class-data points at it
elsewhere.  It shows the score changes against Gradescope from score_changes.csv beside grades.csv
(--score-changes FILE elsewhere).  When an
integrity analysis sits beside it (integrity/ from 'notegrade regrade --integrity'), or is given
with --integrity DIR ('notegrade integrity --out DIR'), the report ends with its section.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grades", type=pathlib.Path, help="grades.csv from 'notegrade regrade'")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("class_report.html"), help="HTML file to write")
    parser.add_argument("--reference-accuracy", type=float, help="the reference model's held-out accuracy (0..1)")
    parser.add_argument("--reference-metrics", type=pathlib.Path, help="metrics.json from 'notegrade evaluate'")
    parser.add_argument("--class-data", type=pathlib.Path, help="grades.json (default: beside grades.csv)")
    parser.add_argument("--top", type=int, default=10, help="leaderboard length")
    parser.add_argument("--title", help="page title (default: the assignment title)")
    parser.add_argument("--score-changes", type=pathlib.Path,
                        help="score_changes.csv from 'notegrade regrade' (default: beside grades.csv, when there is one)")
    parser.add_argument("--integrity", type=pathlib.Path,
                        help="integrity analysis folder (default: integrity/ beside grades.csv, when there is one)")


def run(args: argparse.Namespace) -> int:
    out = write_class_report(grades=args.grades, out=args.out, reference_accuracy=args.reference_accuracy,
                             reference_metrics=args.reference_metrics, class_data=args.class_data, top=args.top,
                             title=args.title, integrity=args.integrity,
                             score_changes=args.score_changes)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
