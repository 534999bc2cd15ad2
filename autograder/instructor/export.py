"""Read Gradescope's "Export Submissions" archive and rebuild each submission's metadata.

The archive (a zip, or the directory it unpacks to) holds ``submission_metadata.yml`` and
one ``submission_<id>/`` folder per active submission, possibly nested one level down under
``assignment_<id>_export/``.  The YAML is written by Ruby, so its keys are Ruby symbols
(``:submitters:``, ``:created_at:``, ``:score:``, ``:status:``, ``:results:``, ``:history:``).
Gradescope documents none of this, so the reader checks every field it relies on and
*reports* the entries it cannot use instead of crashing on them.

The export carries no due dates: they come from the caller (``--due``/``--late-due`` or an
assignment TOML/JSON file), and per-student extensions from a CSV.  :func:`submission_metadata`
turns an entry into the ``submission_metadata.json`` Gradescope would have given the grader,
extensions written as ``users[].assignment`` overrides, so ``autograder/late.py`` applies them.

Example
-------
>>> import datetime as dt, pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "submission_7").mkdir()
>>> _ = (root / "submission_metadata.yml").write_text(
...     "submission_7:\\n  :submitters:\\n  - :name: Ada\\n    :sid: '1'\\n    :email: ada@x.edu\\n"
...     "  :created_at: 2024-10-02 01:15:00.000000000 -07:00\\n  :score: 90.0\\n")
>>> export = read_export(root)
>>> entry = export.entries[0]
>>> entry.submission_id, entry.submitters[0].name, entry.recorded_score
('7', 'Ada', 90.0)
>>> due = parse_datetime("2024-10-01T23:59:00-07:00", what="--due")
>>> meta = submission_metadata(entry=entry, assignment=AssignmentInfo(title="A2", due_date=due))
>>> meta["created_at"], meta["assignment"]["due_date"]
('2024-10-02T01:15:00-07:00', '2024-10-01T23:59:00-07:00')
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import pathlib
import re
import tomllib
import zipfile
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from autograder.errors import NotegradeError

METADATA_NAME = "submission_metadata.yml"
_FOLDER_RE = re.compile(r"^submission_(\d+)$")


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


@dataclass
class Export:
    root: pathlib.Path  # the directory holding submission_metadata.yml
    entries: list[ExportEntry]
    problems: list[str]  # entries that could not be used, and why
    warnings: list[str]  # entries used, with something worth knowing


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


# ---------------------------------------------------------------------------------------- YAML
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
            ))
        except NotegradeError as err:
            warnings.append(f"{where}: :history: item {i + 1} unreadable ({err}); ignored")
    return items


def _entry(key: Any, raw: Any, *, root: pathlib.Path, warnings: list[str]) -> ExportEntry:
    where = f"{METADATA_NAME}: {key}"
    match = _FOLDER_RE.match(str(key))
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


# ------------------------------------------------------------------------------ archive layout
def _find_metadata(base: pathlib.Path) -> pathlib.Path:
    candidates = [base / METADATA_NAME] + sorted(
        p / METADATA_NAME for p in base.iterdir() if p.is_dir() and p.name != "__MACOSX"
    )
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise NotegradeError(f"{base}: no {METADATA_NAME} at the top or one folder down; is this a Gradescope 'Export Submissions' archive?")
    if len(found) > 1:
        raise NotegradeError(f"{base}: several {METADATA_NAME} files ({', '.join(str(p) for p in found)}); unpack one export at a time")
    return found[0]


def extract_zip(archive: pathlib.Path, *, to: pathlib.Path) -> pathlib.Path:
    """Unpack ``archive`` into ``to`` (refusing paths that escape it); return ``to``."""
    to.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                name = member.filename
                if name.startswith("__MACOSX/"):
                    continue  # macOS resource forks: never submission files
                target = (to / name).resolve()
                if not target.is_relative_to(to.resolve()):
                    raise NotegradeError(f"{archive}: member {name!r} would unpack outside the target folder; refusing the archive")
                zf.extract(member, to)
    except zipfile.BadZipFile as err:
        raise NotegradeError(f"{archive}: not a readable zip ({err})") from None
    return to


def read_export(path: pathlib.Path | str, *, extract_to: pathlib.Path | None = None) -> Export:
    """Parse an export zip (unpacked into ``extract_to``) or unpacked directory.

    Unusable entries go to ``problems`` (never an exception); an unreadable archive or YAML
    file raises :class:`NotegradeError`.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise NotegradeError(f"{path}: no such export (give the zip from Gradescope's 'Export Submissions' or its unpacked folder)")
    if path.is_file():
        if extract_to is None:
            raise ValueError("read_export: a zip needs extract_to (where the submission folders go)")
        path = extract_zip(path, to=extract_to)
    metadata_path = _find_metadata(path)
    root = metadata_path.parent
    try:
        data = yaml.load(metadata_path.read_text(encoding="utf-8"), Loader=_TolerantLoader)  # noqa: S506 (safe subclass)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise NotegradeError(f"{metadata_path}: not readable YAML ({err})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise NotegradeError(f"{metadata_path}: expected a mapping of submission folders, got {type(data).__name__}")
    entries, problems, warnings = [], [], []
    for key, raw in data.items():
        try:
            entry = _entry(key, raw, root=root, warnings=warnings)
        except NotegradeError as err:
            problems.append(f"{err}; skipped")
            continue
        if entry.folder is None:
            problems.append(f"{METADATA_NAME}: {key}: the archive has no {key}/ folder; cannot regrade it")
        entries.append(entry)
    listed = {e.key for e in entries} | {str(k) for k in data}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _FOLDER_RE.match(p.name)):
        if folder.name not in listed:
            warnings.append(f"{folder.name}/ has no entry in {METADATA_NAME}; not graded")
    return Export(root=root, entries=entries, problems=problems, warnings=warnings)


# ------------------------------------------------------------------- due dates and extensions
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
        {"submission_time": _iso(h.created_at), "score": h.score, "autograder_error": h.status == "failed", "results": {}}
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


def dedupe_students(entries: list[ExportEntry]) -> tuple[list[ExportEntry], list[str]]:
    """Keep each student's latest entry (a student in two groups appears twice); say who moved."""
    latest: dict[str, ExportEntry] = {}
    notes = []
    for entry in sorted(entries, key=lambda e: e.created_at):
        for person in entry.submitters:
            ident = person.sid or person.email.lower()
            if ident in latest and latest[ident] is not entry:
                notes.append(f"{person.label} appears in {latest[ident].key} and {entry.key}; using the later {entry.key}")
            latest[ident] = entry
    keep = {id(e) for e in latest.values()}
    ordered = [e for e in entries if id(e) in keep]
    # A group entry whose members all moved elsewhere is dropped; one with some members left stays
    # for those members only.
    result = []
    for entry in ordered:
        members = [p for p in entry.submitters if latest[p.sid or p.email.lower()] is entry]
        result.append(entry if len(members) == len(entry.submitters) else replace(entry, submitters=members))
    return result, notes
