"""What ``submission_metadata.yml`` in Gradescope's export says, read defensively.

Kept apart from the archive handling in :mod:`autograder.instructor.export.archive` because this is the
part that guesses at an undocumented format: the YAML is written by Ruby, so its keys are Ruby
symbols (``:submitters:``, ``:created_at:``, ``:score:``, ``:status:``, ``:results:``,
``:history:``), its values may carry Ruby tags, and its times are Ruby's ``Time#to_s``.  Every
field relied on is checked here, and :func:`parse_entry` raises a :class:`NotegradeError` naming
the entry and the field, which the reader turns into a reported problem instead of a crash.

Example
-------
>>> raw = {":submitters": [{":name": "Ada", ":sid": "1"}], ":created_at": "2024-10-02 01:15:00.000000000 -07:00"}
>>> entry = parse_entry("submission_7", raw, root=pathlib.Path("."), warnings=[])
>>> entry.submission_id, entry.submitters[0].label, entry.created_at.isoformat()
('7', 'Ada (1)', '2024-10-02T01:15:00-07:00')
"""
from __future__ import annotations

import datetime as dt
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from autograder.errors import NotegradeError

METADATA_NAME = "submission_metadata.yml"
SUBMISSION_FOLDER_RE = re.compile(r"^submission_(\d+)$")


@dataclass(frozen=True)
class Submitter:
    name: str
    sid: str
    email: str

    @property
    def label(self) -> str:
        """How messages name this student."""
        return f"{self.name or '?'} ({self.sid or self.email})"


@dataclass(frozen=True)
class HistoryItem:
    """An earlier submission of the same student(s), as recorded in ``:history:``."""

    submission_id: str
    created_at: dt.datetime | None
    score: float | None
    status: str
    results: dict[str, Any] | None = None  # that submission's results.json (a rate-limited one keeps its held-out result)


@dataclass
class ExportEntry:
    """One active submission of the export."""

    key: str  # the folder name, e.g. "submission_123456"
    submission_id: str  # "123456"
    folder: pathlib.Path | None  # None when the archive lacks the folder (reported)
    submitters: list[Submitter]
    created_at: dt.datetime  # always timezone-aware
    recorded_score: float | None  # what Gradescope recorded, for the diff
    status: str
    recorded_results: dict[str, Any] | None
    history: list[HistoryItem] = field(default_factory=list)


class _TolerantLoader(yaml.SafeLoader):
    """SafeLoader that reads Ruby-tagged nodes (``!ruby/object:BigDecimal``, hashes with
    indifferent access, ...) as their plain value instead of refusing the whole file."""


def _construct_tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)
    if "BigDecimal" in tag_suffix and ":" in value:
        return value.split(":", 1)[1]  # Ruby dumps BigDecimal as "18:0.95e2"; the number is after ':'
    return value


_TolerantLoader.add_multi_constructor("!", _construct_tagged)


def load_metadata_yaml(metadata_path: pathlib.Path) -> dict:
    """The mapping of submission folders in ``submission_metadata.yml``; raises on anything else."""
    try:
        data = yaml.load(metadata_path.read_text(encoding="utf-8"), Loader=_TolerantLoader)  # noqa: S506 (safe subclass)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise NotegradeError(f"{metadata_path}: not readable YAML ({err})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise NotegradeError(f"{metadata_path}: expected a mapping of submission folders, got {type(data).__name__}")
    return data


def _sym(mapping: dict, name: str) -> Any:
    """Value of a Ruby-symbol key (``:name``), also accepting the plain key."""
    if f":{name}" in mapping:
        return mapping[f":{name}"]
    return mapping.get(name)


def parse_datetime(value: Any, *, what: str) -> dt.datetime:
    """A timezone-aware datetime from a YAML timestamp, ISO 8601 or Ruby's ``Time#to_s`` text.

    >>> parse_datetime("2024-10-02 01:15:00.123456789 -07:00", what="x").isoformat()
    '2024-10-02T01:15:00.123456-07:00'
    """
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        # Ruby writes nanoseconds and a space before the offset; Python wants at most 6 digits.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        text = re.sub(r"\s+([+-]\d{2}:?\d{2}|Z|UTC)$", r"\1", text).replace("UTC", "+00:00")
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise NotegradeError(f"{what}: {value!r} is not a date and time (use ISO 8601, e.g. 2024-10-01T23:59:00-07:00)") from None
    else:
        raise NotegradeError(f"{what}: expected a date and time, got {value!r}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        shown = repr(str(value))  # YAML hands over naive timestamps as datetimes: show them as written
        raise NotegradeError(f"{what}: {shown} has no time zone; add one, e.g. 2024-10-01T23:59:00-07:00")
    return parsed


def _score(value: Any, *, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise NotegradeError(f"{what}: score {value!r} is not a number") from None


def _submitters(raw: Any, *, where: str) -> list[Submitter]:
    if not isinstance(raw, list) or not raw:
        raise NotegradeError(f"{where}: no :submitters: list")
    people = []
    for i, person in enumerate(raw):
        if not isinstance(person, dict):
            raise NotegradeError(f"{where}: submitter {i + 1} is not a mapping")
        sid, email = _sym(person, "sid"), _sym(person, "email")
        if not sid and not email:
            raise NotegradeError(f"{where}: submitter {i + 1} has neither :sid: nor :email:")
        people.append(Submitter(name=str(_sym(person, "name") or ""), sid=str(sid or ""), email=str(email or "")))
    return people


def _history(raw: Any, *, where: str, warnings: list[str]) -> list[HistoryItem]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        warnings.append(f"{where}: :history: is not a list; ignored")
        return []
    items = []
    for i, item in enumerate(raw):
        try:
            if not isinstance(item, dict):
                raise NotegradeError("not a mapping")
            created = _sym(item, "created_at")
            items.append(HistoryItem(
                submission_id=str(_sym(item, "id") or ""),
                created_at=parse_datetime(created, what=":created_at:") if created is not None else None,
                score=_score(_sym(item, "score"), what=":score:"),
                status=str(_sym(item, "status") or ""),
                results=_sym(item, "results") if isinstance(_sym(item, "results"), dict) else None,
            ))
        except NotegradeError as err:
            warnings.append(f"{where}: :history: item {i + 1} unreadable ({err}); ignored")
    return items


def parse_entry(key: Any, raw: Any, *, root: pathlib.Path, warnings: list[str]) -> ExportEntry:
    """One ``submission_<id>:`` entry; raises :class:`NotegradeError` when it cannot be used."""
    where = f"{METADATA_NAME}: {key}"
    match = SUBMISSION_FOLDER_RE.match(str(key))
    if not match:
        raise NotegradeError(f"{where}: key is not a submission folder name (submission_<id>)")
    if not isinstance(raw, dict):
        raise NotegradeError(f"{where}: value is not a mapping")
    created = _sym(raw, "created_at")
    if created is None:
        raise NotegradeError(f"{where}: no :created_at: (needed for the late penalty)")
    results = _sym(raw, "results")
    if results is not None and not isinstance(results, dict):
        warnings.append(f"{where}: :results: is not a mapping; ignored")
        results = None
    folder = root / str(key)
    return ExportEntry(
        key=str(key),
        submission_id=match.group(1),
        folder=folder if folder.is_dir() else None,
        submitters=_submitters(_sym(raw, "submitters"), where=where),
        created_at=parse_datetime(created, what=f"{where}: :created_at:"),
        recorded_score=_score(_sym(raw, "score"), what=where),
        status=str(_sym(raw, "status") or ""),
        recorded_results=results,
        history=_history(_sym(raw, "history"), where=where, warnings=warnings),
    )
