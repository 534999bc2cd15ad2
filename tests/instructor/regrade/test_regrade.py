"""Batch regrade of an export: grades.csv numbers, Canvas CSV, the diff against Gradescope, resume, failures.

Most tests grade with ``fake_grader``: it reads the submission and the rebuilt metadata exactly as
the real grader would be handed them and builds results.json with the runner's own
``build_results`` (so the shape and the late policy are the real ones), but decides the item
scores from the submission's variant instead of running student code (seconds, not minutes).
The end-to-end test with the real grader is at the bottom.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import threading

import pandas as pd
import pytest

from autograder.cli import main as cli_main
from autograder.errors import NotegradeError
from autograder.instructor.regrade import run as regrade
from testkit.export_factory import DEFAULT_CLASS, DUE, make_export
from testkit.regrade_fakes import EXPECTED_TOTALS, OPTIONS, RUBRIC, fake_grader



@pytest.fixture
def autograder_dir(tmp_path) -> pathlib.Path:
    path = tmp_path / "autograder"
    path.mkdir()
    (path / "rubric.toml").write_text('title = "Assignment 2"\n')
    return path


@pytest.fixture
def fixture_export(tmp_path):
    return make_export(tmp_path / "src", as_zip=True)


def _run(fixture, autograder_dir, out, grade=fake_grader, **extra):
    options = {**OPTIONS, **extra}
    return regrade.regrade_export(export=fixture.path, autograder=autograder_dir, out=out, extensions=fixture.extensions_csv,
                        grade=grade, **options)


def test_grades_csv_has_one_row_per_student_with_the_right_numbers(tmp_path, autograder_dir, fixture_export):
    summary = _run(fixture_export, autograder_dir, tmp_path / "out", jobs=2)
    assert summary.graded == 7 and summary.reused == 0 and summary.failed == []
    grades = pd.read_csv(summary.paths["grades"], dtype={"sid": str, "submission_id": str})
    assert list(grades.columns) == ["sid", "name", "email", "submission_id", "created_at", "status", "late_seconds",
                                    "lateness", "penalty", "1.1 Architecture", "2.1 Losses", "3.1 Training",
                                    "4.1 Held-out accuracy", "heldout_accuracy", "total"]
    assert dict(zip(grades["name"], grades["total"])) == EXPECTED_TOTALS
    row = grades.set_index("name")
    # Ben: 1 day 2 h 5 min late -> 2 started days x 3 points.
    assert row.loc["Ben Franklin", "penalty"] == 6.0 and row.loc["Ben Franklin", "late_seconds"] == 26 * 3600 + 5 * 60
    assert "submitted 1 day 2 h 5 min late" in row.loc["Ben Franklin", "lateness"]
    # Cleo is 1.5 days after the class due date, but her extension makes her on time.
    assert row.loc["Cleo Patra", "penalty"] == 0.0 and "on time" in row.loc["Cleo Patra", "lateness"]
    assert row.loc["Cleo Patra", "created_at"] == "2024-10-03T11:59:00-07:00"
    assert row.loc["Eve Adams", "2.1 Losses"] == 15.0
    assert row.loc["Finn Mertens", "4.1 Held-out accuracy"] == 0.0 and pd.isna(row.loc["Finn Mertens", "heldout_accuracy"])
    assert row.loc["Dev Null", "1.1 Architecture"] == 0.0 and row.loc["Dev Null", "status"] == "graded"
    assert row.loc["Ada Lovelace", "heldout_accuracy"] == 0.8
    assert row.loc["Gus Grissom", "submission_id"] == row.loc["Hana Abe", "submission_id"] == "1007"
    # The metadata handed to the grader: created_at from the export, the extension as a users[] override.
    meta = json.loads((tmp_path / "out" / "submissions" / "submission_1003" / "submission_metadata.json").read_text())
    assert meta["created_at"] == "2024-10-03T11:59:00-07:00"
    assert meta["users"][0]["assignment"]["due_date"] == "2024-10-03T23:59:00-07:00"


def test_canvas_csv_diff_reports_and_class_data(tmp_path, autograder_dir, fixture_export):
    summary = _run(fixture_export, autograder_dir, tmp_path / "out", canvas_column="Assignment 2 (5551)")
    canvas = pd.read_csv(summary.paths["canvas"], dtype=str, keep_default_na=False)
    assert list(canvas.columns) == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Assignment 2 (5551)"]
    assert canvas.iloc[0].tolist() == ["    Points Possible", "", "", "", "", "100.00"]
    assert canvas.iloc[1:].set_index("SIS User ID").loc["100002", "Assignment 2 (5551)"] == "94.00"
    assert len(canvas) == 1 + 8

    changes = pd.read_csv(summary.paths["changes"], dtype={"sid": str})
    flagged = changes[changes["changed"]].set_index("name")
    assert sorted(flagged.index) == ["Cleo Patra", "Gus Grissom", "Hana Abe"]
    assert flagged.loc["Cleo Patra", "delta"] == 6.0 and flagged.loc["Hana Abe", "delta"] == -3.0
    assert sorted(line.split(" (")[0] for line in summary.changed) == ["Cleo Patra", "Gus Grissom", "Hana Abe"]

    reports = sorted(p.name for p in summary.paths["reports"].iterdir())
    assert "100002_Ben_Franklin.md" in reports and "100002_Ben_Franklin.html" in reports and len(reports) == 16
    ben_md = (summary.paths["reports"] / "100002_Ben_Franklin.md").read_text()
    assert ben_md.startswith("# Ben Franklin (100002)") and "1 day 2 h 5 min late" in ben_md
    assert "<strong>Ben Franklin (100002)</strong>" in (summary.paths["reports"] / "100002_Ben_Franklin.html").read_text()

    data = json.loads(summary.paths["class_data"].read_text())
    assert [i["number"] for i in data["items"]] == ["1.1", "2.1", "3.1", "4.1"]
    assert [i["max_score"] for i in data["items"]] == [20.0, 30.0, 20.0, 30.0]
    with_checkpoint = [s for s in DEFAULT_CLASS if s.variant in ("reference", "wrong_loss")]
    assert data["confusion"]["pooled"][0][0] == 5 * len(with_checkpoint)
    assert data["confusion"]["per_submission"]["submission_1006"] is None
    # Items that did not run to a verdict, by submission id (the class report lists them): Dev's syntax
    # error fails every item, Finn's missing model.pt the held-out one; the others have none.
    errors = data["item_errors"]
    assert sorted(errors) == ["1004", "1006"] and [e["number"] for e in errors["1004"]] == ["1.1", "2.1", "3.1", "4.1"]
    assert errors["1006"] == [{"number": "4.1", "column": "4.1 Held-out accuracy", "status": "error",
                               "message": "no model.pt"}]


def test_student_reports_never_carry_the_instructor_only_integrity_line(tmp_path, autograder_dir, fixture_export):
    """reports/ is what instructors hand out: the hidden "Integrity (instructors only)" line (train-on-test,
    tampering) stays in the instructor's submissions/<id>/report.md."""
    def flagged(**kw):
        results = fake_grader(**kw)
        results["tests"].append({"name": "Integrity (instructors only)", "score": 0.0, "max_score": 0.0,
                                 "status": "failed", "visibility": "hidden", "extra_data": {"kind": "integrity"},
                                 "output": "Train-on-test detector: FLAGGED.\nTampering report (1): [frame] ..."})
        return results

    summary = _run(fixture_export, autograder_dir, tmp_path / "out", grade=flagged)
    reports = sorted(summary.paths["reports"].iterdir())
    assert len(reports) == 16
    for report in reports:
        text = report.read_text()
        assert "Integrity" not in text and "Train-on-test" not in text and "Tampering" not in text, report.name
    ben = (summary.paths["reports"] / "100002_Ben_Franklin.md").read_text()
    assert "**94 / 100**" in ben and "1 day 2 h 5 min late" in ben  # the graded items and the total stay
    instructor = (tmp_path / "out" / "submissions" / "submission_1002" / "report.md").read_text()
    assert "Integrity (instructors only)" in instructor and "Train-on-test detector: FLAGGED." in instructor


