"""Late penalty from ``submission_metadata.json`` and the rubric's :class:`~autograder.rubric.LatePolicy`.

Lateness is ``created_at`` minus the due date, in elapsed time (a "day" is 24 h even across a DST
change), never the clock, so regrades are reproducible.  The due dates are the student's own
(``users[].assignment.due_date`` / ``late_due_date``, an extension; for a group, the latest one)
when present, else ``assignment.*``.  A submission within the grace period is not late at all;
past it, lateness counts from the due date.  Partial days (or hours) round per the policy (default:
ceiling, so exactly 24 h late is 1 day and 24 h 1 s is 2).  Missing or unreadable metadata (a local
run) means no penalty and a note saying why.

Example
-------
>>> from autograder.rubric import LatePolicy
>>> metadata = {"created_at": "2024-10-09T02:04:00-07:00",
...             "assignment": {"due_date": "2024-10-07T23:59:00-07:00", "late_due_date": None}}
>>> late = assess_late_penalty(metadata=metadata, policy=LatePolicy(amount=3), earned=90, total=100)
>>> late.line
'submitted 1 day 2 h 5 min late → 2 days × 3 points = −6'
>>> late.penalty
6.0
"""
from __future__ import annotations

import datetime as dt
import json
import pathlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from autograder.rubric import LatePolicy

_UNIT = {"day": dt.timedelta(days=1), "hour": dt.timedelta(hours=1)}
_FRACTION_RE = re.compile(r"\.(\d+)")


@dataclass(frozen=True)
class LatePenalty:
    """What lateness costs this submission; ``penalty`` is in points, already capped at ``earned``."""

    penalty: float
    line: str  # one sentence for the test line and the report
    late_seconds: float = 0.0
    units: float = 0.0  # charged days/hours after rounding
    zeroed: bool = False  # submitted after the late due date under a zero-after policy
    created_at: str | None = None
    due_date: str | None = None
    late_due_date: str | None = None
    note: str = ""  # why there is no penalty, or what was odd about the metadata

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_metadata(path: str | pathlib.Path) -> tuple[dict | None, str]:
    """``(metadata, note)``: the parsed JSON object, or ``None`` and the reason it can't be used."""
    path = pathlib.Path(path)
    if not path.is_file():
        return None, f"no {path.name} (a local run?): no late penalty applied"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path.name} is not valid JSON ({err}): no late penalty applied"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object: no late penalty applied"
    return data, ""


def metadata_problem(metadata: dict) -> str:
    """What keeps ``metadata`` from dating the submission against its due date, or "" when nothing does
    (``notegrade grade --metadata FILE`` refuses such a file instead of grading without a penalty)."""
    if metadata.get("created_at") is None:
        return "no created_at"
    created, created_note = parse_timestamp(metadata["created_at"])
    if created is None:
        return f"created_at: {created_note}"
    due_raw, _, source = _due_dates(metadata)
    if due_raw is None:
        return "no assignment.due_date"
    due, due_note = parse_timestamp(due_raw)
    if due is None:
        return f"{'users[].assignment' if source else 'assignment'}.due_date: {due_note}"
    return ""


def parse_timestamp(value: Any) -> tuple[dt.datetime | None, str]:
    """``(aware datetime, note)`` from an ISO 8601 string; ``None`` and why when unreadable.

    Accepts what Python 3.10's ``fromisoformat`` does not: a ``Z`` suffix, ``+0000`` offsets and
    1-9 fractional digits.  A timestamp without a time zone is read as UTC, with a note.
    """
    if not isinstance(value, str) or not value.strip():
        return None, f"{value!r} is not a timestamp"
    text = value.strip()
    text = re.sub(r"[zZ]$", "+00:00", text)
    text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text)
    text = _FRACTION_RE.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return None, f"{value!r} is not an ISO 8601 timestamp"
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=dt.timezone.utc), f"{value!r} has no time zone; read as UTC"
    return stamp, ""


def _due_dates(metadata: dict) -> tuple[Any, Any, str]:
    """Raw ``(due_date, late_due_date, source)``: the latest per-student extension, else the assignment's."""
    extensions = []
    for user in metadata.get("users") or []:
        own = user.get("assignment") if isinstance(user, dict) else None
        if isinstance(own, dict) and own.get("due_date"):
            stamp, _ = parse_timestamp(own["due_date"])
            if stamp is not None:
                extensions.append((stamp, own.get("due_date"), own.get("late_due_date"), user.get("name") or user.get("email")))
    if extensions:
        _, due, late_due, who = max(extensions, key=lambda e: e[0])
        return due, late_due, f"extension for {who}" if who else "per-student extension"
    assignment = metadata.get("assignment") if isinstance(metadata.get("assignment"), dict) else {}
    return assignment.get("due_date"), assignment.get("late_due_date"), ""


