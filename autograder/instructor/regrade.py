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

Example (Python; the CLI is ``notegrade regrade``)
-------
>>> from autograder.instructor.regrade import grades_table
>>> results = {"score": 7.0, "tests": [{"name": "1.1 Counts", "number": "1.1", "score": 7.0,
...            "max_score": 10.0, "extra_data": {"kind": "item"}}], "extra_data": {"late": {"penalty": 0.0}}}
>>> table = grades_table(rows=[{"sid": "1", "name": "Ada", "email": "a@x", "submission_id": "9",
...                             "created_at": "2024-10-01T10:00:00-07:00", "results": results}])
>>> table.loc[0, "sid"], float(table.loc[0, "1.1 Counts"]), float(table.loc[0, "total"])
('1', 7.0, 7.0)
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import hashlib
import html
import json
import math
import pathlib
import re
import shutil
import tempfile
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd
from tqdm import tqdm

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from autograder.instructor import export as gs_export

EXAMPLES = """examples:
  notegrade regrade assignment_4242_export.zip --autograder autograder.zip --due 2024-10-01T23:59:00-07:00 \\
      --late-due 2024-10-04T23:59:00-07:00 --extensions extensions.csv --jobs 2 --out regrade/
  notegrade regrade export_dir/ --autograder build/autograder/ --assignment a2.toml --docker --jobs 4
  notegrade report regrade/grades.csv --out class.html

The export has no due dates: give --due (and --late-due), or --assignment FILE (TOML/JSON with
title, due_date, late_due_date, total_points).  extensions.csv: columns sid and/or email, due_date
[, late_due_date]; all times ISO 8601 with a time zone.
"""
GradeFn = Callable[..., dict]


@dataclass
class RegradeSummary:
    """What ``main`` did, for the CLI and ``notegrade demo``."""

    out: pathlib.Path
    graded: int = 0  # graded in this run
    reused: int = 0  # skipped: already graded with the same autograder, metadata and files
    failed: list[str] = field(default_factory=list)  # submissions the grader could not grade
    changed: list[str] = field(default_factory=list)  # students whose score differs from Gradescope's
    problems: list[str] = field(default_factory=list)
    paths: dict[str, pathlib.Path] = field(default_factory=dict)


