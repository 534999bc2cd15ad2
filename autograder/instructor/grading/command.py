"""Grade a submission locally exactly as Gradescope would, and print its report.

``notegrade grade SUBMISSION --autograder ZIP_OR_DIR`` grades one submission in a temporary
``/autograder``-style root with the autograder's own code and writes ``OUT/results.json``,
``OUT/report.html`` and the grader's log ``OUT/stdout.txt``.  SUBMISSION may be a directory (or
zip) of one student's files, or a directory of such directories: then each is graded (``--jobs``
at a time) into ``OUT/<name>/`` plus a summary.  This module is only the command line: its options,
and the choice between :func:`autograder.instructor.grading.run.grade_and_report` (local grader
processes, or ``--slurm``) and :func:`autograder.instructor.grading.docker.grading.grade_and_report`
(``--docker``).  Code that grades imports those modules (or ``one_submission``, ``batch``), never this one.
"""
from __future__ import annotations

import argparse
import os
import pathlib

from autograder.errors import NotegradeError
from autograder.instructor.grading.fanout import add_jobs_argument
from autograder.instructor.grading.run import grade_and_report

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
    parser.add_argument("--batch", action=argparse.BooleanOptionalAction, default=None,
                        help="SUBMISSION is a folder of submission folders, each graded; other files in it are listed "
                             "as ignored (default: detected when it holds nothing but folders; --no-batch: one upload)")
    add_jobs_argument(parser, "submissions graded in parallel (with a batch; with --slurm: in each array task)")
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


def run(args: argparse.Namespace) -> int:
    if args.isolation:  # read by every grader process this one starts (autograder.sandbox.isolation)
        os.environ["NOTEGRADE_ISOLATION"] = args.isolation
    slurm = None
    if hasattr(args, "slurm"):  # refuses --slurm with --docker, and Slurm flags without --slurm
        from autograder.instructor.slurm.grading import from_arguments as slurm_grading

        slurm = slurm_grading(args, command="grade")
    if args.docker:
        try:
            from autograder.instructor.grading.docker import grading as docker_grading
        except ImportError:
            raise NotegradeError("--docker needs autograder/instructor/grading/docker/grading.py, which this install "
                                 "lacks; drop --docker to grade in local processes") from None
        if args.python is not None:
            raise NotegradeError("--python does not apply with --docker (the image's own runtime grades)")
        return int(docker_grading.grade_and_report(
            submission=args.submission, autograder=args.autograder, metadata=args.metadata, out=args.out,
            image=args.image, jobs=args.jobs, base_image=args.base_image, batch=args.batch) or 0)
    for flag, value in (("--image", args.image), ("--base-image", args.base_image)):
        if value is not None:
            raise NotegradeError(f"{flag} only applies with --docker")
    return grade_and_report(submission=args.submission, autograder=args.autograder, metadata=args.metadata,
                            out=args.out, jobs=args.jobs, python=args.python, slurm=slurm,
                            is_batch=args.batch)
