"""Regrade a Gradescope export and write its gradebooks: the steps of ``notegrade regrade``, tied together.

:func:`regrade_export` reads the "Export Submissions" archive; each submission is graded in the
Gradescope layout with a ``submission_metadata.json`` rebuilt from the export: ``created_at``
comes from the export (never the clock), the due dates from ``--due``/``--late-due`` or
``--assignment`` (the export has none), extensions from ``--extensions``.  Grading runs
``--jobs`` submissions at a time (grader processes, or containers with ``--docker``); a rerun
skips submissions already graded with the same autograder, metadata and files (the sha256s are
kept in ``submissions/<id>/grade_key.json``); one broken submission never stops the batch.

Writes into ``--out``: ``grades.csv`` (one row per student), ``grades.json`` (item maxima,
per-submission confusion matrices and items that errored, read by ``notegrade report``), ``canvas.csv`` (Canvas
gradebook import), ``score_changes.csv`` (against the scores Gradescope recorded),
``reports/`` (per-student Markdown and HTML, fit to hand to students: no instructor-only line),
``submissions/<id>/`` (metadata, results.json, ``report.md``: the instructor's report, integrity included)
and ``problems.txt`` (export entries that could not be used, grading failures).

This module ties the steps together; the grading itself (jobs, resume, failures) is
:mod:`autograder.instructor.regrade.jobs`, the tables and reports it writes are
:mod:`autograder.instructor.regrade.outputs`, reading the export is
:mod:`autograder.instructor.export.archive`, and the command line is
:mod:`autograder.instructor.regrade.command`.

Example
-------
(Skipped by the doctest run: it needs a Gradescope export and an autograder zip; tests/instructor/regrade/ runs it.)

>>> summary = regrade_export(export=pathlib.Path("export.zip"), autograder=pathlib.Path("autograder.zip"),
...                          out=pathlib.Path("regrade"), due="2024-10-01T23:59:00-07:00", jobs=2)  # doctest: +SKIP
>>> summary.graded, summary.failed, summary.paths["grades"]                     # doctest: +SKIP
(42, [], PosixPath('regrade/grades.csv'))
"""
from __future__ import annotations

import json
import pathlib
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autograder.atomic import PRIVATE, private_dir, write_atomically
from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from autograder.instructor.export import archive as gs_export
from autograder.instructor.grading.fanout import GradeFn, check_jobs
from autograder.instructor.grading.local import refuse_exposed_secrets, secret_paths
from autograder.instructor.regrade.jobs import default_grader, grade_all, sha256_of
from autograder.instructor.regrade.outputs import (
    canvas_table,
    grades_table,
    item_errors,
    item_maxima,
    pooled_confusion,
    score_changes,
    write_instructor_report,
    write_student_reports,
)

if TYPE_CHECKING:
    from autograder.instructor.slurm.grading import SlurmGrading


@dataclass
class RegradeSummary:
    """What :func:`regrade_export` did, for the CLI and ``notegrade demo``."""

    out: pathlib.Path
    graded: int = 0  # graded in this run
    reused: int = 0  # skipped: already graded with the same autograder, metadata and files
    failed: list[str] = field(default_factory=list)  # submissions the grader could not grade
    changed: list[str] = field(default_factory=list)  # students whose score differs from Gradescope's
    problems: list[str] = field(default_factory=list)
    paths: dict[str, pathlib.Path] = field(default_factory=dict)
    integrity: Any = None  # the --integrity analysis (autograder.instructor.class_integrity), if asked for


