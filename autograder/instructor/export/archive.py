"""Read Gradescope's "Export Submissions" archive and rebuild each submission's metadata.

The archive (a zip, or the directory it unpacks to) holds ``submission_metadata.yml`` and
one ``submission_<id>/`` folder per active submission, possibly nested one level down under
``assignment_<id>_export/``.  The YAML is written by Ruby, so its keys are Ruby symbols
(``:submitters:``, ``:created_at:``, ``:score:``, ``:status:``, ``:results:``, ``:history:``).
Gradescope documents none of this, so the reader checks every field it relies on and
*reports* the entries it cannot use instead of crashing on them
(:mod:`autograder.instructor.export.metadata_yaml`).

The export carries no due dates: they come from the caller (``--due``/``--late-due`` or an
assignment TOML/JSON file), and per-student extensions from a CSV.  :func:`submission_metadata`
turns an entry into the ``submission_metadata.json`` Gradescope would have given the grader,
extensions written as ``users[].assignment`` overrides, so ``autograder/late.py`` applies them
(:mod:`autograder.instructor.export.due_dates`).  This module is the entry point: it unpacks
the archive, finds the YAML and re-exports the public names of both.

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

import pathlib
import zipfile
from dataclasses import dataclass, replace

from autograder.atomic import PRIVATE, PendingFile, private_dir
from autograder.errors import NotegradeError
from autograder.instructor.export.due_dates import (  # noqa: F401  (re-exported)
    AssignmentInfo,
    Extension,
    extension_for,
    load_assignment_info,
    load_extensions,
    submission_metadata,
)
from autograder.instructor.export.metadata_yaml import (  # noqa: F401  (re-exported)
    METADATA_NAME,
    SUBMISSION_FOLDER_RE,
    ExportEntry,
    HistoryItem,
    Submitter,
    load_metadata_yaml,
    parse_datetime,
    parse_entry,
)


@dataclass
class Export:
    root: pathlib.Path  # the directory holding submission_metadata.yml
    entries: list[ExportEntry]
    problems: list[str]  # entries that could not be used, and why
    warnings: list[str]  # entries used, with something worth knowing


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
    """Unpack ``archive`` into ``to`` (refusing paths that escape it); return ``to``.

    Every student's work: folders 0700 and files 0600 whatever the umask or the archive says."""
    private_dir(to)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                name = member.filename
                if name.startswith("__MACOSX/"):
                    continue  # macOS resource forks: never submission files
                target = (to / name).resolve()
                if not target.is_relative_to(to.resolve()):
                    raise NotegradeError(f"{archive}: member {name!r} would unpack outside the target folder; refusing the archive")
                if member.is_dir():
                    private_dir(target)
                    continue
                with zf.open(member) as src, PendingFile(target, mode=PRIVATE, fsync=False) as dst:
                    while chunk := src.read(1 << 20):
                        dst.handle.write(chunk)
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
    data = load_metadata_yaml(metadata_path)
    entries, problems, warnings = [], [], []
    for key, raw in data.items():
        try:
            entry = parse_entry(key, raw, root=root, warnings=warnings)
        except NotegradeError as err:
            problems.append(f"{err}; skipped")
            continue
        if entry.folder is None:
            problems.append(f"{METADATA_NAME}: {key}: the archive has no {key}/ folder; cannot regrade it")
        entries.append(entry)
    listed = {e.key for e in entries} | {str(k) for k in data}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and SUBMISSION_FOLDER_RE.match(p.name)):
        if folder.name not in listed:
            warnings.append(f"{folder.name}/ has no entry in {METADATA_NAME}; not graded")
    return Export(root=root, entries=entries, problems=problems, warnings=warnings)


# ------------------------------------------------------------------------ one entry per student
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
