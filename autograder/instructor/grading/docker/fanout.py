"""Grade submissions in the autograder's Docker image, the way Gradescope runs them.

``notegrade grade SUBMISSION --docker`` (``autograder/instructor/grading/command.py`` dispatches here): builds the
image from the autograder zip or directory (the top-level ``Dockerfile``, ``FROM`` the base
image, setup.sh at build time) or reuses it, then runs ``/autograder/run_autograder`` in a fresh
container per submission with the submission, ``submission_metadata.json`` and the results
directory mounted at Gradescope's paths, no network, and the rubric's memory and CPU limits
(default 768 MB, 1 CPU) and time limit.  With a folder of submissions and ``--jobs N``, N
containers run at once; each submission gets its own ``results.json`` and a summary table is
printed.  A container that dies without results (out of memory, timeout) still gets a
results.json that says what happened.  The base image is ``gradescope/autograder-base:latest``
unless ``--base-image`` (``base_image=``) or else ``NOTEGRADE_BASE_IMAGE`` names another (e.g. a
local stand-in where no registry is reachable).

This module is the entry point and the fan-out (``--jobs``, outputs, summary); building the image
lives in ``docker_image.py`` and running one container in ``docker_run.py``, both re-exported here.

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

import concurrent.futures as cf
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from autograder.errors import NotegradeError
from autograder.instructor.grading.docker.container import (
    UID_LABEL,
    ContainerLimits,
    ContainerRun,
    failed_run,
    pick_student_uid,
    run_container,
)
from autograder.instructor.grading.docker.image import (
    GRADESCOPE_BASE_IMAGE,
    REQUIRED,
    base_image_name,
    docker_client,
    ensure_image,
    unpack_autograder,
)

__all__ = ["GRADESCOPE_BASE_IMAGE", "REQUIRED", "UID_LABEL", "ContainerLimits", "ContainerRun", "base_image_name",
           "docker_client", "ensure_image", "find_submissions", "grade_all", "grade_submission", "main",
           "pick_student_uid", "run_container", "summary_table", "unpack_autograder"]


def _limits(source: Path) -> ContainerLimits:
    from autograder.rubric import load_rubric

    return ContainerLimits.from_rubric(load_rubric(source / "rubric.toml", validate_checks=False))


def _write_outputs(run: ContainerRun, out: Path) -> None:
    from autograder.report import html_report
    from autograder.results import write_json_atomically

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "results.json", run.results)
    (out / "report.html").write_text(html_report(run.results, audience="instructor"))
    (out / "stdout").write_text(run.logs)  # what Gradescope shows instructors as the autograder's output
    container = {k: v for k, v in asdict(run).items() if k not in ("results", "logs")}
    (out / "container.json").write_text(json.dumps(container, indent=2) + "\n")


def grade_submission(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None,
                     image: str | None = None, base_image: str | None = None, client=None) -> dict:
    """Grade one submission in a container; write ``out/results.json`` (+ report.html); return the dict."""
    return _grade_runs([Path(submission)], autograder=Path(autograder), outs=[Path(out)], metadata=metadata,
                       image=image, base_image=base_image, client=client, jobs=1, quiet=True)[0].results


def _grade_runs(submissions: list[Path], *, autograder: Path, outs: list[Path], metadata: Path | None,
                image: str | None, base_image: str, client, jobs: int, quiet: bool,
                rebuild: bool = False) -> list[ContainerRun]:
    client = client or docker_client()
    with tempfile.TemporaryDirectory(prefix="notegrade-docker-") as tmp:
        source = unpack_autograder(autograder, Path(tmp))
        limits = _limits(source)
        tag = ensure_image(client, source=source, tag=image, base_image=base_image, rebuild=rebuild, quiet=quiet)

        def one(index: int) -> ContainerRun:
            try:
                run = run_container(client, image=tag, submission=submissions[index], metadata=metadata,
                                    limits=limits, work=Path(tmp) / f"job{index}")
            except Exception as err:  # noqa: BLE001 - one broken submission never stops the batch
                run = failed_run(submissions[index], err)
            _write_outputs(run, outs[index])
            return run

        with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(one, i) for i in range(len(submissions))]
            bar = tqdm(cf.as_completed(futures), total=len(futures), desc="grading", unit="sub", disable=quiet)
            for _ in bar:
                pass
            return [f.result() for f in futures]


def find_submissions(path: Path, *, batch: "bool | None" = None) -> list[Path]:
    """``[path]`` for one submission, or the submission folders of a batch (sorted): the same rule as
    local grading (:func:`autograder.instructor.grading.command._is_batch`; ``batch=True`` is ``--batch``)."""
    from autograder.instructor.grading.command import _is_batch, batch_problem

    path = Path(path)
    if not path.is_dir():
        raise NotegradeError(f"{path}: no such submission directory")
    if batch and batch_problem(path):
        raise NotegradeError(f"--batch: {batch_problem(path)}")
    if not (batch or (batch is None and _is_batch(path))):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")


def summary_table(runs: list[ContainerRun]) -> str:
    """One line per submission: score, wall time, peak memory, how the container ended."""
    rows = [("submission", "score", "wall s", "peak MB", "container")]
    for run in runs:
        res = run.results
        total = (res.get("extra_data") or {}).get("total_points")
        score = f"{float(res.get('score', 0)):g}" + (f"/{float(total):g}" if isinstance(total, (int, float)) else "")
        status = "timeout" if run.timed_out else f"exit {run.exit_code}" + (", OOM kill inside" if run.oom_killed else "")
        peak = f"{run.peak_memory_mb:.0f}" if run.peak_memory_mb is not None else "-"
        rows.append((Path(run.submission).name, score, f"{run.wall_s:.1f}", peak, status))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def grade_all(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None,
              image: str | None = None, jobs: int = 1, base_image: str | None = None, rebuild: bool = False,
              quiet: bool = False, client=None, batch: "bool | None" = None) -> list[ContainerRun]:
    """Grade one submission (``out/results.json``) or a folder of them (``out/<name>/results.json``)."""
    submissions = find_submissions(Path(submission), batch=batch)
    single = len(submissions) == 1 and submissions[0] == Path(submission)
    outs = [Path(out)] if single else [Path(out) / s.name for s in submissions]
    return _grade_runs(submissions, autograder=Path(autograder), outs=outs, metadata=metadata, image=image,
                       base_image=base_image, client=client, jobs=jobs, quiet=quiet, rebuild=rebuild)


def main(*, submission: Path, autograder: Path, out: Path, metadata: Path | None = None, image: str | None = None,
         jobs: int = 1, base_image: str | None = None, rebuild: bool = False, batch: "bool | None" = None) -> int:
    """:func:`grade_all` + the summary table; 1 when a container ended without results of its own."""
    if jobs < 1:
        raise NotegradeError(f"--jobs must be at least 1, got {jobs}")
    if jobs > 1 and len(find_submissions(Path(submission), batch=batch)) == 1 and not batch:
        raise NotegradeError(f"--jobs {jobs} grades several submissions at once, but {submission} is one submission "
                             "(a batch is a folder holding nothing but submission folders; say so with --batch)")
    runs = grade_all(submission=submission, autograder=autograder, out=out, metadata=metadata, image=image,
                     jobs=jobs, base_image=base_image, rebuild=rebuild, batch=batch)
    print(summary_table(runs))
    print(f"results in {Path(out)}")
    failed = [r for r in runs if "container_error" in (r.results.get("extra_data") or {})]
    return 1 if failed else 0
