"""Compare every pair of a class's submissions for shared checkpoints, copied code and suspicious agreement.

``notegrade integrity EXPORT_OR_REGRADE_DIR --autograder ZIP --out DIR`` reads Gradescope's
"Export Submissions" archive (or a ``notegrade regrade`` folder, whose regraded results it
prefers), computes each submission's held-out logits in the grading sandbox (cached: a rerun
reuses them for unchanged submissions), and writes ``integrity.csv`` (one row per flagged pair
or student, with the evidence and numbers), ``integrity.json``, ``pairs.npz`` and copydetect's HTML
for pairs flagged for code.  ``notegrade report`` shows it as a section of the class report.
It never changes a score: every flag is evidence for a person to review.

This module is the command line; the analysis starts at
:func:`autograder.instructor.class_integrity.compare.compare_class`.
"""
from __future__ import annotations

import argparse
import pathlib

from autograder.instructor.class_integrity.analysis import MAX_REPORTS
from autograder.instructor.class_integrity.checkpoints import KNOWN_SEEDS
from autograder.instructor.class_integrity.compare import compare_class, report_lines
from autograder.instructor.class_integrity.flags import Thresholds
from autograder.instructor.grading.fanout import add_jobs_argument
from autograder.instructor.slurm import options as slurm_options

EXAMPLES = """examples:
  notegrade integrity assignment_4242_export.zip --autograder autograder.zip --out integrity/ --jobs 2
  notegrade integrity regrade/ --autograder autograder.zip --out regrade/integrity
  notegrade regrade export.zip --autograder autograder.zip --due 2024-10-01T23:59:00-07:00 --integrity --jobs 2
  notegrade report regrade/grades.csv --out class.html     # finds regrade/integrity/ by itself
  notegrade integrity export.zip --autograder autograder.zip --out /scratch/me/integrity \\
      --slurm --cluster great_lakes.toml --per-task 10      (the logits as a job array; rerun or --resume JOBID)

Flags (each is evidence for review, never a verdict): identical model.pt; weights with a median
per-layer cosine >= --weight-threshold; prediction agreement or wrong-answer agreement a robust
z-score >= --z above the class; code sharing >= --code-threshold of each file's own (non-starter)
fingerprints and a robust z >= --code-z; the grader's train-on-test and tampering verdicts.
Students who kept the pipeline's default --seed start from the same weights and are compared
only with each other (integrity.json's notes say how many).
"""


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Thresholds()
    parser.add_argument("source", type=pathlib.Path,
                        help="the 'Export Submissions' zip or folder, or the --out folder of 'notegrade regrade'")
    parser.add_argument("--autograder", type=pathlib.Path, required=True, help="autograder zip or unpacked directory")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("integrity"), help="output directory")
    add_jobs_argument(parser, "submissions whose logits are computed at once (with --slurm: in each array task)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per submission for its held-out logits")
    parser.add_argument("--weight-threshold", type=float, default=defaults.weight_similarity,
                        help="median per-layer weight cosine that flags a pair")
    parser.add_argument("--z", type=float, default=defaults.z, help="robust z-score that flags prediction agreement")
    parser.add_argument("--code-threshold", type=float, default=defaults.code_similarity,
                        help="shared share of each file's own fingerprints that flags a pair (with --code-z)")
    parser.add_argument("--code-z", type=float, default=defaults.code_z, help="robust z-score a code flag also needs")
    parser.add_argument("--boilerplate", type=pathlib.Path,
                        help="folder with the starter model.py/losses.py/train.py handed out (default: generated "
                             "from the reference, as 'notegrade assign' does)")
    parser.add_argument("--max-reports", type=int, default=MAX_REPORTS,
                        help="copydetect HTML reports to write, for the strongest pairs flagged for code")
    parser.add_argument("--known-seeds", type=_seeds, default=KNOWN_SEEDS,
                        help="seeds whose initial weights count as a shared start (default: 0-9,42,123,1234,2024,3407)")
    slurm_options.add_arguments(parser, per_task_help="submissions whose logits one array task computes (default: 10)",
                                time_default="--per-task x --timeout + 10 min")


def run(args: argparse.Namespace) -> int:
    from autograder.instructor.slurm.grading import from_arguments as slurm_grading

    thresholds = Thresholds(weight_similarity=args.weight_threshold, z=args.z, code_similarity=args.code_threshold,
                            code_z=args.code_z)
    summary = compare_class(source=args.source, autograder=args.autograder, out=args.out, jobs=args.jobs,
                            timeout_s=args.timeout, thresholds=thresholds, boilerplate=args.boilerplate,
                            known_seeds=args.known_seeds, max_reports=args.max_reports,
                            slurm=slurm_grading(args, command="integrity"))
    print(report_lines(summary))
    return 0