def test_every_output_is_private_whatever_the_umask(tmp_path, autograder_dir, fixture_export, umask_022):
    """Issue 17: grades, reports, the unpacked export, each submission's folder: 0600 files, 0700 folders."""
    out = tmp_path / "courses" / "out"
    _run(fixture_export, autograder_dir, out)
    found = {("dir" if p.is_dir() else "file", oct(p.stat().st_mode & 0o777)) for p in [out, *out.rglob("*")]}
    assert found == {("dir", "0o700"), ("file", "0o600")}, found
    assert oct(out.parent.stat().st_mode & 0o777) == "0o700"
    assert len(list(out.rglob("*"))) > 50  # the gradebooks, 16 reports, 7 submissions, the unpacked export


def test_at_the_uid_level_an_open_export_or_autograder_is_refused_until_closed(tmp_path, autograder_dir,
                                                                             fixture_export, monkeypatch):
    """Issue 17: student code at the uid level reads what others may read; the regrade stops first, in one
    line that names the path and the chmod, and nothing is graded or unpacked until that is done."""
    calls: list[str] = []

    def counting(**kwargs):
        calls.append(kwargs["submission"].name)
        return fake_grader(**kwargs)

    monkeypatch.setenv("NOTEGRADE_ISOLATION", "uid")
    if os.geteuid() != 0:
        monkeypatch.setattr("autograder.sandbox.isolation.os.geteuid", lambda: 0)  # the check, not the sandbox
    (autograder_dir / "heldout.safetensors").write_bytes(b"labels")
    (autograder_dir / "heldout.safetensors").chmod(0o644)
    fixture_export.path.chmod(0o644)
    out = tmp_path / "out"
    for path, fix in ((autograder_dir / "heldout.safetensors", "chmod 600"), (fixture_export.path, "chmod 600")):
        with pytest.raises(NotegradeError) as refused:
            _run(fixture_export, autograder_dir, out, grade=counting)
        message = str(refused.value)
        assert message == (f"{path} is readable by other users, and student code runs here as another uid without "
                           f"namespaces (isolation uid): make it private with `{fix} {path}`, then grade again")
        assert calls == [] and not out.exists()
        subprocess.run(f"{fix} {path}", shell=True, check=True)  # the fix, exactly as the message says it
    folder = make_export(tmp_path / "folder").path  # an unpacked export: its folder is checked
    folder.chmod(0o755)
    with pytest.raises(NotegradeError, match=f"is open to other users .*`chmod -R go-rwx {folder}`"):
        regrade.regrade_export(export=folder, autograder=autograder_dir, out=tmp_path / "out2", grade=counting, **OPTIONS)
    summary = _run(fixture_export, autograder_dir, out, grade=counting)
    assert summary.graded == 7 and len(calls) == 7
    monkeypatch.setenv("NOTEGRADE_ISOLATION", "bubblewrap")  # nothing the sandbox mounts: no refusal
    fixture_export.path.chmod(0o644)
    assert _run(fixture_export, autograder_dir, tmp_path / "out3", grade=counting).graded == 7