def _file_digest(path: pathlib.Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:  # in chunks: a hostile submission may hold a 2 GB file
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def sha256_of(path: pathlib.Path) -> str:
    """sha256 of a file, or of a directory's relative paths and bytes (caches excluded)."""
    if path.is_file():
        return _file_digest(path).hex()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        digest.update(rel.encode() + b"\0" + _file_digest(file))
    return digest.hexdigest()


# ----------------------------------------------------------------------------- reading results
def _is_item(test: dict) -> bool:
    kind = (test.get("extra_data") or {}).get("kind")
    return kind == "item" if kind else bool(test.get("number")) and float(test.get("max_score") or 0) > 0


def _column(test: dict) -> str:
    name, number = str(test.get("name") or ""), str(test.get("number"))
    return name if name.startswith(number) else f"{number} {name}".strip()


def _status(results: dict | None, error: str | None) -> str:
    if results is None:
        return f"not graded: {error}"
    if any((t.get("extra_data") or {}).get("kind") == "autograder_error" for t in results.get("tests", [])):
        return "autograder error"
    return "graded"


def grades_table(*, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per student from ``rows`` (student fields + ``results`` dict or None + ``error``)."""
    columns: dict[str, str] = {}  # item number -> column, in rubric order
    for row in rows:
        for test in (row.get("results") or {}).get("tests", []):
            if _is_item(test):
                columns.setdefault(str(test["number"]), _column(test))
    records = []
    for row in rows:
        results = row.get("results")
        extra = (results or {}).get("extra_data") or {}
        late = extra.get("late") or {}
        record = {k: row.get(k, "") for k in ("sid", "name", "email", "submission_id", "created_at")}
        record["status"] = _status(results, row.get("error"))
        seconds = late.get("late_seconds")
        record["late_seconds"] = float(seconds) if results is not None and seconds is not None else math.nan
        record["lateness"] = late.get("line", "") if results is not None else ""
        record["penalty"] = float(late.get("penalty") or 0.0) if results is not None else math.nan
        by_number = {str(t.get("number")): t for t in (results or {}).get("tests", []) if _is_item(t)}
        for number, column in columns.items():
            test = by_number.get(number)
            record[column] = float(test["score"]) if test is not None else math.nan
        accuracy = extra.get("heldout_accuracy")
        record["heldout_accuracy"] = float(accuracy) if accuracy is not None else math.nan
        record["total"] = float(results["score"]) if results is not None and "score" in results else math.nan
        records.append(record)
    base = ["sid", "name", "email", "submission_id", "created_at", "status", "late_seconds", "lateness", "penalty"]
    return pd.DataFrame.from_records(records, columns=base + list(columns.values()) + ["heldout_accuracy", "total"])


def item_maxima(results_list: list[dict]) -> list[dict[str, Any]]:
    """``[{number, column, max_score}]`` in rubric order, from any results.json that has them."""
    items: dict[str, dict[str, Any]] = {}
    for results in results_list:
        for test in results.get("tests", []):
            if _is_item(test):
                items.setdefault(str(test["number"]), {"number": str(test["number"]), "column": _column(test),
                                                       "max_score": float(test.get("max_score") or 0.0)})
    return list(items.values())


def canvas_table(*, grades: pd.DataFrame, assignment_column: str, points_possible: float) -> pd.DataFrame:
    """Canvas's gradebook import shape, with its "Points Possible" row.

    Canvas matches students on ID (its own user id, unknown here), SIS User ID and SIS Login ID:
    we fill SIS User ID with the sid and SIS Login ID with the email.  Ungraded students get an
    empty cell, which Canvas leaves unchanged.
    """
    header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment_column]
    rows = [["    Points Possible", "", "", "", "", f"{points_possible:.2f}"]]
    for _, g in grades.iterrows():
        total = "" if pd.isna(g["total"]) else f"{g['total']:.2f}"
        rows.append([g["name"], "", g["sid"], g["email"], "", total])
    return pd.DataFrame(rows, columns=header)


def score_changes(*, grades: pd.DataFrame, recorded: dict[str, float | None], tolerance: float = 0.005) -> pd.DataFrame:
    """Regraded vs recorded score per student; ``changed`` flags every difference (or a lost grade)."""
    frame = grades[["sid", "name", "email", "submission_id", "status", "total"]].copy()
    frame.insert(5, "gradescope_score", [recorded.get(str(s)) for s in frame["submission_id"]])
    frame = frame.rename(columns={"total": "regraded_score"})
    frame["gradescope_score"] = pd.to_numeric(frame["gradescope_score"])
    frame["delta"] = (frame["regraded_score"] - frame["gradescope_score"]).round(4)
    differs = frame["delta"].abs() > tolerance
    one_missing = frame["regraded_score"].isna() != frame["gradescope_score"].isna()
    frame["changed"] = differs.fillna(False) | one_missing
    return frame


def pooled_confusion(per_submission: dict[str, list[list[int]]]) -> list[list[int]] | None:
    """Sum of the students' held-out confusion matrices (all graded on the same held-out file)."""
    matrices = [m for m in per_submission.values() if m]
    if not matrices:
        return None
    size = len(matrices[0])
    same = [m for m in matrices if len(m) == size]
    return [[sum(m[i][j] for m in same) for j in range(size)] for i in range(size)]


# ----------------------------------------------------------------------------------- grading
def _default_grader(docker: bool, image: str | None, autograder: pathlib.Path) -> GradeFn:
    if not docker:
        from autograder.grade import grade_submission

        # quiet: the grader's own progress bar goes to its log, not across ours
        return functools.partial(grade_submission, quiet=True)
    try:
        from autograder.instructor import docker_grade
    except ImportError:
        raise NotegradeError("--docker needs autograder/instructor/docker_grade.py, which this install lacks; "
                             "drop --docker to grade in local processes") from None
    # Fail fast when there is no engine, and build (or find) the image once, not per submission.
    client = docker_grade.docker_client()
    with tempfile.TemporaryDirectory(prefix="notegrade-regrade-") as tmp:
        source = docker_grade.unpack_autograder(autograder, pathlib.Path(tmp))
        tag = docker_grade.ensure_image(client, source=source, tag=image)
    return functools.partial(docker_grade.grade_submission, image=tag, client=client)


def _grade_one(entry: gs_export.ExportEntry, *, work: pathlib.Path, metadata: dict, autograder: pathlib.Path,
               autograder_sha: str, grade: GradeFn) -> tuple[dict | None, str | None, bool]:
    """``(results, error, reused)`` for one submission; never raises."""
    work.mkdir(parents=True, exist_ok=True)
    meta_text = json.dumps(metadata, indent=2, sort_keys=True)
    key = {"autograder_sha256": autograder_sha, "metadata_sha256": hashlib.sha256(meta_text.encode()).hexdigest(),
           "submission_sha256": sha256_of(entry.folder)}
    key_path, results_path = work / "grade_key.json", work / "results.json"
    if key_path.is_file() and results_path.is_file():
        try:
            if json.loads(key_path.read_text()) == key:
                return json.loads(results_path.read_text()), None, True
        except (json.JSONDecodeError, OSError):
            pass  # a half-written earlier run: grade again
    key_path.unlink(missing_ok=True)
    (work / "error.txt").unlink(missing_ok=True)
    (work / "submission_metadata.json").write_text(meta_text)
    try:
        results = grade(submission=entry.folder, autograder=autograder, metadata=work / "submission_metadata.json",
                        out=work / "graded")
    except Exception as err:  # noqa: BLE001 — one submission's failure must not stop the batch
        detail = f"{type(err).__name__}: {err}"
        (work / "error.txt").write_text(detail + "\n\n" + traceback.format_exc())
        return None, detail, False
    results_path.write_text(json.dumps(results, indent=2))
    key_path.write_text(json.dumps(key, indent=2))  # last: marks the grade complete for resume
    return results, None, False


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "student"


def _write_student_reports(*, out: pathlib.Path, row: dict[str, Any], results: dict | None) -> None:
    from autograder.report import html_report, markdown_report

    stem = out / f"{_slug(row['sid'] or row['email'])}_{_slug(row['name'])}"
    head = (f"# {row['name']} ({row['sid'] or row['email']})\n\nSubmission {row['submission_id']}, "
            f"created {row['created_at']}.\n\n")
    if results is None:
        body = f"Not graded: {row.get('error')}\n"
        stem.with_suffix(".md").write_text(head + body)
        stem.with_suffix(".html").write_text(f"<!DOCTYPE html><html><body><pre>{html.escape(head + body)}</pre></body></html>")
        return
    stem.with_suffix(".md").write_text(head + markdown_report(results, audience="instructor"))
    page = html_report(results, audience="instructor")
    who = html.escape(f"{row['name']} ({row['sid'] or row['email']})")
    banner = f"<p><strong>{who}</strong>, submission {html.escape(str(row['submission_id']))}</p>"
    stem.with_suffix(".html").write_text(page.replace("<body>\n", "<body>\n" + banner + "\n", 1))


def _grade_all(jobs_in: list[tuple[gs_export.ExportEntry, dict]], *, out: pathlib.Path, autograder: pathlib.Path,
               grade: GradeFn, jobs: int, progress: bool) -> dict[str, tuple[dict | None, str | None, bool]]:
    autograder_sha = sha256_of(autograder)
    outcomes: dict[str, tuple[dict | None, str | None, bool]] = {}
    # Threads are enough: each grade runs in its own grader process (or container).
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(jobs_in), desc="regrade", unit="submission", disable=not progress) as bar:
        futures = {pool.submit(_grade_one, entry, work=out / "submissions" / entry.key, metadata=meta,
                               autograder=autograder, autograder_sha=autograder_sha, grade=grade): entry.key
                   for entry, meta in jobs_in}
        for future in cf.as_completed(futures):
            try:
                outcomes[futures[future]] = future.result()
            except Exception as err:  # noqa: BLE001 — e.g. an unreadable submission folder: that one only
                outcomes[futures[future]] = (None, f"{type(err).__name__}: {err}", False)
            bar.update(1)
    return outcomes


def main(*, export: pathlib.Path, autograder: pathlib.Path, out: pathlib.Path, jobs: int = 1, docker: bool = False,
         image: str | None = None, extensions: pathlib.Path | None = None, due: str | None = None,
         late_due: str | None = None, assignment: pathlib.Path | None = None, title: str | None = None,
         canvas_column: str | None = None, tolerance: float = 0.005, grade: GradeFn | None = None,
         progress: bool = True) -> RegradeSummary:
    """Regrade every usable submission of ``export`` and write the gradebooks into ``out``.

    ``grade`` replaces the grader (``autograder.grade.grade_submission``, or the Docker one with
    ``docker=True``); it is called as ``grade(submission=, autograder=, metadata=, out=)``.
    """
    export, autograder, out = pathlib.Path(export), pathlib.Path(autograder), pathlib.Path(out)
    if jobs < 1:
        raise NotegradeError(f"--jobs must be at least 1, got {jobs}")
    if not autograder.exists():
        raise NotegradeError(f"{autograder}: no such autograder zip or directory (build one with 'notegrade build')")
    info = gs_export.load_assignment_info(path=assignment, title=title, due=due, late_due=late_due)
    ext = gs_export.load_extensions(extensions, assignment=info) if extensions else {}
    out.mkdir(parents=True, exist_ok=True)
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
    outcomes = _grade_all(todo, out=out, autograder=autograder, grade=grade or _default_grader(docker, image, autograder),
                          jobs=jobs, progress=progress)
    rows, confusion = [], {}
    for entry in entries:
        results, error, reused = outcomes.get(entry.key, (None, "the export has no folder for it", False))
        summary.reused += reused
        summary.graded += results is not None and not reused
        if results is not None:
            confusion[entry.key] = (results.get("extra_data") or {}).get("confusion")
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
    column = canvas_column or info.title
    paths = {"grades": out / "grades.csv", "class_data": out / "grades.json", "canvas": out / "canvas.csv",
             "changes": out / "score_changes.csv", "reports": out / "reports", "problems": out / "problems.txt"}
    grades.to_csv(paths["grades"], index=False)
    canvas_table(grades=grades, assignment_column=column, points_possible=info.total_points).to_csv(paths["canvas"], index=False)
    changes.to_csv(paths["changes"], index=False)
    class_data = {
        "assignment": {"title": info.title, "due_date": info.due_date.isoformat(), "total_points": info.total_points,
                       "late_due_date": info.late_due_date.isoformat() if info.late_due_date else None},
        "items": item_maxima(all_results), "families": list(FAMILIES), "autograder_sha256": sha256_of(autograder),
        "confusion": {"per_submission": confusion, "pooled": pooled_confusion(confusion)},
    }
    paths["class_data"].write_text(json.dumps(class_data, indent=1))
    shutil.rmtree(paths["reports"], ignore_errors=True)  # no stale report of a student no longer in the export
    paths["reports"].mkdir()
    for row in rows:
        _write_student_reports(out=paths["reports"], row=row, results=row["results"])
    paths["problems"].write_text("".join(line + "\n" for line in summary.problems + summary.failed))
    summary.paths = paths
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export", type=pathlib.Path, help="the 'Export Submissions' zip, or its unpacked folder")
    parser.add_argument("--autograder", type=pathlib.Path, required=True, help="autograder zip or unpacked directory")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("regrade"), help="output directory")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    parser.add_argument("--docker", action="store_true", help="grade each submission in a container")
    parser.add_argument("--image", help="Docker image tag to use or build (with --docker)")
    parser.add_argument("--due", help="due date, ISO 8601 with time zone (the export has none)")
    parser.add_argument("--late-due", help="late due date, ISO 8601 with time zone")
    parser.add_argument("--assignment", type=pathlib.Path,
                        help="TOML/JSON with title, due_date, late_due_date, total_points (options override it)")
    parser.add_argument("--title", help="assignment title (Canvas column name unless --canvas-column)")
    parser.add_argument("--extensions", type=pathlib.Path, help="CSV: sid and/or email, due_date[, late_due_date]")
    parser.add_argument("--canvas-column", help="Canvas assignment column, e.g. 'Assignment 2 (123456)'")
    parser.add_argument("--tolerance", type=float, default=0.005, help="score difference still counted as unchanged")


def run(args: argparse.Namespace) -> int:
    summary = main(export=args.export, autograder=args.autograder, out=args.out, jobs=args.jobs, docker=args.docker,
                   image=args.image, extensions=args.extensions, due=args.due, late_due=args.late_due,
                   assignment=args.assignment, title=args.title, canvas_column=args.canvas_column,
                   tolerance=args.tolerance)
    print(f"graded {summary.graded} submission(s), reused {summary.reused} from an earlier run, "
          f"{len(summary.failed)} could not be graded")
    for line in summary.failed:
        print(f"  not graded: {line}")
    if summary.problems:
        print(f"{len(summary.problems)} export problem(s), listed in {summary.paths['problems']}")
    print(f"{len(summary.changed)} student(s) whose score differs from Gradescope's:")
    for line in summary.changed:
        print(f"  {line}")
    for name, path in summary.paths.items():
        print(f"{name:>10}: {path}")
    return 1 if summary.failed else 0