def regrade_export(*, export: pathlib.Path, autograder: pathlib.Path, out: pathlib.Path, jobs: int = 1,
                   docker: bool = False, image: str | None = None, extensions: pathlib.Path | None = None,
                   due: str | None = None, late_due: str | None = None, assignment: pathlib.Path | None = None,
                   title: str | None = None, canvas_column: str | None = None, tolerance: float = 0.005,
                   grade: GradeFn | None = None, progress: bool = True, slurm: "SlurmGrading | None" = None,
                   integrity: bool = False, python: str | None = None,
                   base_image: str | None = None) -> RegradeSummary:
    """Regrade every usable submission of ``export`` and write the gradebooks into ``out``.

    ``grade`` replaces the grader (``autograder.instructor.grading.one_submission.grade_submission``, or a container
    per submission with ``docker=True``); it is called as ``grade(submission=, autograder=, metadata=, out=)``.
    ``slurm`` grades on a Slurm cluster as a job array instead (``autograder/instructor/slurm/``).
    ``integrity``: then also compare the class's submissions into ``out/integrity/`` (no score changes).
    ``python`` and ``base_image`` are ``notegrade grade``'s ``--python`` and ``--base-image``.
    """
    _check_runtime_flags(docker=docker, python=python, base_image=base_image)
    export, autograder, out = pathlib.Path(export), pathlib.Path(autograder), pathlib.Path(out)
    check_jobs(jobs)
    if not autograder.exists():
        raise NotegradeError(f"{autograder}: no such autograder zip or directory (build one with 'notegrade build')")
    if not docker or integrity:  # at the uid level student code could read an open zip or export: refused first
        refuse_exposed_secrets([*secret_paths(autograder), export], python=python)
    _settle_slurm(out, slurm, integrity=integrity, progress=progress)  # before the export is unpacked again
    info = gs_export.load_assignment_info(path=assignment, title=title, due=due, late_due=late_due)
    ext = gs_export.load_extensions(extensions, assignment=info) if extensions else {}
    private_dir(out)  # 0700 when created: students' results and the unpacked export stay the instructor's
    if export.is_file():
        shutil.rmtree(out / "export", ignore_errors=True)  # a fresh unpack: no files left from another zip
    parsed = gs_export.read_export(export, extract_to=out / "export" if export.is_file() else None)
    entries, notes = gs_export.dedupe_students(parsed.entries)
    if not entries:
        raise NotegradeError(f"{export}: no usable submission in the export ({'; '.join(parsed.problems[:3]) or 'it is empty'})")
    summary = RegradeSummary(out=out, problems=parsed.problems + parsed.warnings + notes)
    known = {p.sid for e in entries for p in e.submitters} | {p.email.lower() for e in entries for p in e.submitters}
    summary.problems += [f"extensions: {who} is not in the export" for who in sorted(ext) if who not in known]

    todo = [(e, gs_export.submission_metadata(entry=e, assignment=info, extensions=ext)) for e in entries if e.folder]
    grader = grade or default_grader(docker, image, autograder, python=python, base_image=base_image,
                                     private=(export,))
    outcomes = (slurm.regrade if slurm else grade_all)(
        todo, out=out, autograder=autograder, grade=grader, jobs=jobs, progress=progress)
    rows, confusion, errored = [], {}, {}
    for entry in entries:
        results, error, reused = outcomes.get(entry.key, (None, "the export has no folder for it", False))
        summary.reused += reused
        summary.graded += results is not None and not reused
        if results is not None:
            confusion[entry.key] = (results.get("extra_data") or {}).get("confusion")
            write_instructor_report(out / "submissions" / entry.key / "report.md", results)
            if item_errors(results):
                errored[str(entry.submission_id)] = item_errors(results)
        elif entry.folder is not None:  # a missing folder is already in problems
            summary.failed.append(f"{entry.key}: {error}")
        for person in entry.submitters:
            rows.append({"sid": person.sid, "name": person.name, "email": person.email,
                         "submission_id": entry.submission_id, "created_at": entry.created_at.isoformat(),
                         "results": results, "error": error})
    grades = grades_table(rows=rows)
    recorded = {e.submission_id: e.recorded_score for e in entries}
    changes = score_changes(grades=grades, recorded=recorded, tolerance=tolerance)
    summary.changed = [f"{r['name']} ({r['sid'] or r['email']}): {r['gradescope_score']} -> {r['regraded_score']}"
                       for _, r in changes[changes["changed"]].iterrows()]
    all_results = [r for r, _, _ in outcomes.values() if r is not None]
    from autograder.instructor.grading.local import isolation_of, isolation_warning

    unisolated = isolation_warning([isolation_of(r).get("level") for r in all_results])  # results.json has the level
    if unisolated:
        summary.problems.append(unisolated)
    column = canvas_column or info.title
    paths = {"grades": out / "grades.csv", "class_data": out / "grades.json", "canvas": out / "canvas.csv",
             "changes": out / "score_changes.csv", "reports": out / "reports", "problems": out / "problems.txt"}
    write_private(paths["grades"], grades.to_csv(index=False))
    write_private(paths["canvas"], canvas_table(grades=grades, assignment_column=column,
                                                points_possible=info.total_points).to_csv(index=False))
    write_private(paths["changes"], changes.to_csv(index=False))
    class_data = {
        "assignment": {"title": info.title, "due_date": info.due_date.isoformat(), "total_points": info.total_points,
                       "late_due_date": info.late_due_date.isoformat() if info.late_due_date else None},
        "items": item_maxima(all_results), "families": list(FAMILIES), "autograder_sha256": sha256_of(autograder),
        "export_root": str(parsed.root.resolve()),
        "confusion": {"per_submission": confusion, "pooled": pooled_confusion(confusion)},
        "item_errors": errored,  # by grades.csv's submission_id; the class report lists them
    }
    write_private(paths["class_data"], json.dumps(class_data, indent=1))
    shutil.rmtree(paths["reports"], ignore_errors=True)  # no stale report of a student no longer in the export
    private_dir(paths["reports"])
    for row in rows:
        write_student_reports(out=paths["reports"], row=row, results=row["results"])
    write_private(paths["problems"], "".join(line + "\n" for line in summary.problems + summary.failed))
    summary.paths = paths
    if integrity:  # after the gradebooks are written: a failure here loses no grade
        from autograder.instructor.class_integrity.compare import after_regrade

        summary.integrity = after_regrade(entries=entries, results={k: r for k, (r, _, _) in outcomes.items()},
                                          export_root=parsed.root, autograder=autograder, out=out / "integrity",
                                          jobs=jobs, progress=progress, slurm=slurm)
        paths["integrity"] = summary.integrity.paths["csv"]
    return summary