def test_resume_skips_what_was_graded_with_the_same_autograder(tmp_path, autograder_dir, fixture_export):
    calls: list[str] = []
    lock = threading.Lock()

    def counting(**kw):
        with lock:
            calls.append(kw["submission"].name)
        return fake_grader(**kw)

    out = tmp_path / "out"
    _run(fixture_export, autograder_dir, out, grade=counting)
    assert len(calls) == 7
    first_totals = pd.read_csv(out / "grades.csv")["total"].tolist()
    calls.clear()
    again = _run(fixture_export, autograder_dir, out, grade=counting)
    assert calls == [] and again.reused == 7 and again.graded == 0
    assert pd.read_csv(out / "grades.csv")["total"].tolist() == first_totals
    # A new extension changes one student's metadata: only that submission is regraded.
    fixture_export.extensions_csv.write_text(fixture_export.extensions_csv.read_text() + "100002,,2024-10-05T00:00:00-07:00\n")
    third = _run(fixture_export, autograder_dir, out, grade=counting)
    assert calls == ["submission_1002"] and third.reused == 6
    assert pd.read_csv(out / "grades.csv").set_index("name").loc["Ben Franklin", "total"] == 100.0
    # A different autograder regrades everything.
    calls.clear()
    (autograder_dir / "rubric.toml").write_text('title = "Assignment 2, fixed"\n')
    _run(fixture_export, autograder_dir, out, grade=counting)
    assert len(calls) == 7


