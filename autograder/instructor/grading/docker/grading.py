"""Grade submissions in the autograder's Docker image, the way Gradescope runs them.

``notegrade grade SUBMISSION --docker`` (the CLI, ``autograder/instructor/grading/command.py``, calls
:func:`grade_and_report`): builds the image from the autograder zip or directory (the top-level
``Dockerfile``, ``FROM`` the base image, setup.sh at build time) or reuses it, then runs
``/autograder/run_autograder`` in a fresh container per submission with the submission,
``submission_metadata.json`` and the results directory mounted at Gradescope's paths, no network,
and the rubric's memory and CPU limits (default 768 MB, 1 CPU) and time limit.  With a folder of
submissions and ``--jobs N``, N containers run at once (the one fan-out,
:mod:`autograder.instructor.grading.fanout`); each submission gets its own ``results.json`` and the
batch's summary table is printed.  A container that dies without results (out of memory, timeout)
still gets a results.json that says what happened.  The base image is
``gradescope/autograder-base:latest`` unless ``--base-image`` (``base_image=``) or else
``NOTEGRADE_BASE_IMAGE`` names another (e.g. a local stand-in where no registry is reachable).

This module turns the image into a grader for the fan-out (:class:`ContainerGrader`, made by
:func:`container_grader`, which ``regrade --docker`` uses too) and writes each container's outputs;
building the image is :mod:`.image`'s job and running one container :mod:`.container`'s.

Example
-------
>>> from autograder.rubric import parse_rubric
>>> rubric = parse_rubric('''
... title = "Demo"
... total_points = 10
... time_budget_s = 300
... [container]
... memory_mb = 1024
... [[items]]
... number = "1"
... title = "Parameter counts"
... points = 10
... check = "architecture_params"
... ''', validate_checks=False)
>>> ContainerLimits.from_rubric(rubric)
ContainerLimits(memory_mb=1024, cpus=1.0, timeout_s=420.0)
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.instructor.grading import batch as batches
from autograder.instructor.grading.docker import image as docker_image
from autograder.instructor.grading.docker.container import ContainerLimits, ContainerRun, failed_run, run_container
from autograder.instructor.grading.fanout import Job, check_jobs, grade_each
from autograder.instructor.grading.one_submission import check_metadata_file
from autograder.sandbox.cleanup import remove_tree


def _limits(source: Path) -> ContainerLimits:
    from autograder.rubric import load_rubric

    return ContainerLimits.from_rubric(load_rubric(source / "rubric.toml", validate_checks=False))


def _write_outputs(run: ContainerRun, out: Path) -> None:
    from autograder.atomic import PRIVATE, private_dir, write_atomically, write_json_atomically
    from autograder.report import html_report

    private_dir(out)  # a student's results: every file 0600 in a 0700 folder, whatever the umask
    write_json_atomically(out / "results.json", run.results, mode=PRIVATE)
    write_atomically(out / "report.html", html_report(run.results, audience="instructor"), mode=PRIVATE, fsync=False)
    # what Gradescope shows instructors as the autograder's output
    write_atomically(out / "stdout", run.logs, mode=PRIVATE, fsync=False)
    container = {k: v for k, v in asdict(run).items() if k not in ("results", "logs")}
    write_atomically(out / "container.json", json.dumps(container, indent=2) + "\n", mode=PRIVATE, fsync=False)


class ContainerGrader:
    """A grader for the fan-out: ``grade(submission=, autograder=, metadata=, out=)`` runs the submission in
    a fresh container of ``image`` (which holds the autograder already), writes ``out/results.json``,
    ``report.html``, ``stdout`` and ``container.json``, and returns the results; :attr:`runs` keeps how
    each container went (by ``out``), for the summary."""

    def __init__(self, *, client, image: str, limits: ContainerLimits) -> None:
        self.client, self.image, self.limits = client, image, limits
        self.runs: dict[Path, ContainerRun] = {}

    def __call__(self, *, submission: Path, autograder: "Path | None" = None, metadata: "Path | None" = None,
                 out: Path) -> dict:
        work = Path(tempfile.mkdtemp(prefix="notegrade-docker-"))  # the submission's copy, mounted in the container
        try:
            try:
                run = run_container(self.client, image=self.image, submission=Path(submission), metadata=metadata,
                                    limits=self.limits, work=work / "job")
            except Exception as err:  # noqa: BLE001 - as on Gradescope: a results.json that says what happened
                run = failed_run(Path(submission), err)
        finally:
            remove_tree(work)  # iterative: a submission's deep folder cannot make this raise
        _write_outputs(run, Path(out))
        self.runs[Path(out)] = run
        return run.results


def container_grader(autograder: Path, *, image: "str | None" = None, base_image: "str | None" = None, client=None,
                     rebuild: bool = False, quiet: bool = False) -> ContainerGrader:
    """Reach the engine (fail fast without one), build or find the autograder's image once, read the rubric's
    container limits: the grader every submission then goes through."""
    client = client or docker_image.docker_client()
    with tempfile.TemporaryDirectory(prefix="notegrade-docker-") as tmp:
        source = docker_image.unpack_autograder(Path(autograder), Path(tmp))
        limits = _limits(source)
        tag = docker_image.ensure_image(client, source=source, tag=image, base_image=base_image, rebuild=rebuild,
                                        quiet=quiet)
    return ContainerGrader(client=client, image=tag, limits=limits)


def grade_in_container(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None,
                       image: str | None = None, base_image: str | None = None, client=None) -> dict:
    """Grade one submission in a container; write ``out/results.json`` (+ report.html); return the dict."""
    grader = container_grader(autograder, image=image, base_image=base_image, client=client, quiet=True)
    return grader(submission=Path(submission), autograder=Path(autograder), metadata=metadata, out=Path(out))


def find_submissions(path: Path, *, batch: "bool | None" = None) -> list[Path]:
    """``[path]`` for one submission, or the submission folders of a batch (sorted): the same rules as
    local grading (:mod:`autograder.instructor.grading.batch`; ``batch=True`` is ``--batch``)."""
    path = Path(path)
    if not path.is_dir():
        raise NotegradeError(f"{path}: no such submission directory")
    return batches.batch_folders(path) if batches.is_batch(path, batch) else [path]


def container_row(run: ContainerRun) -> dict:
    """A batch summary row (:func:`autograder.instructor.grading.batch.summary_table`) for one container:
    its wall time, its peak memory, and how it ended as the status."""
    def number(value) -> "float | None":  # the container wrote results.json: only numbers reach the table
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    results = run.results
    status = "timeout" if run.timed_out else f"exit {run.exit_code}" + (", OOM kill inside" if run.oom_killed else "")
    return {"name": Path(run.submission).name, "score": number(results.get("score")),
            "total": number((results.get("extra_data") or {}).get("total_points")), "seconds": round(run.wall_s, 1),
            "peak_mb": run.peak_memory_mb, "status": status}


def grade_in_containers(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None,
                        image: str | None = None, jobs: int = 1, base_image: str | None = None, rebuild: bool = False,
                        quiet: bool = False, client=None, batch: "bool | None" = None) -> list[ContainerRun]:
    """Grade one submission (``out/results.json``) or a folder of them (``out/<name>/results.json``),
    ``jobs`` containers at a time; how each container went, in order."""
    submissions = find_submissions(Path(submission), batch=batch)
    single = len(submissions) == 1 and submissions[0] == Path(submission)
    grader = container_grader(autograder, image=image, base_image=base_image, client=client, rebuild=rebuild,
                              quiet=quiet)
    todo = [Job(s.name, s, Path(out) if single else Path(out) / s.name, metadata) for s in submissions]
    done = grade_each(todo, grader, autograder=autograder, parallel=jobs, progress=not quiet)
    # A job whose outputs could not even be written (the fan-out caught it) still gets a run that says so.
    return [grader.runs.get(g.job.out) or failed_run(g.job.submission, g.error) for g in done]


def grade_and_report(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None,
                     image: str | None = None, jobs: int = 1, base_image: str | None = None, rebuild: bool = False,
                     batch: "bool | None" = None) -> int:
    """:func:`grade_in_containers` + the summary table; 1 when a container ended without results of its own."""
    check_jobs(jobs)
    if metadata is not None:
        check_metadata_file(metadata)
    single = find_submissions(Path(submission), batch=batch) == [Path(submission)]
    if jobs > 1 and single:
        raise NotegradeError(f"--jobs {jobs} grades several submissions at once, but {submission} is one submission "
                             "(a batch is a folder of submission folders; say so with --batch)")
    runs = grade_in_containers(submission=submission, autograder=autograder, out=out, metadata=metadata, image=image,
                               jobs=jobs, base_image=base_image, rebuild=rebuild, batch=batch)
    ignored = [] if single else batches.ignored_rows(Path(submission))  # files beside the folders: "ignored" rows
    print(batches.summary_table([container_row(run) for run in runs] + ignored))
    print(f"results in {Path(out)}")
    failed = [r for r in runs if "container_error" in (r.results.get("extra_data") or {})]
    return 1 if failed else 0
