"""What ``notegrade grade`` does here, given its options: one submission (its report) or a batch (its summary).

:func:`grade_and_report` grades one submission with
:func:`autograder.instructor.grading.one_submission.grade_submission` and prints the instructor's
report, or a folder of them with :func:`autograder.instructor.grading.batch.grade_batch` (``jobs``
at a time, or as a Slurm job array) and prints the summary table; either way it warns when student
code ran without isolation, and returns the exit status.  As root where student code would run at
the ``uid`` level, an autograder zip or batch folder open to other users stops it first (one line,
with the ``chmod`` fix).  ``--docker`` has its own
(:func:`autograder.instructor.grading.docker.grading.grade_and_report`); the CLI
(:mod:`autograder.instructor.grading.command`) chooses.

Example
-------
(Skipped by the doctest run: it needs an autograder zip and the grading runtime; tests/instructor/grading/ runs it.)

>>> grade_and_report(submission=Path("sub"), autograder=Path("autograder.zip"), out=Path("graded"))  # doctest: +SKIP
## Rendered-data rubric (tests and demo): 100 / 100
...
0
"""
from __future__ import annotations

import sys
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.instructor.grading.batch import grade_batch, ignored_rows, summary_table
from autograder.instructor.grading.batch import is_batch as grades_as_batch
from autograder.instructor.grading.fanout import check_jobs
from autograder.instructor.grading.local import isolation_of, isolation_warning, refuse_exposed_secrets, secret_paths
from autograder.instructor.grading.one_submission import check_metadata_file, grade_submission
from autograder.results import is_autograder_error


def grade_and_report(*, submission: Path, autograder: Path, metadata: "Path | None" = None, out: Path = Path("graded"),
                     jobs: int = 1, python: "str | None" = None, slurm=None, is_batch: "bool | None" = None) -> int:
    """Grade one submission (print its report) or a directory of them (print a summary; ``slurm``: on Slurm).

    ``is_batch``: True (``--batch``), False (``--no-batch``) or None: a batch only when the folder holds
    nothing but submission folders (see :func:`autograder.instructor.grading.batch.is_batch`, which also
    refuses a folder of submissions with a stray file, asking for ``--batch``)."""
    from autograder.report import markdown_report

    check_jobs(jobs)
    if metadata is not None:  # before anything is graded: each submission of a batch would fail alike
        check_metadata_file(metadata)
    is_batch = grades_as_batch(submission, is_batch)
    if slurm is not None and not is_batch:
        raise NotegradeError(f"--slurm grades a batch: {submission} is not a directory of submission directories")
    if jobs > 1 and not is_batch:
        raise NotegradeError(f"--jobs {jobs} grades several submissions at once, but {submission} is one submission "
                             "(a batch is a folder of submission folders; say so with --batch)")
    # At the uid level student code could read an open zip or batch folder: refused before anything is graded.
    refuse_exposed_secrets([*secret_paths(autograder), *([submission] if is_batch else [])], python=python)
    if is_batch:
        rows = grade_batch(submissions=submission, autograder=autograder, metadata=metadata, out=out, jobs=jobs,
                           python=python, slurm=slurm)
        print(summary_table(rows + ignored_rows(submission)))  # files beside the folders: "ignored" rows
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