def test_an_autograder_error_is_shown_but_never_reused(tmp_path, autograder_dir, fixture_export):
    """The grader's own failure (here: its process got SIGTERM) is not a grade a rerun may keep."""
    from autograder.results import error_results

    calls: list[str] = []
    killed: list[str] = []

    def killed_once(**kw):
        calls.append(kw["submission"].name)
        if kw["submission"].name == "submission_1002" and not killed:
            killed.append(kw["submission"].name)
            return error_results(rubric=RUBRIC, graded=[], error="_Terminated: the grader received signal 15",
                                 details="", execution_time=1.0).to_gradescope_dict()
        return fake_grader(**kw)

    out = tmp_path / "out"
    _run(fixture_export, autograder_dir, out, grade=killed_once)
    grades = pd.read_csv(out / "grades.csv").set_index("name")
    assert grades.loc["Ben Franklin", "status"] == "autograder error"
    assert not (out / "submissions" / "submission_1002" / "grade_key.json").exists()
    calls.clear()
    again = _run(fixture_export, autograder_dir, out, grade=killed_once)
    assert calls == ["submission_1002"] and again.reused == 6 and again.graded == 1
    assert pd.read_csv(out / "grades.csv").set_index("name").loc["Ben Franklin", "status"] == "graded"


def test_one_broken_submission_never_stops_the_batch(tmp_path, autograder_dir, fixture_export):
    out = tmp_path / "out"
    regrade.regrade_export(export=fixture_export.path, autograder=autograder_dir, out=out, grade=fake_grader, **OPTIONS)
    victim = out / "export" / "assignment_4242_export" / "submission_1001"
    (victim / "CRASH_THE_GRADER").write_text("")
    summary = regrade.regrade_export(export=victim.parent, autograder=autograder_dir, out=out, grade=fake_grader, jobs=3, **OPTIONS)
    assert len(summary.failed) == 1 and summary.failed[0].startswith("submission_1001: RuntimeError: grader process died")
    grades = pd.read_csv(summary.paths["grades"]).set_index("name")
    assert grades.loc["Ada Lovelace", "status"].startswith("not graded: RuntimeError")
    assert pd.isna(grades.loc["Ada Lovelace", "total"])
    assert grades.loc["Ben Franklin", "total"] == 94.0 and grades["total"].notna().sum() == 7
    assert "Traceback" in (out / "submissions" / "submission_1001" / "error.txt").read_text()
    changes = pd.read_csv(summary.paths["changes"]).set_index("name")
    assert bool(changes.loc["Ada Lovelace", "changed"])  # a lost grade is a change too
    assert "submission_1001: RuntimeError" in (out / "problems.txt").read_text()
    canvas = pd.read_csv(summary.paths["canvas"], dtype=str, keep_default_na=False).set_index("Student")
    assert canvas.loc["Ada Lovelace", "Assignment 2"] == ""  # blank: Canvas keeps what it had


def test_unusable_export_entries_are_reported_and_the_rest_graded(tmp_path, autograder_dir):
    fixture = make_export(tmp_path / "src")
    meta = fixture.path / "submission_metadata.yml"
    meta.write_text(meta.read_text().replace("  :created_at: 2024-10-01 23:29:00.000000000 -07:00\n", "", 1))
    shutil.rmtree(fixture.path / "submission_1006")  # Finn is in the YAML, but his folder is missing
    summary = regrade.regrade_export(export=fixture.path, autograder=autograder_dir, out=tmp_path / "out", grade=fake_grader, **OPTIONS)
    assert summary.graded == 5 and summary.failed == []
    assert any("submission_1004: no :created_at:" in p for p in summary.problems)
    assert any("the archive has no submission_1006/ folder" in p for p in summary.problems)
    grades = pd.read_csv(summary.paths["grades"]).set_index("name")
    assert "Dev Null" not in grades.index
    assert grades.loc["Finn Mertens", "status"] == "not graded: the export has no folder for it"
    assert bool(pd.read_csv(summary.paths["changes"]).set_index("name").loc["Finn Mertens", "changed"])


