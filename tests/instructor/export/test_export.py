"""Parsing Gradescope's export (zip and folder, malformed entries) and rebuilding submission metadata."""
from __future__ import annotations

import datetime as dt
import json
import pathlib
import zipfile

import pytest

from autograder.errors import NotegradeError
from autograder.instructor.export.archive import (
    AssignmentInfo,
    dedupe_students,
    load_assignment_info,
    load_extensions,
    parse_datetime,
    read_export,
    submission_metadata,
)
from testkit.export_factory import DUE, EXTENDED_DUE, LATE_DUE, PACIFIC, make_export

ASSIGNMENT = AssignmentInfo(title="Assignment 2", due_date=DUE, late_due_date=LATE_DUE)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> pathlib.Path:
    return make_export(tmp_path_factory.mktemp("export")).path


def _by_key(export):
    return {e.key: e for e in export.entries}


def test_reads_every_entry_of_the_factory_export(export_dir):
    export = read_export(export_dir)
    assert export.problems == [] and export.warnings == []
    entries = _by_key(export)
    assert sorted(entries) == [f"submission_{i}" for i in range(1001, 1008)]
    ben = entries["submission_1002"]
    assert ben.submission_id == "1002" and ben.folder == export_dir / "submission_1002"
    assert ben.submitters[0].name == "Ben Franklin" and ben.submitters[0].sid == "100002"
    assert ben.created_at == DUE + dt.timedelta(days=1, hours=2, minutes=5)
    assert ben.created_at.utcoffset() == dt.timedelta(hours=-7)
    assert ben.recorded_score == 94.0 and ben.status == "processed"
    assert ben.recorded_results["tests"][0]["number"] == "4.1"
    # Cleo's timestamp is a quoted ISO string, not a YAML timestamp: same result.
    assert entries["submission_1003"].created_at == DUE + dt.timedelta(days=1, hours=12)
    eve = entries["submission_1005"]
    assert [(h.submission_id, h.score) for h in eve.history] == [("905", 40.0), ("955", 61.5)]
    assert [p.sid for p in entries["submission_1007"].submitters] == ["100007", "100008"]


def test_reads_a_zip_with_the_export_nested_one_folder_down(tmp_path):
    fixture = make_export(tmp_path / "src", as_zip=True)
    with zipfile.ZipFile(fixture.path) as zf:
        assert "assignment_4242_export/submission_metadata.yml" in zf.namelist()
    export = read_export(fixture.path, extract_to=tmp_path / "unpacked")
    assert export.root == tmp_path / "unpacked" / "assignment_4242_export"
    assert len(export.entries) == 7 and all(e.folder is not None for e in export.entries)
    assert (export.root / "submission_1001" / "model.py").is_file()


def _modes(root: pathlib.Path) -> "set[tuple[str, str]]":
    """("dir" | "file", mode) of ``root`` and everything below it."""
    return {("dir" if p.is_dir() else "file", oct(p.stat().st_mode & 0o777)) for p in [root, *root.rglob("*")]}


def test_an_unpacked_export_is_private_whatever_the_umask_or_the_archive(tmp_path, umask_022):
    """Issue 17: a class's work, unpacked where a student uid (the uid isolation level) can't read it."""
    fixture = make_export(tmp_path / "src", as_zip=True)
    assert oct(fixture.path.stat().st_mode & 0o777) == "0o600"  # the demo's export, kept like a real one
    assert _modes(make_export(tmp_path / "folder").path) == {("dir", "0o700"), ("dir", "0o755"), ("file", "0o644")}
    loose = tmp_path / "loose.zip"  # no folder entries, and entry modes that say "world-readable"
    with zipfile.ZipFile(loose, "w") as zf:
        for name, text in (("submission_metadata.yml", GOOD), ("submission_1/model.py", "x = 1\n")):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16
            zf.writestr(info, text)
    for archive, to in ((fixture.path, tmp_path / "unpacked"), (loose, tmp_path / "deep" / "unpacked")):
        export = read_export(archive, extract_to=to)
        assert export.entries and _modes(to) == {("dir", "0o700"), ("file", "0o600")}, _modes(to)
    assert oct((tmp_path / "deep").stat().st_mode & 0o777) == "0o700"


def _write(root: pathlib.Path, text: str, folders=()) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "submission_metadata.yml").write_text(text)
    for name in folders:
        (root / name).mkdir()
    return root


GOOD = """submission_1:
  :submitters:
  - :name: Ok Person
    :sid: '1'
    :email: ok@x.edu
  :created_at: 2024-10-01 10:00:00.000000000 -07:00
  :score: !ruby/object:BigDecimal 18:0.875e2
"""


