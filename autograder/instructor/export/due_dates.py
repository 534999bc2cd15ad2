"""Due dates for an export, which carries none, and the ``submission_metadata.json`` that holds them.

Kept apart from reading the archive (:mod:`autograder.instructor.export.archive`) because the due dates
come from the caller, not Gradescope: ``--due``/``--late-due`` or an assignment TOML/JSON file,
and per-student extensions from a CSV.  :func:`submission_metadata` turns an export entry into the
``submission_metadata.json`` Gradescope would have given the grader, extensions written as
``users[].assignment`` overrides, so ``autograder/late.py`` applies them.

Example
-------
>>> info = load_assignment_info(due="2024-10-01T23:59:00-07:00", late_due="2024-10-03T23:59:00-07:00")
>>> info.title, info.late_due_date - info.due_date
('Assignment', datetime.timedelta(days=2))
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import pathlib
from dataclasses import dataclass
from typing import Any

from autograder.errors import NotegradeError
from autograder.instructor.export.metadata_yaml import ExportEntry, Submitter, parse_datetime
from autograder.rubric import tomllib  # tomli on Python 3.10


@dataclass(frozen=True)
class AssignmentInfo:
    """What the export does not carry: the due dates (and the title shown in gradebooks)."""

    title: str
    due_date: dt.datetime
    late_due_date: dt.datetime | None = None
    release_date: dt.datetime | None = None
    total_points: float = 100.0
    assignment_id: int | None = None
    course_id: int | None = None


@dataclass(frozen=True)
class Extension:
    due_date: dt.datetime
    late_due_date: dt.datetime | None


def load_assignment_info(
    *, path: pathlib.Path | None = None, title: str | None = None, due: str | None = None, late_due: str | None = None
) -> AssignmentInfo:
    """Due dates from an assignment TOML/JSON file, overridden by explicit options.

    The file may hold ``title``, ``due_date``, ``late_due_date``, ``release_date``,
    ``total_points``, ``id``, ``course_id`` (at the top or under an ``[assignment]`` table).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = pathlib.Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except FileNotFoundError:
            raise NotegradeError(f"{path}: no such assignment file") from None
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
            raise NotegradeError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({err})") from None
        data = data.get("assignment", data)
    src = str(path) if path else "options"
    due_value = due or data.get("due_date")
    if not due_value:
        raise NotegradeError(
            "the export has no due dates: give --due ISO (and --late-due ISO if late submissions are allowed) "
            "or --assignment FILE with due_date"
        )
    late_value = late_due or data.get("late_due_date")
    release = data.get("release_date")

    def when(value: Any, name: str) -> dt.datetime:
        # TOML has native datetimes; JSON and options give strings.
        return parse_datetime(value, what=f"{src}: {name}")

    info = AssignmentInfo(
        title=title or str(data.get("title") or "Assignment"),
        due_date=when(due_value, "due date"),
        late_due_date=when(late_value, "late due date") if late_value else None,
        release_date=when(release, "release_date") if release else None,
        total_points=float(data.get("total_points", 100.0)),
        assignment_id=data.get("id"),
        course_id=data.get("course_id"),
    )
    if info.late_due_date is not None and info.late_due_date < info.due_date:
        raise NotegradeError(f"{src}: the late due date {info.late_due_date.isoformat()} is before the due date {info.due_date.isoformat()}")
    return info


_KEY_COLUMNS = ("sid", "email", "student")
_DUE_COLUMNS = ("due_date", "due", "new_due_date")
_LATE_COLUMNS = ("late_due_date", "late_due", "new_late_due_date")


def load_extensions(path: pathlib.Path | str, *, assignment: AssignmentInfo) -> dict[str, Extension]:
    """Extensions CSV -> {sid or lower-cased email: Extension}.

    Columns (case-insensitive): ``sid`` and/or ``email`` (or ``student`` holding either),
    ``due_date``, optional ``late_due_date``.  Without a late due date the student keeps the
    class's late window length: their late due date moves by as much as their due date.
    """
    path = pathlib.Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = {name.strip().lower(): name for name in (reader.fieldnames or [])}
            rows = list(reader)
    except FileNotFoundError:
        raise NotegradeError(f"{path}: no such extensions file") from None
    keys = [header[c] for c in _KEY_COLUMNS if c in header]
    due_col = next((header[c] for c in _DUE_COLUMNS if c in header), None)
    late_col = next((header[c] for c in _LATE_COLUMNS if c in header), None)
    if not keys or due_col is None:
        raise NotegradeError(f"{path}: needs a 'sid' or 'email' column and a 'due_date' column (got {', '.join(header) or 'no header'})")
    extensions: dict[str, Extension] = {}
    for line, row in enumerate(rows, start=2):
        ids = [str(row.get(k) or "").strip() for k in keys]
        ids = [i.lower() if "@" in i else i for i in ids if i]
        if not ids:
            raise NotegradeError(f"{path}: line {line}: no sid or email")
        due = parse_datetime(row.get(due_col), what=f"{path}: line {line}: due date")
        late_text = (row.get(late_col) or "").strip() if late_col else ""
        if late_text:
            late = parse_datetime(late_text, what=f"{path}: line {line}: late due date")
        elif assignment.late_due_date is not None:
            late = assignment.late_due_date + (due - assignment.due_date)
        else:
            late = None
        if late is not None and late < due:
            raise NotegradeError(f"{path}: line {line}: the late due date is before the due date")
        for ident in ids:
            extensions[ident] = Extension(due_date=due, late_due_date=late)
    return extensions


def extension_for(person: Submitter, extensions: dict[str, Extension]) -> Extension | None:
    return extensions.get(person.sid) or extensions.get(person.email.lower())


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def submission_metadata(
    *, entry: ExportEntry, assignment: AssignmentInfo, extensions: dict[str, Extension] | None = None
) -> dict[str, Any]:
    """The ``submission_metadata.json`` Gradescope gives the grader, rebuilt from the export."""
    extensions = extensions or {}
    users = []
    for index, person in enumerate(entry.submitters):
        user: dict[str, Any] = {"email": person.email, "id": person.sid or index, "name": person.name, "sid": person.sid}
        ext = extension_for(person, extensions)
        if ext is not None:
            user["assignment"] = {
                "release_date": _iso(assignment.release_date),
                "due_date": _iso(ext.due_date),
                "late_due_date": _iso(ext.late_due_date),
            }
        users.append(user)
    previous = [
        {"submission_time": _iso(h.created_at), "score": h.score, "autograder_error": h.status == "failed",
         "results": h.results or {}}
        for h in entry.history
        if h.created_at is not None and h.created_at < entry.created_at
    ]
    return {
        "id": int(entry.submission_id),
        "created_at": entry.created_at.isoformat(),
        "submission_method": "upload",
        "assignment": {
            "due_date": _iso(assignment.due_date),
            "late_due_date": _iso(assignment.late_due_date),
            "release_date": _iso(assignment.release_date),
            "group_size": len(entry.submitters) if len(entry.submitters) > 1 else None,
            "group_submission": len(entry.submitters) > 1,
            "id": assignment.assignment_id,
            "course_id": assignment.course_id,
            "title": assignment.title,
            "total_points": f"{assignment.total_points:.1f}",
        },
        "users": users,
        "previous_submissions": previous,
    }