def write_private(path: pathlib.Path, text: str) -> None:
    """A gradebook file: the class's grades, 0600 whatever the umask."""
    write_atomically(path, text, mode=PRIVATE, fsync=False)


def _check_runtime_flags(*, docker: bool, python: str | None, base_image: str | None) -> None:
    if python is not None and docker:
        raise NotegradeError("--python does not apply with --docker (the image's own runtime grades)")
    if base_image is not None and not docker:
        raise NotegradeError("--base-image only applies with --docker")


def _settle_slurm(out: pathlib.Path, slurm: "SlurmGrading | None", *, integrity: bool, progress: bool) -> None:
    """No Slurm array of an earlier run may still read the export this run unpacks again: with --slurm
    wait for them (grading, and the integrity logits), without refuse while one runs."""
    from autograder.instructor.slurm.grading import settle_earlier_runs
    from autograder.instructor.slurm.integrity import for_regrade

    if slurm is not None and slurm.resume and (out / "integrity" / "slurm" / f"job_{slurm.resume}.json").is_file() \
            and not (out / "slurm" / f"job_{slurm.resume}.json").is_file():
        raise NotegradeError(f"Slurm job {slurm.resume} computes the --integrity logits, it grades nothing: rerun the "
                             "same command without --resume (it reuses every grade and waits for that job)")
    settle_earlier_runs(out, slurm, progress=progress)
    if integrity:
        settle_earlier_runs(out / "integrity", for_regrade(slurm), progress=progress, doing="computing held-out logits")