def test_malformed_entries_are_reported_not_fatal(tmp_path):
    text = GOOD + """submission_2:
  :submitters:
  - :name: No Time
    :sid: '2'
submission_3:
  :created_at: 2024-10-01 10:00:00 -07:00
submission_4:
  :submitters:
  - :name: Nobody
  :created_at: 2024-10-01 10:00:00 -07:00
submission_5: just a string
not_a_submission:
  :submitters: []
submission_6:
  :submitters:
  - :name: Naive Time
    :sid: '6'
  :created_at: 2024-10-01 10:00:00
submission_7:
  :submitters:
  - :name: Bad Score
    :sid: '7'
  :created_at: 2024-10-01 10:00:00 -07:00
  :score: lots
submission_8:
  :submitters:
  - :name: Odd History
    :sid: '8'
  :created_at: 2024-10-01 10:00:00 -07:00
  :history:
  - :id: 3
    :created_at: yesterday
  - 42
submission_9:
  :submitters:
  - :name: No Folder
    :sid: '9'
  :created_at: 2024-10-01 10:00:00 -07:00
"""
    root = _write(tmp_path, text, folders=[f"submission_{i}" for i in range(1, 9)] + ["submission_77"])
    export = read_export(root)
    entries = _by_key(export)
    assert sorted(entries) == ["submission_1", "submission_8", "submission_9"]
    assert entries["submission_1"].recorded_score == 87.5  # Ruby BigDecimal tag, read as a number
    assert entries["submission_8"].history == []
    assert entries["submission_9"].folder is None
    problems = "\n".join(export.problems)
    for needle in (
        "submission_2: no :created_at:",
        "submission_3: no :submitters: list",
        "submission_4: submitter 1 has neither :sid: nor :email:",
        "submission_5: value is not a mapping",
        "not_a_submission: key is not a submission folder name",
        "submission_6: :created_at:: '2024-10-01 10:00:00' has no time zone",  # YAML reads it as a naive datetime
        "submission_7: score 'lots' is not a number",
        "submission_9: the archive has no submission_9/ folder",
    ):
        assert needle in problems, (needle, problems)
    warnings = "\n".join(export.warnings)
    assert "submission_8: :history: item 1 unreadable" in warnings
    assert "submission_8: :history: item 2 unreadable (not a mapping)" in warnings
    assert "submission_77/ has no entry" in warnings


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("submission_1: [unclosed", "not readable YAML"),
        ("- a\n- list\n", "expected a mapping of submission folders"),
    ],
)
def test_unreadable_metadata_raises_a_specific_error(tmp_path, content, message):
    with pytest.raises(NotegradeError, match=message):
        read_export(_write(tmp_path, content))


def test_archive_without_metadata_or_with_escaping_paths_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotegradeError, match="no submission_metadata.yml"):
        read_export(tmp_path / "empty")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("submission_metadata.yml", GOOD)
        zf.writestr("../outside.txt", "x")
    with pytest.raises(NotegradeError, match="outside the target folder"):
        read_export(evil, extract_to=tmp_path / "x")
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(NotegradeError, match="not a readable zip"):
        read_export(tmp_path / "junk.zip", extract_to=tmp_path / "y")
    with pytest.raises(NotegradeError, match="no such export"):
        read_export(tmp_path / "missing.zip")


def test_parse_datetime_accepts_ruby_and_iso_forms_and_refuses_naive():
    expected = dt.datetime(2024, 10, 2, 1, 15, 0, 123456, tzinfo=PACIFIC)
    assert parse_datetime("2024-10-02 01:15:00.123456789 -07:00", what="x") == expected
    assert parse_datetime("2024-10-02T01:15:00.123456-0700", what="x") == expected
    assert parse_datetime("2024-10-02 08:15:00.123456 UTC", what="x") == expected
    with pytest.raises(NotegradeError, match="--due: '2024-10-02 01:15' has no time zone"):
        parse_datetime("2024-10-02 01:15", what="--due")
    with pytest.raises(NotegradeError, match="is not a date and time"):
        parse_datetime("next tuesday", what="--due")


