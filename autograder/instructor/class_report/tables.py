"""The class report's tables: the HTML helpers, and what grading did beyond the score.

:func:`errored_section` lists the students without a score (``status`` in grades.csv: "not
graded: ...", "autograder error") and the graded ones whose items errored, timed out or did not
run (``item_errors`` in grades.json, by submission id: a submission whose model.py does not even
import is otherwise only a low total in the histogram).  :func:`score_changes_section` shows
``score_changes.csv`` (the regrade against the scores Gradescope recorded), the changed rows
with the late penalty applied here.  Both are built by :mod:`.page`.

Example
-------
>>> grades = pd.DataFrame({"name": ["Ada", "Dev"], "sid": ["1", "4"], "submission_id": ["11", "14"],
...                        "status": ["graded", "graded"], "total": [100.0, 50.0]})
>>> data = {"item_errors": {"14": [{"number": "1.1", "status": "error", "message": "model.py has a syntax error"}]}}
>>> "1.1 (error): model.py has a syntax error" in errored_section(grades, data)
True
"""
from __future__ import annotations

import html
import math
import pathlib

import pandas as pd

from autograder.errors import NotegradeError
from autograder.report import fmt_points

RIGHT = ' class="r"'
CHANGE_COLUMNS = ("name", "sid", "submission_id", "gradescope_score", "regraded_score", "changed")


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td{RIGHT if i in right else ''}>{html.escape(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _score(value: object) -> str:
    number = pd.to_numeric(value, errors="coerce")
    return "no score" if pd.isna(number) else fmt_points(float(number))


def _what_errored(errors: list[dict]) -> str:
    """``1.1, 1.2, 4.1 (error): model.py has a syntax error ...``: items grouped by what the grader said."""
    groups: dict[tuple[str, str], list[str]] = {}
    for error in errors:
        if isinstance(error, dict):
            key = (str(error.get("status") or "error"), str(error.get("message") or ""))
            groups.setdefault(key, []).append(str(error.get("number") or "?"))
    return "; ".join(f"{', '.join(numbers)} ({status})" + (f": {message}" if message else "")
                     for (status, message), numbers in groups.items())


def errored_items(grades: pd.DataFrame, data: dict) -> dict[int, str]:
    """``{row index: what errored}`` for the rows of ``grades`` whose submission has item errors."""
    by_submission = data.get("item_errors")
    if not isinstance(by_submission, dict) or "submission_id" not in grades:
        return {}
    found = {}
    for index, submission in grades["submission_id"].items():
        errors = by_submission.get(str(submission))
        if isinstance(errors, list) and errors:
            found[index] = _what_errored(errors)
    return found


def errored_section(grades: pd.DataFrame, data: dict) -> str:
    """"Errored or not graded": students without a score, and graded submissions whose items errored."""
    status = grades["status"].fillna("").astype(str) if "status" in grades else pd.Series("", index=grades.index)
    items = errored_items(grades, data)
    rows = []
    for index, row in grades.iterrows():
        state = status[index] or ("graded" if pd.notna(row["total"]) else "not graded")
        if state == "graded" and pd.notna(row["total"]) and index not in items:
            continue
        shown, _, detail = state.partition(": ")
        shown = "graded, items errored" if shown == "graded" else shown
        what = "; ".join(part for part in (detail, items.get(index, "")) if part)
        rows.append([str(row["name"]), str(row.get("sid", "") if pd.notna(row.get("sid", "")) else ""), shown,
                     _score(row["total"]), what])
    parts = ["<h2>Errored or not graded</h2>"]
    if rows:
        parts.append(table(["student", "sid", "status", "total", "what errored"], rows, right={3}))
        parts.append(note("Rows with a total count in the figures below with the points their items earned (an item "
                          "that errored, timed out or did not run earns none); rows with no score are left out. An "
                          "autograder error is the grader's own failure, not the student's: regrade it."))
    else:
        parts.append(note("Every student was graded." if "item_errors" not in data else
                          "Every student was graded, and every item ran to a verdict."))
    if "item_errors" not in data:
        parts.append(note("grades.json has no per-item status (an older 'notegrade regrade' wrote it, or there is "
                          "none beside grades.csv), so items that errored in graded submissions are not listed: run "
                          "the regrade again (it reuses its grades) to list them."))
    return "\n".join(parts)


def read_regrade_csv(path: pathlib.Path, *, name: str, columns: "set[str] | tuple[str, ...]") -> pd.DataFrame:
    """One of regrade's CSV files (``name``: grades.csv, score_changes.csv) with at least ``columns``;
    a specific message when it is missing, unreadable or not ours."""
    try:
        frame = pd.read_csv(path, dtype={"sid": str, "submission_id": str})
    except FileNotFoundError:
        raise NotegradeError(f"{path}: no such {name} (write one with 'notegrade regrade')") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise NotegradeError(f"{path}: not a readable CSV ({err})") from None
    missing = set(columns) - set(frame.columns)
    if missing:
        raise NotegradeError(f"{path}: not a notegrade {name} (no {', '.join(sorted(missing))} column)")
    return frame


def read_score_changes(path: pathlib.Path) -> pd.DataFrame:
    frame = read_regrade_csv(path, name="score_changes.csv", columns=CHANGE_COLUMNS)
    frame["changed"] = frame["changed"].astype(str).str.strip().str.lower().isin({"true", "1", "yes"})
    return frame


def _change(row: pd.Series) -> str:
    before = pd.to_numeric(row["gradescope_score"], errors="coerce")
    after = pd.to_numeric(row["regraded_score"], errors="coerce")
    if pd.isna(after):
        return "score lost"
    if pd.isna(before):
        return "new score"
    delta = float(after) - float(before)
    return ("+" if delta > 0 else "−") + fmt_points(abs(delta)) if math.isfinite(delta) else ""


def score_changes_section(path: pathlib.Path, grades: pd.DataFrame) -> str:
    """"Score changes against Gradescope" from a regrade's score_changes.csv."""
    frame = read_score_changes(path)
    penalty = {}
    if {"sid", "submission_id", "penalty"} <= set(grades.columns):
        penalty = {(str(r["sid"]), str(r["submission_id"])): r["penalty"] for _, r in grades.iterrows()}
    changed = frame[frame["changed"]]
    parts = ["<h2>Score changes against Gradescope</h2>"]
    if len(changed):
        rows = []
        for _, r in changed.iterrows():
            late = pd.to_numeric(penalty.get((str(r["sid"]), str(r["submission_id"]))), errors="coerce")
            rows.append([str(r["name"]), "" if pd.isna(r["sid"]) else str(r["sid"]), _score(r["gradescope_score"]),
                         _score(r["regraded_score"]), _change(r), "" if pd.isna(late) else fmt_points(float(late))])
        parts.append(table(["student", "sid", "Gradescope", "regraded", "change", "late penalty here"], rows,
                           right={2, 3, 4, 5}))
    parts.append(note(f"{len(changed)} of {len(frame)} students' scores differ from the score Gradescope recorded "
                      f"(from {path.name}; the others match within 0.005 points). A change comes from what differs "
                      "between the two runs: the autograder or rubric, the due dates, extensions and late policy "
                      "given to the regrade, or a grading failure on one side. canvas.csv holds the regraded "
                      "scores."))
    return "\n".join(parts)
