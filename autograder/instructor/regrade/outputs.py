"""What a regrade writes, built from the results.json of each graded submission.

Kept apart from :mod:`autograder.instructor.regrade.run` (which reads the export and drives the grading)
because these are pure functions of the results: the rows of ``grades.csv`` (one per student, item
columns in rubric order), ``canvas.csv`` (Canvas's gradebook import), ``score_changes.csv``
(against the scores Gradescope recorded), the item maxima, pooled confusion matrix and items that
did not run to a verdict of ``grades.json``, the per-student Markdown and HTML reports (what a student
may see once grades are published: never the instructor-only integrity line) and the instructor's
report of each submission.

Example
-------
>>> results = {"score": 7.0, "tests": [{"name": "1.1 Counts", "number": "1.1", "score": 7.0, "max_score": 10.0}]}
>>> item_maxima([results])
[{'number': '1.1', 'column': '1.1 Counts', 'max_score': 10.0}]
>>> results["tests"][0].update(output="model.py has a syntax error at line 3\\n", extra_data={"kind": "item", "status": "error"})
>>> item_errors(results)
[{'number': '1.1', 'column': '1.1 Counts', 'status': 'error', 'message': 'model.py has a syntax error at line 3'}]
"""
from __future__ import annotations

import html
import math
import pathlib
import re
from typing import Any

import pandas as pd

from autograder.atomic import PRIVATE, write_atomically
from autograder.results import is_autograder_error


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
    if is_autograder_error(results):
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


def item_errors(results: dict | None) -> list[dict[str, str]]:
    """The items of a results.json that did not run to a verdict (status error, timeout or not run),
    with the first line of what the grader said: a graded submission whose code could not even be
    imported is otherwise only a low total in grades.csv."""
    errors = []
    for test in (results or {}).get("tests", []):
        status = str((test.get("extra_data") or {}).get("status") or "ran")
        if _is_item(test) and status != "ran":
            lines = [line.strip().lstrip("✗ ") for line in str(test.get("output") or "").splitlines() if line.strip()]
            errors.append({"number": str(test.get("number")), "column": _column(test), "status": status,
                           "message": (lines[0] if lines else "")[:300]})
    return errors


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


# ----------------------------------------------------------------------------------- reports
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "student"


def write_student_reports(*, out: pathlib.Path, row: dict[str, Any], results: dict | None) -> None:
    """``out/<sid>_<name>.md`` and ``.html``, meant to be handed to the student: the ``published``
    audience of :mod:`autograder.report` (no hidden line: no integrity verdict, no grader log)."""
    from autograder.report import html_report, markdown_report

    stem = out / f"{_slug(row['sid'] or row['email'])}_{_slug(row['name'])}"

    def write(path: pathlib.Path, text: str) -> None:  # a student's grade: the instructor's until shared
        write_atomically(path, text, mode=PRIVATE, fsync=False)

    head = (f"# {row['name']} ({row['sid'] or row['email']})\n\nSubmission {row['submission_id']}, "
            f"created {row['created_at']}.\n\n")
    if results is None:
        body = f"Not graded: {row.get('error')}\n"
        write(stem.with_suffix(".md"), head + body)
        write(stem.with_suffix(".html"), f"<!DOCTYPE html><html><body><pre>{html.escape(head + body)}</pre></body></html>")
        return
    write(stem.with_suffix(".md"), head + markdown_report(results, audience="published"))
    page = html_report(results, audience="published")
    who = html.escape(f"{row['name']} ({row['sid'] or row['email']})")
    banner = f"<p><strong>{who}</strong>, submission {html.escape(str(row['submission_id']))}</p>"
    write(stem.with_suffix(".html"), page.replace("<body>\n", "<body>\n" + banner + "\n", 1))


def write_instructor_report(path: pathlib.Path, results: dict) -> None:
    """The whole report of one submission, hidden lines included (the integrity verdict), for instructors:
    beside its results.json in ``submissions/<id>/``, never in ``reports/``."""
    from autograder.report import markdown_report

    write_atomically(path, markdown_report(results, audience="instructor"), mode=PRIVATE, fsync=False)