def test_assignment_info_from_file_and_options(tmp_path):
    toml = tmp_path / "a2.toml"
    toml.write_text('[assignment]\ntitle = "Assignment 2"\ndue_date = 2024-10-01T23:59:00-07:00\n'
                    'late_due_date = "2024-10-04T23:59:00-07:00"\ntotal_points = 100\n')
    info = load_assignment_info(path=toml)
    assert (info.title, info.due_date, info.late_due_date) == ("Assignment 2", DUE, LATE_DUE)
    js = tmp_path / "a2.json"
    js.write_text(json.dumps({"title": "A2", "due_date": "2024-10-01T23:59:00-07:00"}))
    override = load_assignment_info(path=js, due="2024-10-02T23:59:00-07:00", title="HW")
    assert override.title == "HW" and override.due_date == DUE + dt.timedelta(days=1) and override.late_due_date is None
    with pytest.raises(NotegradeError, match="the export has no due dates: give --due"):
        load_assignment_info()
    with pytest.raises(NotegradeError, match="late due date .* is before the due date"):
        load_assignment_info(due="2024-10-02T00:00:00Z", late_due="2024-10-01T00:00:00Z")
    (tmp_path / "bad.toml").write_text("due_date = [")
    with pytest.raises(NotegradeError, match="not valid TOML"):
        load_assignment_info(path=tmp_path / "bad.toml")


def test_extensions_csv_by_sid_or_email_and_late_window_shift(tmp_path):
    path = tmp_path / "ext.csv"
    path.write_text("sid,email,due_date,late_due_date\n"
                    f"100003,,{EXTENDED_DUE.isoformat()},\n"
                    f",Ada@Example.edu,{EXTENDED_DUE.isoformat()},2024-10-09T23:59:00-07:00\n")
    extensions = load_extensions(path, assignment=ASSIGNMENT)
    assert extensions["100003"].due_date == EXTENDED_DUE
    # No late due date given: the class's 3-day late window moves with the due date.
    assert extensions["100003"].late_due_date == EXTENDED_DUE + dt.timedelta(days=3)
    assert extensions["ada@example.edu"].late_due_date == dt.datetime(2024, 10, 9, 23, 59, tzinfo=PACIFIC)
    path.write_text("sid,due_date\n1,2024-10-05\n")
    with pytest.raises(NotegradeError, match="line 2: due date: '2024-10-05' has no time zone"):
        load_extensions(path, assignment=ASSIGNMENT)
    path.write_text("name,due_date\nx,2024-10-05T00:00:00Z\n")
    with pytest.raises(NotegradeError, match="needs a 'sid' or 'email' column"):
        load_extensions(path, assignment=ASSIGNMENT)


def test_submission_metadata_carries_created_at_due_dates_extensions_and_history(export_dir):
    entries = _by_key(read_export(export_dir))
    extensions = load_extensions(export_dir.parent / "extensions.csv", assignment=ASSIGNMENT)
    cleo = submission_metadata(entry=entries["submission_1003"], assignment=ASSIGNMENT, extensions=extensions)
    assert cleo["id"] == 1003 and cleo["created_at"] == "2024-10-03T11:59:00-07:00"
    assert cleo["assignment"]["due_date"] == DUE.isoformat()
    assert cleo["assignment"]["late_due_date"] == LATE_DUE.isoformat()
    assert cleo["assignment"]["total_points"] == "100.0"
    assert cleo["users"][0]["assignment"]["due_date"] == EXTENDED_DUE.isoformat()
    ben = submission_metadata(entry=entries["submission_1002"], assignment=ASSIGNMENT, extensions=extensions)
    assert "assignment" not in ben["users"][0]
    eve = submission_metadata(entry=entries["submission_1005"], assignment=ASSIGNMENT)
    assert [p["score"] for p in eve["previous_submissions"]] == [40.0, 61.5]
    group = submission_metadata(entry=entries["submission_1007"], assignment=ASSIGNMENT)
    assert group["assignment"]["group_submission"] is True and len(group["users"]) == 2
    json.dumps(group)  # JSON-serialisable as written to submission_metadata.json


def test_a_student_in_two_entries_keeps_the_later_one():
    def sub(key, people, hours):
        from autograder.instructor.export.archive import ExportEntry, Submitter

        return ExportEntry(key=key, submission_id=key.split("_")[1], folder=None,
                           submitters=[Submitter(n, s, f"{n}@x") for n, s in people],
                           created_at=DUE + dt.timedelta(hours=hours), recorded_score=None, status="", recorded_results=None)

    first = sub("submission_1", [("a", "1"), ("b", "2")], 0)
    second = sub("submission_2", [("b", "2")], 5)
    kept, notes = dedupe_students([first, second])
    assert [(e.key, [p.sid for p in e.submitters]) for e in kept] == [("submission_1", ["1"]), ("submission_2", ["2"])]
    assert "b (2) appears in submission_1 and submission_2" in notes[0]