def test_cli_usage_errors_are_one_line_messages(tmp_path, autograder_dir, capsys):
    fixture = make_export(tmp_path / "src")
    code = cli_main(["regrade", str(fixture.path), "--autograder", str(autograder_dir), "--out", str(tmp_path / "o")])
    assert code == 1 and "the export has no due dates: give --due" in capsys.readouterr().err
    code = cli_main(["regrade", str(fixture.path), "--autograder", str(tmp_path / "nope"), "--due", DUE.isoformat()])
    assert code == 1 and "no such autograder zip or directory" in capsys.readouterr().err
    code = cli_main(["regrade", str(fixture.path), "--autograder", str(autograder_dir), "--due", "tomorrow"])
    assert code == 1 and "'tomorrow' is not a date and time" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "submission_metadata.yml").write_text("submission_1:\n  :submitters: []\n")
    code = cli_main(["regrade", str(empty), "--autograder", str(autograder_dir), "--due", DUE.isoformat()])
    assert code == 1 and "no usable submission in the export (submission_metadata.yml: submission_1: no :created_at:" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["regrade", str(fixture.path)])
    assert exc.value.code == 2


def test_docker_path_checks_the_engine_once_and_grades_in_the_image(tmp_path, autograder_dir, fixture_export, monkeypatch):
    from autograder.errors import NotegradeError
    from autograder.instructor.grading.docker import grading as docker_grading
    from autograder.instructor.grading.docker import image as docker_image
    from testkit.autograder_dir import REPO

    def no_engine():
        raise NotegradeError("no Docker engine is reachable (simulated)")

    monkeypatch.setattr(docker_image, "docker_client", no_engine)
    with pytest.raises(NotegradeError, match="no Docker engine is reachable"):
        regrade.regrade_export(export=fixture_export.path, autograder=autograder_dir, out=tmp_path / "o", docker=True, **OPTIONS)
    assert not (tmp_path / "o" / "submissions").exists()  # nothing was graded

    client, built, seen = object(), [], []
    # The image's rubric sets the containers' limits: a real one here (fake_grader only needs the file).
    (autograder_dir / "rubric.toml").write_text((REPO / "tests" / "rubrics" / "rendered.toml").read_text())
    monkeypatch.setattr(docker_image, "docker_client", lambda: client)
    monkeypatch.setattr(docker_image, "unpack_autograder", lambda path, work: path)
    monkeypatch.setattr(docker_image, "ensure_image",
                        lambda c, *, source, tag, base_image, **_: built.append((c, source, tag, base_image)) or "img:1")

    def in_container(self, **kw):
        seen.append((self.image, self.client))
        return fake_grader(**kw)

    monkeypatch.setattr(docker_grading.ContainerGrader, "__call__", in_container)
    summary = regrade.regrade_export(export=fixture_export.path, autograder=autograder_dir, out=tmp_path / "o", docker=True,
                           image=None, jobs=2, extensions=fixture_export.extensions_csv, base_image="local:1", **OPTIONS)
    assert built == [(client, autograder_dir, None, "local:1")]  # regrade's --base-image reaches the image build
    assert len(seen) == 7 and set(seen) == {("img:1", client)}
    assert dict(zip(*pd.read_csv(summary.paths["grades"])[["name", "total"]].T.values)) == EXPECTED_TOTALS


E2E_STUDENTS = ("Ada Lovelace", "Ben Franklin", "Dev Null", "Eve Adams")