def format_duration(delta: dt.timedelta) -> str:
    """``1 day 2 h 5 min`` (seconds only under a minute)."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = ([f"{days} day" + ("s" if days != 1 else "")] if days else []) + \
        ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes else [])
    return " ".join(parts)


def _fmt(number: float) -> str:
    return f"{number:.2f}".rstrip("0").rstrip(".")


def _charged_units(late: dt.timedelta, policy: LatePolicy) -> float:
    # Exact integer arithmetic on timedeltas: exactly 24 h is 1 day, 24 h + 1 µs is 2 (ceil).
    whole, remainder = divmod(late, _UNIT[policy.per])
    if policy.rounding == "ceil":
        return float(whole + (remainder > dt.timedelta(0)))
    if policy.rounding == "floor":
        return float(whole)
    return late / _UNIT[policy.per]


def assess_late_penalty(*, metadata: dict | None, policy: LatePolicy, earned: float, total: float,
                        metadata_note: str = "") -> LatePenalty:
    """The deduction for this submission; never more than ``earned`` (scores stay >= 0)."""
    if metadata is None:
        note = metadata_note or "no submission metadata (a local run?): no late penalty applied"
        return LatePenalty(penalty=0.0, line=note, note=note)
    created_raw = metadata.get("created_at")
    due_raw, late_due_raw, source = _due_dates(metadata)
    created, created_note = parse_timestamp(created_raw)
    due, due_note = parse_timestamp(due_raw)
    base = dict(created_at=created_raw if isinstance(created_raw, str) else None,
                due_date=due_raw if isinstance(due_raw, str) else None,
                late_due_date=late_due_raw if isinstance(late_due_raw, str) else None)
    if created is None or due is None:
        what = f"created_at: {created_note}" if created is None else f"due date: {due_note}"
        note = f"cannot read the submission time ({what}): no late penalty applied"
        return LatePenalty(penalty=0.0, line=note, note=note, **base)
    notes = [n for n in (created_note, due_note, source) if n]
    release, _ = parse_timestamp((metadata.get("assignment") or {}).get("release_date")) \
        if isinstance(metadata.get("assignment"), dict) else (None, "")
    if release is not None and created < release:
        notes.append("created_at is before the release date; check the metadata")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    late = created - due
    late_seconds = max(late.total_seconds(), 0.0)
    if late <= dt.timedelta(0):
        line = f"submitted on time ({format_duration(-late)} before the due date){suffix}"
        return LatePenalty(penalty=0.0, line=line, note="; ".join(notes), **base)
    late_text = f"submitted {format_duration(late)} late"
    late_due, late_due_note = parse_timestamp(late_due_raw) if late_due_raw else (None, "")
    if late_due_raw and late_due is None:
        notes.append(f"late due date ignored: {late_due_note}")
        suffix = f" ({'; '.join(notes)})"
    if late_due is not None and created > late_due and policy.zero_after_late_due:
        line = f"{late_text}, after the late due date → score 0 (−{_fmt(earned)}){suffix}"
        return LatePenalty(penalty=float(earned), line=line, late_seconds=late_seconds, zeroed=True,
                           note="; ".join(notes), **base)
    if late <= dt.timedelta(minutes=policy.grace_minutes):
        line = f"{late_text}, within the {_fmt(policy.grace_minutes)} min grace period → no penalty{suffix}"
        return LatePenalty(penalty=0.0, line=line, late_seconds=late_seconds, note="; ".join(notes), **base)
    units = _charged_units(late, policy)
    unit_name = policy.per + ("s" if units != 1 else "")
    if policy.unit == "points":
        raw_penalty = units * policy.amount
        per_text = f"{_fmt(policy.amount)} point" + ("s" if policy.amount != 1 else "")
        cap = policy.cap
    else:
        basis = earned if policy.percent_of == "earned" else total
        raw_penalty = units * policy.amount / 100.0 * basis
        per_text = f"{_fmt(policy.amount)}% of {_fmt(basis)} points"
        cap = None if policy.cap is None else policy.cap / 100.0 * basis
    line = f"{late_text} → {_fmt(units)} {unit_name} × {per_text} = −{_fmt(raw_penalty)}"
    penalty = raw_penalty
    if cap is not None and penalty > cap:
        penalty = cap
        line += f", capped at −{_fmt(cap)}"
    if penalty > earned:
        penalty = float(earned)
        line += f" (limited to the {_fmt(earned)} points earned)"
    return LatePenalty(penalty=float(penalty), line=line + suffix, late_seconds=late_seconds, units=units,
                       note="; ".join(notes), **base)
