"""The submissions an integrity analysis compares, and who wrote them, from an export or a regrade.

``EXPORT_OR_REGRADE_DIR`` is either Gradescope's "Export Submissions" archive (zip or folder),
whose ``:results:`` are the results.json Gradescope recorded, or the ``--out`` folder of
``notegrade regrade``, whose ``submissions/<id>/results.json`` are the regraded ones (preferred:
they come from this toolkit's grader).  A regrade folder names its export in ``grades.json``
(``export_root``), or holds the unpacked zip in ``export/``.  Each student counts once, in their
latest submission (:func:`~autograder.instructor.export.archive.dedupe_students`, as regrade does); a
group submission is one member with several people.

Example
-------
>>> from autograder.instructor.export.archive import Submitter
>>> m = Member(key="submission_7", submission_id="7", folder=None, people=[Submitter("Ada", "1", "a@x"),
...            Submitter("Ben", "2", "b@x")], results=None)
>>> m.label, m.field("sid")
('Ada (1) + Ben (2)', '1; 2')
"""
from __future__ import annotations

import json
import pathlib
import shutil
from dataclasses import dataclass, field

from autograder.errors import NotegradeError
from autograder.instructor.export import archive as gs_export
from autograder.instructor.export.archive import ExportEntry, Submitter
from autograder.layout import RESULTS_FILE


@dataclass
class Member:
    """One submission of the class (one student, or one group)."""

    key: str  # "submission_1001": the export's folder name
    submission_id: str
    folder: pathlib.Path | None  # None: the export lacks it (reported)
    people: list[Submitter]
    results: dict | None  # results.json (regraded, else as Gradescope recorded it)
    results_source: str = ""  # "regrade" | "export" | ""
    digest: str = ""  # sha256 of the folder's files (regrade_jobs.sha256_of); "" without a folder

    @property
    def label(self) -> str:
        return " + ".join(p.label for p in self.people)

    def field(self, name: str) -> str:
        """``name`` (name, sid or email) of every person, joined with "; " as one CSV cell."""
        return "; ".join(str(getattr(p, name)) for p in self.people)


@dataclass
class ClassInput:
    members: list[Member]
    export_root: pathlib.Path  # the folder holding submission_metadata.yml
    kind: str  # "export" | "regrade"
    problems: list[str] = field(default_factory=list)


def is_regrade_dir(path: pathlib.Path) -> bool:
    return path.is_dir() and (path / "grades.csv").is_file() and (path / "submissions").is_dir()


def _regrade_export_root(regrade: pathlib.Path) -> pathlib.Path:
    data_path = regrade / "grades.json"
    try:
        named = json.loads(data_path.read_text()).get("export_root") if data_path.is_file() else None
    except (json.JSONDecodeError, OSError, AttributeError):
        named = None
    for candidate in ([pathlib.Path(named)] if named else []) + [regrade / "export"]:
        if candidate.is_dir():
            return candidate
    raise NotegradeError(f"{regrade}: a regrade folder, but its export is gone ({'named ' + named + ' in grades.json; ' if named else ''}"
                         f"no export/ inside it): pass the export zip or folder itself")


def _read_json(path: pathlib.Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def members_from_entries(entries: list[ExportEntry], *, regraded: dict[str, dict | None] | None = None) -> list[Member]:
    """Members in export order; results from ``regraded`` (entry key -> results) when given, else recorded."""
    from autograder.instructor.regrade.jobs import sha256_of

    members = []
    for entry in entries:
        results, source = None, ""
        if regraded is not None and regraded.get(entry.key) is not None:
            results, source = regraded[entry.key], "regrade"
        elif entry.recorded_results is not None:
            results, source = entry.recorded_results, "export"
        members.append(Member(key=entry.key, submission_id=entry.submission_id, folder=entry.folder,
                              people=list(entry.submitters), results=results, results_source=source,
                              digest=sha256_of(entry.folder) if entry.folder is not None else ""))
    return members


def read_class(source: pathlib.Path, *, unpack_to: pathlib.Path) -> ClassInput:
    """The members of an export (zip: unpacked into ``unpack_to``) or of a regrade folder."""
    source = pathlib.Path(source)
    if not source.exists():
        raise NotegradeError(f"{source}: no such export or regrade folder (give Gradescope's 'Export Submissions' zip, "
                             "its unpacked folder, or the --out folder of 'notegrade regrade')")
    kind = "regrade" if is_regrade_dir(source) else "export"
    if kind == "regrade":
        path = _regrade_export_root(source)
    elif source.is_file():
        shutil.rmtree(unpack_to, ignore_errors=True)  # a fresh unpack: nothing left from another zip
        path = source
    else:
        path = source
    parsed = gs_export.read_export(path, extract_to=unpack_to if path.is_file() else None)
    entries, notes = gs_export.dedupe_students(parsed.entries)
    if not entries:
        raise NotegradeError(f"{source}: no usable submission ({'; '.join(parsed.problems[:3]) or 'the export is empty'})")
    regraded = None
    if kind == "regrade":
        regraded = {e.key: _read_json(source / "submissions" / e.key / RESULTS_FILE) for e in entries}
    members = members_from_entries(entries, regraded=regraded)
    return ClassInput(members=members, export_root=parsed.root, kind=kind, problems=parsed.problems + notes)