@pytest.mark.slow
def test_end_to_end_with_the_real_grader(tmp_path):
    """The real grader (subprocess, sandbox, checks) on four submissions of the export, then resume."""
    import jsonschema

    from autograder.instructor.class_report.page import write_class_report as class_report
    from testkit.autograder_dir import REPO, grading_assets, heldout_flip_notes, make_autograder_dir

    assets = grading_assets()
    autograder = make_autograder_dir(tmp_path / "autograder", rubric=assets.rubric, heldout=assets.heldout)
    subset = [s for s in DEFAULT_CLASS if s.students[0].name in E2E_STUDENTS]
    fixture = make_export(tmp_path / "src", submissions=subset, checkpoint=assets.state_dict_path, as_zip=True)
    out = tmp_path / "out"
    summary = regrade.regrade_export(export=fixture.path, autograder=autograder, out=out, jobs=2,
                           extensions=fixture.extensions_csv, **OPTIONS)
    assert summary.graded == 4 and summary.failed == [], summary.problems
    schema = json.loads((REPO / "tests" / "schema" / "results.schema.json").read_text())
    for path in (out / "submissions").glob("*/results.json"):
        jsonschema.validate(json.loads(path.read_text()), schema)
    grades = pd.read_csv(out / "grades.csv").set_index("name")
    assert grades.loc["Ada Lovelace", "total"] == 100.0
    # graded perturbed (keyed on Ada's submission), against the unperturbed accuracy
    assert grades.loc["Ada Lovelace", "heldout_accuracy"] == pytest.approx(assets.accuracy,
                                                                           abs=(heldout_flip_notes() + 0.01) / 88)
    # The rendered rubric charges 3 points per started day: Ben is 1 day 2 h 5 min late.
    assert grades.loc["Ben Franklin", "penalty"] == 6.0 and grades.loc["Ben Franklin", "total"] == 94.0
    items = [c for c in grades.columns if c[:1].isdigit()]
    assert len(items) == len(json.loads((out / "grades.json").read_text())["items"]) >= 8
    architecture = [c for c in items if c.startswith("1.")]
    assert grades.loc["Dev Null", architecture].sum() == 0 and grades.loc["Dev Null", "total"] < 100
    assert grades.loc["Dev Null", "status"] == "graded"
    losses = [c for c in items if c.startswith("2.")]
    assert grades.loc["Eve Adams", losses].sum() < grades.loc["Ada Lovelace", losses].sum()
    assert grades.loc["Eve Adams", [c for c in items if c.startswith("1.")]].sum() == 20.0
    pooled = json.loads((out / "grades.json").read_text())["confusion"]["pooled"]
    assert sum(map(sum, pooled)) == 3 * 8 * 11  # three submissions with a model, 88 held-out notes each
    again = regrade.regrade_export(export=fixture.path, autograder=autograder, out=out, jobs=2,
                         extensions=fixture.extensions_csv, **OPTIONS)
    assert again.reused == 4 and again.graded == 0
    page = class_report(grades=out / "grades.csv", out=out / "class.html", reference_accuracy=assets.accuracy)
    assert page.read_text().count("data:image/png;base64,") == 5


@pytest.mark.docker
@pytest.mark.slow
def test_regrade_in_docker_containers(tmp_path):
    """``--docker``: the zip's image (built FROM the local base stand-in) grades each submission."""
    import torch  # noqa: F401  (grading_assets trains with it)

    from autograder.instructor.build.package import build_autograder
    from autograder.instructor.grading.docker import image as docker_image
    from testkit import docker_support
    from testkit.autograder_dir import grading_assets

    client = docker_support.engine_or_skip()
    base = docker_support.ensure_base_image(client)
    assets = grading_assets()
    (tmp_path / "rubric.toml").write_text(assets.rubric)
    archive = build_autograder(rubric=tmp_path / "rubric.toml", heldout=assets.heldout, out=tmp_path / "autograder.zip",
                               wheelhouse=docker_support.ensure_wheelhouse(), quiet=True).path
    source = docker_image.unpack_autograder(archive, tmp_path / "unpacked")
    tag = docker_image.ensure_image(client, source=source, base_image=base, quiet=True)
    subset = [s for s in DEFAULT_CLASS if s.students[0].name in ("Ada Lovelace", "Ben Franklin", "Dev Null")]
    fixture = make_export(tmp_path / "src", submissions=subset, checkpoint=assets.state_dict_path, as_zip=True)
    summary = regrade.regrade_export(export=fixture.path, autograder=archive, out=tmp_path / "out", docker=True, image=tag,
                           jobs=2, **OPTIONS)
    assert summary.graded == 3 and summary.failed == []
    assert all((tmp_path / "out" / "submissions" / f"submission_{s.submission_id}" / "graded" / "container.json").is_file()
               for s in subset)
    grades = pd.read_csv(summary.paths["grades"]).set_index("name")
    assert grades.loc["Ada Lovelace", "total"] == 100.0
    assert grades.loc["Ben Franklin", "penalty"] == 6.0 and grades.loc["Ben Franklin", "total"] == 94.0
    assert grades.loc["Dev Null", "status"] == "graded" and grades.loc["Dev Null", "total"] < 100
