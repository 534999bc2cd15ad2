"""Grade a submission locally exactly as Gradescope would, and print its report.

``notegrade grade SUBMISSION --autograder ZIP_OR_DIR`` grades one submission in a temporary
``/autograder``-style root with the autograder's own code (:mod:`autograder.instructor.grading.one_submission`)
and writes ``OUT/results.json``, ``OUT/report.html`` and the grader's log ``OUT/stdout.txt``.
SUBMISSION may be a directory (or zip) of one student's files, or a directory of such
directories: then each is graded (``--jobs`` at a time) into ``OUT/<name>/`` plus a summary
(:mod:`autograder.instructor.grading.batch`).  This module holds the options and the dispatch (Docker,
Slurm, a batch or one submission); the grading functions stay importable from here.

Example
-------
>>> from autograder.instructor.grading.command import grade_submission

(The grading itself is skipped by the doctest run: it needs an autograder zip and the grading
runtime; see :mod:`autograder.instructor.grading.one_submission`.)

>>> results = grade_submission(submission="sub", autograder="autograder.zip", out="graded")  # doctest: +SKIP
>>> results["score"]                                    # doctest: +SKIP
100.0
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

from autograder.errors import NotegradeError
from autograder.instructor.grading.batch import (
    batch_folders,
    batch_problem,
    grade_batch,
    grade_folder,
    summary_table,
)
from autograder.instructor.grading.batch import is_batch_folder as _is_batch
from autograder.instructor.grading.local import isolation_of, isolation_warning
from autograder.instructor.grading.one_submission import (
    OUTER_TIMEOUT_S,
    grade_submission,
    grading_python,
)
from autograder.results import is_autograder_error

# Callers (regrade, calibrate, Slurm tasks, the demo, tests) import the grading functions from here.
__all__ = ["OUTER_TIMEOUT_S", "add_arguments", "batch_folders", "batch_problem", "grade_batch", "grade_folder",
           "grade_submission", "grading_python", "main", "run", "summary_table"]

EXAMPLES = """examples:
  notegrade grade my_submission/ --autograder autograder.zip
  notegrade grade my_submission/ --autograder autograder_dir/ --metadata submission_metadata.json --out graded/
  notegrade grade all_submissions/ --autograder autograder.zip --jobs 2 --out graded/
  notegrade grade my_submission/ --autograder autograder.zip --docker --image notegrade-autograder
  notegrade grade my_submission/ --autograder autograder.zip --docker --base-image my-local-base:bookworm
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", type=pathlib.Path,
                        help="a submission directory or zip, or a directory of submission directories")
    parser.add_argument("--autograder", type=pathlib.Path, required=True,
                        help="the autograder zip (from `notegrade build`) or its unpacked directory")
    parser.add_argument("--metadata", type=pathlib.Path, default=None,
                        help="a submission_metadata.json (for the late penalty); without it no penalty applies")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("graded"),
                        help="where results.json, report.html and the grader's stdout.txt go")
    parser.add_argument("--batch", action="store_true",
                        help="SUBMISSION is a folder of submission folders (detected when it holds nothing else)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="submissions graded in parallel (with a batch; with --slurm: in each array task)")
    parser.add_argument("--docker", action="store_true", help="grade inside the autograder's Docker image, as Gradescope does")
    parser.add_argument("--image", default=None, help="with --docker: the image tag to build or reuse")
    parser.add_argument("--base-image", default=None,
                        help="with --docker: the image to build FROM (default: $NOTEGRADE_BASE_IMAGE, else "
                             "gradescope/autograder-base:latest)")
    parser.add_argument("--python", default=None,
                        help="the interpreter that grades (default: a cached venv built from the autograder's "
                             "requirements.txt, as setup.sh builds on Gradescope)")
    parser.add_argument("--isolation", choices=("auto", "bubblewrap", "uid", "rootless", "none"), default=None,
                        help="how student code is isolated (default: $NOTEGRADE_ISOLATION, else auto: as root, bubblewrap "
                             "where the machine allows namespaces, else a separate uid; as another user, rootless "
                             "(bubblewrap as you) where it works, else none, with a warning)")
    try:  # the instructor tools are absent from the autograder zip; --slurm is theirs
        from autograder.instructor.slurm import options as slurm_options
    except ImportError:
        return
    slurm_options.add_arguments(parser)


def main(*, submission: pathlib.Path, autograder: pathlib.Path, metadata: pathlib.Path | None = None,
         out: pathlib.Path = pathlib.Path("graded"), jobs: int = 1, python: str | None = None, slurm=None,
         is_batch: "bool | None" = None) -> int:
    """Grade one submission (print its report) or a directory of them (print a summary; ``slurm``: on Slurm).

    ``is_batch``: True (``--batch``), or None: a batch only when the folder holds nothing but
    submission folders (see :func:`autograder.instructor.grading.batch.is_batch_folder`)."""
    from autograder.report import markdown_report

    if jobs < 1:
        raise NotegradeError(f"--jobs must be at least 1, got {jobs}")
    if is_batch is None:
        is_batch = _is_batch(submission)
    elif is_batch and batch_problem(submission):
        raise NotegradeError(f"--batch: {batch_problem(submission)}")
    if slurm is not None and not is_batch:
        raise NotegradeError(f"--slurm grades a batch: {submission} is not a directory of submission directories")
    if jobs > 1 and not is_batch:
        raise NotegradeError(f"--jobs {jobs} grades several submissions at once, but {submission} is one submission "
                             "(a batch is a folder holding nothing but submission folders; say so with --batch)")
    if is_batch:
        rows = grade_batch(submissions=submission, autograder=autograder, metadata=metadata, out=out, jobs=jobs,
                           python=python, slurm=slurm)
        print(summary_table(rows))
        print(f"\nresults in {out}/<submission>/results.json; summary in {out / 'summary.csv'}")
        _warn_without_isolation([r.get("isolation") for r in rows if r.get("isolation")])
        return 0 if all(r["status"] == "graded" for r in rows) else 1
    results = grade_submission(submission=submission, autograder=autograder, metadata=metadata, out=out, python=python)
    print(markdown_report(results, audience="instructor"))
    print(f"results: {out / 'results.json'}  report: {out / 'report.html'}  grader log: {out / 'stdout.txt'}")
    _warn_without_isolation([isolation_of(results).get("level")])
    errored = is_autograder_error(results)
    return 1 if errored else 0


def _warn_without_isolation(levels: list) -> None:
    line = isolation_warning(levels)
    if line:
        print(line, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.isolation:  # read by every grader process this one starts (autograder.sandbox.isolation)
        os.environ["NOTEGRADE_ISOLATION"] = args.isolation
    slurm = None
    if hasattr(args, "slurm"):  # refuses --slurm with --docker, and Slurm flags without --slurm
        from autograder.instructor.slurm.grading import from_arguments as slurm_grading

        slurm = slurm_grading(args, command="grade")
    if args.docker:
        try:
            from autograder.instructor.grading.docker import fanout as docker_grade
        except ImportError:
            raise NotegradeError("--docker needs autograder/instructor/grading/docker/fanout.py, which this install lacks; "
                                 "drop --docker to grade in local processes") from None
        if args.python is not None:
            raise NotegradeError("--python does not apply with --docker (the image's own runtime grades)")
        return int(docker_grade.main(submission=args.submission, autograder=args.autograder, metadata=args.metadata,
                                     out=args.out, image=args.image, jobs=args.jobs, base_image=args.base_image,
                                     batch=True if args.batch else None) or 0)
    for flag, value in (("--image", args.image), ("--base-image", args.base_image)):
        if value is not None:
            raise NotegradeError(f"{flag} only applies with --docker")
    return main(submission=args.submission, autograder=args.autograder, metadata=args.metadata, out=args.out,
                jobs=args.jobs, python=args.python, slurm=slurm, is_batch=True if args.batch else None)
