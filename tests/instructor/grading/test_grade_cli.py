"""`notegrade grade`: local grading in the Gradescope layout, zips, batches, errors, the --docker hook."""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import zipfile

import jsonschema
import pytest
import torch

from autograder.instructor.grading import batch, one_submission
from autograder.instructor.grading import command as grade_cli
from autograder.instructor.grading.run import grade_and_report
from autograder.errors import NotegradeError
from testkit.autograder_dir import (REPO, grading_assets, heldout_flip_notes, make_autograder_dir,
                                    make_starter_submission, make_submission)

SCHEMA = json.loads((REPO / "tests" / "schema" / "results.schema.json").read_text())
NOTEGRADE = [sys.executable, "-m", "autograder.cli"]


def _zip_dir(directory: pathlib.Path, archive: pathlib.Path) -> pathlib.Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(directory.rglob("*")):
            zf.write(path, path.relative_to(directory).as_posix())
    archive.chmod(0o600)  # as `notegrade build` writes it: a grader at the uid level refuses an open one
    return archive


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory) -> pathlib.Path:
    assets = grading_assets()
    work = tmp_path_factory.mktemp("autograder")
    return _zip_dir(make_autograder_dir(work / "dir", rubric=assets.rubric, heldout=assets.heldout), work / "autograder.zip")


def test_reference_scores_100_through_the_cli(tmp_path, autograder_zip):
    """The reference solution (briefly trained) gets full marks, graded from the autograder zip."""
    assets = grading_assets()
    submission = make_submission(tmp_path / "reference", state_dict=torch.load(assets.state_dict_path))
    out = tmp_path / "out"
    proc = subprocess.run(NOTEGRADE + ["grade", str(submission), "--autograder", str(autograder_zip), "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    jsonschema.validate(results, SCHEMA)
    assert results["score"] == 100, proc.stdout
    assert all(t["status"] == "passed" for t in results["tests"]), proc.stdout
    # Graded perturbed (keyed on this submission), against the unperturbed accuracy: allow the notes the
    # perturbation can flip (this also covers a near-tie the worker's batches/threads sum differently).
    extra = results["extra_data"]
    assert extra["heldout_count"] == 88 and extra["heldout_accuracy"] == pytest.approx(
        assets.accuracy, abs=(heldout_flip_notes() + 0.01) / 88)
    # The leaderboard shows the accuracy rounded to 0.1 point, as students see it.
    assert results["leaderboard"] == [{"name": "Held-out accuracy", "value": round(extra["heldout_accuracy"], 3),
                                       "order": "desc"}]
    assert "## Rendered-data rubric (tests and demo): 100 / 100" in proc.stdout
    assert "no submission_metadata.json" in proc.stdout  # a local run: no late penalty, and it says so
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "100 / 100" in html and "Confusion matrix" in html
    assert "[notegrade] item 1.1" in (out / "stdout.txt").read_text()
    # Graded in the runtime built from the autograder's requirements.txt, as on Gradescope.
    assert extra["runtime"]["kind"] == "grading-venv" and extra["runtime"]["torch"] == "2.13.0+cpu", extra["runtime"]
    assert "Graded in the grading-venv runtime: Python 3." in proc.stdout and ", torch 2.13.0+cpu." in proc.stdout


def test_a_zipped_folder_is_graded_from_its_folder_and_only_the_assignment_files_reach_student_code(tmp_path, autograder_zip):
    """Gradescope puts a zipped folder's files under submission/<folder>/: graded from there, with a note;
    __MACOSX and .DS_Store are ignored silently, other files (a data file) with a note, and never copied."""
    assets = grading_assets()
    upload = tmp_path / "upload"
    make_submission(upload / "my_hw", state_dict=torch.load(assets.state_dict_path))
    (upload / "my_hw" / "labels.npy").write_bytes(b"a lookup table")
    (upload / "my_hw" / ".DS_Store").write_bytes(b"\0")
    (upload / "__MACOSX" / "my_hw").mkdir(parents=True)
    (upload / "__MACOSX" / "my_hw" / "._model.py").write_bytes(b"\0")
    # A model.py that reports which files it can see next to it.
    model = (upload / "my_hw" / "model.py").read_text() + "\nimport os as _os\nprint('SEES', sorted(_os.listdir('.')))\n"
    (upload / "my_hw" / "model.py").write_text(model)
    out = tmp_path / "out"
    assert grade_and_report(submission=upload, autograder=autograder_zip, out=out) == 0  # one submission, not a batch
    results = json.loads((out / "results.json").read_text())
    assert results["score"] == 100, results["output"]
    assert "**Note:** Your upload has everything inside the folder my_hw/, so that folder was graded" in results["output"]
    assert "**Note:** Ignored (only model.py, losses.py, train.py, model.pt are graded): labels.npy." in results["output"]
    assert results["extra_data"]["submission"] == {"folder": "my_hw", "copied": ["model.py", "losses.py", "train.py",
                                                                                  "model.pt"], "ignored": ["labels.npy"]}


def test_an_import_the_grading_runtime_lacks_fails_as_on_gradescope(tmp_path, autograder_zip):
    """`import librosa` (installed in the toolkit's environment) fails locally exactly as in Gradescope's venv."""
    assets = grading_assets()
    lines = (REPO / "reference" / "model.py").read_text().splitlines(keepends=True)
    at = lines.index("import torch\n") + 1
    model = "".join(lines[:at] + ["import librosa\n"] + lines[at:])
    submission = make_submission(tmp_path / "sub", state_dict=torch.load(assets.state_dict_path), files={"model.py": model})
    line = model.splitlines().index("import librosa") + 1
    out = tmp_path / "out"
    one_submission.grade_submission(submission=submission, autograder=autograder_zip, out=out, quiet=True)
    results = json.loads((out / "results.json").read_text())
    by_number = {t.get("number"): t for t in results["tests"]}
    assert by_number["1.1"]["score"] == 0 and results["score"] == 50, results["output"]
    assert f"importing model.py raised ModuleNotFoundError: No module named 'librosa' (at model.py, line {line}" \
        in by_number["1.1"]["output"]


@pytest.mark.slow
def test_batch_grades_each_submission_in_parallel(tmp_path, autograder_zip):
    assets = grading_assets()
    folder = tmp_path / "batch"
    folder.mkdir(mode=0o700)  # students' work: private, as a grader at the uid level requires
    make_submission(folder / "alice", state_dict=torch.load(assets.state_dict_path))
    make_starter_submission(folder / "bob")
    metadata = tmp_path / "meta.json"
    metadata.write_text(json.dumps({"created_at": "2024-10-08T00:30:00-07:00",
                                    "assignment": {"due_date": "2024-10-07T23:59:00-07:00", "late_due_date": None}}))
    rows = batch.grade_batch(submissions=folder, autograder=autograder_zip, metadata=metadata, out=tmp_path / "out", jobs=2)
    by_name = {r["name"]: r for r in rows}
    assert by_name["alice"]["score"] == 97 and by_name["bob"]["score"] == 0  # 31 min late: 1 day x 3 points
    assert all(r["status"] == "graded" for r in rows)
    for name in ("alice", "bob"):
        jsonschema.validate(json.loads((tmp_path / "out" / name / "results.json").read_text()), SCHEMA)
    assert (tmp_path / "out" / "summary.csv").read_text().splitlines()[0] == "name,score,total,status,seconds,isolation"
    table = batch.summary_table(rows)
    assert "alice" in table and "97 / 100" in table


def test_a_batch_writes_private_outputs_and_names_its_folder_to_each_grader(tmp_path, monkeypatch, umask_022):
    """Issue 17: the batch folder is a secret each grader checks at the uid level; the outputs are 0600/0700."""
    seen = []

    def fake(*, submission, autograder, metadata, out, quiet, python, private, warm):
        seen.append((submission.name, private))
        return {"score": 1.0, "tests": [], "extra_data": {"total_points": 1.0}}

    monkeypatch.setattr(one_submission, "grade_submission", fake)
    folder = tmp_path / "batch"
    for name in ("alice", "bob"):
        (folder / name).mkdir(parents=True)
        (folder / name / "model.py").write_text("x = 1\n")
    rows = batch.grade_batch(submissions=folder, autograder=tmp_path / "ag.zip", out=tmp_path / "graded" / "out")
    assert [r["status"] for r in rows] == ["graded", "graded"]
    assert sorted(seen) == [("alice", (folder,)), ("bob", (folder,))]
    out = tmp_path / "graded" / "out"
    assert oct(out.stat().st_mode & 0o777) == oct(out.parent.stat().st_mode & 0o777) == "0o700"
    assert oct((out / "summary.csv").stat().st_mode & 0o777) == "0o600"


def test_batch_detection(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "model.py").write_text("")
    assert not batch.is_batch_folder(tmp_path / "one") and not batch.is_batch(tmp_path / "one", None)
    (tmp_path / "many" / "a").mkdir(parents=True)
    (tmp_path / "many" / "b").mkdir()
    (tmp_path / "many" / ".DS_Store").write_text("")
    assert batch.is_batch_folder(tmp_path / "many") and batch.batch_problem(tmp_path / "many") is None
    assert batch.is_batch(tmp_path / "many", None) and not batch.is_batch(tmp_path / "many", False)
    assert not batch.is_batch_folder(tmp_path / "missing")
    # A zipped folder (one folder holding the work) is one submission, never a batch of one.
    (tmp_path / "nested" / "my_hw").mkdir(parents=True)
    (tmp_path / "nested" / "my_hw" / "model.py").write_text("")
    (tmp_path / "nested" / "notes.txt").write_text("to do")
    assert not batch.is_batch_folder(tmp_path / "nested") and not batch.is_batch(tmp_path / "nested", None)
    # A stray file never silently turns a batch into one submission: without submission-like folders
    # it is one upload; --batch grades the folders and lists the file as ignored.
    (tmp_path / "many" / "notes.txt").write_text("to do")
    assert not batch.is_batch_folder(tmp_path / "many") and not batch.is_batch(tmp_path / "many", None)
    assert batch.is_batch(tmp_path / "many", True) and batch.stray_files(tmp_path / "many") == ["notes.txt"]
    assert batch.ignored_rows(tmp_path / "many") == [{"name": "notes.txt", "score": None, "total": None,
                                                      "status": "ignored: not a submission folder", "seconds": None}]
    with pytest.raises(NotegradeError, match=r"--batch: .*missing is not a folder of submission folders"):
        batch.is_batch(tmp_path / "missing", True)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "notes.txt").write_text("")
    with pytest.raises(NotegradeError, match=r"--batch: .*files holds no submission folders \(only notes.txt\)"):
        batch.is_batch(tmp_path / "files", True)


def _forgotten_batch(folder: pathlib.Path) -> pathlib.Path:
    """Two students' submission folders (one zipped-folder style) and an instructor's stray notes.txt."""
    (folder / "alice").mkdir(parents=True)
    (folder / "alice" / "model.py").write_text("")
    (folder / "bob" / "hw2").mkdir(parents=True)
    (folder / "bob" / "hw2" / "model.pt").write_bytes(b"")
    (folder / "notes.txt").write_text("to do")
    return folder


def test_a_forgotten_batch_flag_is_refused_with_the_fix(tmp_path):
    """`grade DIR` on submission folders plus a stray file: exit 1 naming the batch and --batch, nothing
    graded (not one upload with no files); --no-batch grades it as one upload."""
    folder = _forgotten_batch(tmp_path / "all")
    proc = subprocess.run(NOTEGRADE + ["grade", str(folder), "--autograder", str(tmp_path / "ag.zip"),
                                       "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{folder} looks like a batch of 2 submissions (alice, bob)" in proc.stderr
    assert "Add --batch to grade each folder" in proc.stderr and "notes.txt" in proc.stderr
    assert not (tmp_path / "out").exists()
    # --no-batch: one upload (here the missing autograder is the next thing it says)
    proc = subprocess.run(NOTEGRADE + ["grade", str(folder), "--autograder", str(tmp_path / "ag.zip"), "--no-batch"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and "no such autograder" in proc.stderr, proc.stderr


def test_batch_grades_the_folders_and_lists_stray_files_as_ignored(tmp_path, monkeypatch, capsys):
    """`grade DIR --batch` beside a stray file: the folders are graded, notes.txt is an "ignored" row
    in the console table and in summary.csv, and the exit status is that of the graded ones."""
    folder = _forgotten_batch(tmp_path / "all")
    graded = []

    def fake_folders(folders, **_):
        graded.extend(f.name for f in folders)
        return [{"name": f.name, "score": 50.0, "total": 100.0, "status": "graded", "seconds": 1.0} for f in folders]

    monkeypatch.setattr(batch, "grade_folders", fake_folders)
    out = tmp_path / "out"
    assert grade_cli.run(_parse([str(folder), "--autograder", "ag.zip", "--batch", "--out", str(out)])) == 0
    assert graded == ["alice", "bob"]
    console = capsys.readouterr().out
    assert "notes.txt" in console and "ignored: not a submission folder" in console
    assert "alice          50 / 100     1.0s  graded" in console
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[-1] == "notes.txt,,,ignored: not a submission folder,," and len(summary) == 4


def test_batch_flag_and_jobs_without_a_batch_are_errors_that_say_why(tmp_path):
    (tmp_path / "many").mkdir()
    (tmp_path / "many" / "notes.txt").write_text("to do")
    with pytest.raises(NotegradeError, match=r"--batch: .* holds no submission folders \(only notes.txt\)"):
        grade_and_report(submission=tmp_path / "many", autograder=tmp_path / "ag.zip", is_batch=True)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "model.py").write_text("")
    with pytest.raises(NotegradeError, match="--jobs 2 grades several submissions at once, but .* is one submission"):
        grade_and_report(submission=tmp_path / "one", autograder=tmp_path / "ag.zip", jobs=2)


def test_not_an_autograder_is_a_one_line_error(tmp_path):
    submission = tmp_path / "sub"
    submission.mkdir()
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(NOTEGRADE + ["grade", str(submission), "--autograder", str(tmp_path / "empty")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "not an autograder (missing rubric.toml" in proc.stderr
    proc = subprocess.run(NOTEGRADE + ["grade", str(tmp_path / "nope"), "--autograder", str(tmp_path / "empty")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and "no such submission" in proc.stderr


def test_zip_entries_outside_the_target_are_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(NotegradeError, match="would extract outside"):
        one_submission.grade_submission(submission=tmp_path, autograder=archive, out=tmp_path / "out")
    assert not (tmp_path.parent / "escaped.txt").exists()
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(NotegradeError):
        one_submission.grade_submission(submission=tmp_path, autograder=tmp_path / "bad.zip", out=tmp_path / "out")


def _damaged_zips(folder: pathlib.Path) -> "dict[str, pathlib.Path]":
    """A zip cut short (no end-of-archive record), one whose entry fails its CRC, and a .zip that is text."""
    folder.mkdir()
    whole = folder / "whole.zip"
    with zipfile.ZipFile(whole, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("model.py", "x = 1\n" * 200)
    data = whole.read_bytes()
    (folder / "cut.zip").write_bytes(data[:len(data) // 2])
    at = data.index(b"x = 1")
    (folder / "crc.zip").write_bytes(data[:at] + b"y" + data[at + 1:])
    (folder / "text.zip").write_text("not a zip at all")
    return {name: folder / f"{name}.zip" for name in ("cut", "crc", "text")}


def test_a_damaged_zip_is_named_as_such_as_autograder_or_as_submission(tmp_path):
    """`grade` on a corrupt .zip says it is not a readable zip (as regrade does), exit 1, never "must be a
    directory or a .zip file"."""
    zips = _damaged_zips(tmp_path / "zips")
    fake = tmp_path / "autograder"  # enough of an autograder to reach the submission's unpacking
    for name in ("rubric.toml", "heldout.safetensors", "autograder/run_autograder.py"):
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text("")
    (tmp_path / "sub").mkdir()
    for kind, path in zips.items():
        for args in (["grade", str(tmp_path / "sub"), "--autograder", str(path)],
                     ["grade", str(path), "--autograder", str(fake)]):
            proc = subprocess.run(NOTEGRADE + args + ["--out", str(tmp_path / "out")], capture_output=True, text=True,
                                  timeout=120)
            assert proc.returncode == 1, (kind, proc.stdout + proc.stderr)
            assert f"{path}: not a readable zip (" in proc.stderr and proc.stderr.count("\n") == 1, (kind, proc.stderr)
            assert "must be a directory or a .zip file\n" not in proc.stderr
            assert kind != "crc" or "Bad CRC-32 for file 'model.py'" in proc.stderr, proc.stderr


def test_missing_metadata_file_is_refused(tmp_path):
    with pytest.raises(NotegradeError, match="no such metadata file"):
        one_submission.grade_submission(submission=tmp_path, autograder=tmp_path, metadata=tmp_path / "m.json", out=tmp_path / "o")


@pytest.mark.parametrize("content, problem", [
    (b"sid,score\n1,90\n", "is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    (b"\xff\xfe binary", "is not UTF-8 text"),
    (b"[1, 2]", "holds a JSON list, not an object"),
    (b'{"assignment": {"due_date": "2024-10-07T23:59:00-07:00"}}', "cannot date the submission (no created_at)"),
    (b'{"created_at": "2024-10-08T00:30:00-07:00"}', "cannot date the submission (no assignment.due_date)"),
    (b'{"created_at": "2024-10-08T00:30:00-07:00", "assignment": {"due_date": "soon"}}',
     "cannot date the submission (assignment.due_date: 'soon' is not an ISO 8601 timestamp)"),
])
def test_a_metadata_file_that_is_not_submission_metadata_is_an_error_naming_it(tmp_path, content, problem):
    """`grade --metadata FILE`: a file the instructor names must date the submission, else exit 1 naming FILE
    (not a grade without a late penalty whose note names submission_metadata.json); batches and --docker too."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.py").write_text("")
    metadata = tmp_path / "notgrades.csv"
    metadata.write_bytes(content)
    for extra in ([], ["--docker"]):
        proc = subprocess.run(NOTEGRADE + ["grade", str(tmp_path / "sub"), "--autograder", str(tmp_path / "ag.zip"),
                                           "--metadata", str(metadata), "--out", str(tmp_path / "out")] + extra,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"metadata file {metadata} {problem}" in proc.stderr and "submission_metadata.json Gradescope" \
            in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists()
    good = tmp_path / "meta.json"
    good.write_text(json.dumps({"created_at": "2024-10-08T00:30:00-07:00",
                                "users": [{"assignment": {"due_date": "2024-10-09T23:59:00-07:00"}}]}))
    one_submission.check_metadata_file(good)  # an extension's own due date is one too


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    grade_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_docker_flag_dispatches_to_docker_grade(tmp_path, monkeypatch):
    from autograder.instructor.grading.docker import grading as docker_grading

    calls = []
    monkeypatch.setattr(docker_grading, "grade_and_report", lambda **kwargs: calls.append(kwargs) or 0)
    args = _parse([str(tmp_path), "--autograder", "ag.zip", "--docker", "--image", "tag", "--jobs", "3"])
    assert grade_cli.run(args) == 0
    assert calls == [{"submission": tmp_path, "autograder": pathlib.Path("ag.zip"), "metadata": None,
                      "out": pathlib.Path("graded"), "image": "tag", "jobs": 3, "base_image": None, "batch": None}]
    assert grade_cli.run(_parse([str(tmp_path), "--autograder", "ag.zip", "--docker", "--base-image", "local:1"])) == 0
    assert calls[-1]["base_image"] == "local:1" and calls[-1]["image"] is None
    assert grade_cli.run(_parse([str(tmp_path), "--autograder", "ag.zip", "--docker", "--batch"])) == 0
    assert calls[-1]["batch"] is True
    with pytest.raises(NotegradeError, match="--python does not apply with --docker"):
        grade_cli.run(_parse([str(tmp_path), "--autograder", "ag.zip", "--docker", "--python", "/usr/bin/python3"]))
    with pytest.raises(NotegradeError, match="--image only applies with --docker"):
        grade_cli.run(_parse([str(tmp_path), "--autograder", "ag.zip", "--image", "tag"]))
    with pytest.raises(NotegradeError, match="--base-image only applies with --docker"):
        grade_cli.run(_parse([str(tmp_path), "--autograder", "ag.zip", "--base-image", "local:1"]))


def test_docker_grading_follows_the_same_batch_rules(tmp_path, monkeypatch, capsys):
    """--docker: the forgotten --batch is refused the same way; with --batch the folders go to containers
    and the stray file is an "ignored" row of the printed table."""
    from autograder.instructor.grading.docker import grading as docker_grading
    from autograder.instructor.grading.docker.container import ContainerRun

    folder = _forgotten_batch(tmp_path / "all")
    with pytest.raises(NotegradeError, match="looks like a batch of 2 submissions .* Add --batch"):
        grade_cli.run(_parse([str(folder), "--autograder", "ag.zip", "--docker"]))
    assert [p.name for p in docker_grading.find_submissions(folder, batch=True)] == ["alice", "bob"]
    assert docker_grading.find_submissions(folder, batch=False) == [folder]

    def fake_containers(*, submission, batch, **_):
        return [ContainerRun(submission=str(p), exit_code=0, wall_s=1.0, peak_memory_mb=100.0, peak_rss_mb=90.0,
                             oom_killed=False, timed_out=False, results={"score": 50.0, "extra_data": {"total_points": 100}})
                for p in docker_grading.find_submissions(submission, batch=batch)]

    monkeypatch.setattr(docker_grading, "grade_in_containers", fake_containers)
    assert grade_cli.run(_parse([str(folder), "--autograder", "ag.zip", "--docker", "--batch"])) == 0
    console = capsys.readouterr().out
    assert "bob" in console and "notes.txt" in console and "ignored: not a submission folder" in console


def test_base_image_flag_wins_over_the_environment(monkeypatch):
    from autograder.instructor.grading.docker import image as docker_image

    monkeypatch.setenv("NOTEGRADE_BASE_IMAGE", "from-env:1")
    assert docker_image.base_image_name("from-flag:2") == "from-flag:2"
    assert docker_image.base_image_name(None) == "from-env:1"
    monkeypatch.delenv("NOTEGRADE_BASE_IMAGE")
    assert docker_image.base_image_name(None) == docker_image.GRADESCOPE_BASE_IMAGE == "gradescope/autograder-base:latest"


def test_base_image_reaches_the_docker_build(tmp_path, monkeypatch):
    """grade_cli.run -> docker grade_and_report -> ensure_image builds FROM the flag's image (a fake engine records it)."""
    from autograder.instructor.grading.docker import image as docker_image

    class FakeEngine:
        def __init__(self):
            self.builds = []
            self.images = self
            self.api = self

        def get(self, tag):
            import docker

            raise docker.errors.ImageNotFound(tag)

        def build(self, **kwargs):
            self.builds.append(kwargs)
            return iter([{"error": "stop here: the build arguments are what this test checks\n"}])

    engine = FakeEngine()
    monkeypatch.setattr(docker_image, "docker_client", lambda: engine)
    monkeypatch.setenv("NOTEGRADE_BASE_IMAGE", "from-env:1")
    source = tmp_path / "ag"
    for name in docker_image.REQUIRED:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("")
    (source / "rubric.toml").write_text((REPO / "tests" / "rubrics" / "rendered.toml").read_text())
    (source / "Dockerfile").write_text("FROM ${BASE_IMAGE}\n")
    submission = tmp_path / "sub"
    submission.mkdir()
    (submission / "model.py").write_text("")
    args = _parse([str(submission), "--autograder", str(source), "--docker", "--base-image", "local-base:1",
                   "--out", str(tmp_path / "out")])
    with pytest.raises(NotegradeError, match="stop here"):
        grade_cli.run(args)
    assert [b["buildargs"] for b in engine.builds] == [{"BASE_IMAGE": "local-base:1"}]


def test_help_shows_examples():
    proc = subprocess.run(NOTEGRADE + ["grade", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "notegrade grade my_submission/ --autograder autograder.zip" in proc.stdout
    assert "--jobs" in proc.stdout and "--docker" in proc.stdout


def test_a_stopped_grading_run_stops_its_graders_and_starts_no_new_one(monkeypatch):
    """A cancelled Slurm task's SIGTERM (local_grading.stop_graders) reaches the running grader at once
    instead of letting it grade on until Slurm's SIGKILL, and no later submission starts grading."""
    import threading
    import time

    from autograder.instructor.grading import local as local_grading

    monkeypatch.setattr(local_grading, "_STOPPED", threading.Event())
    code = "import signal,sys,time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); time.sleep(60)"
    stopper = threading.Timer(1.0, local_grading.stop_graders)
    stopper.start()
    started = time.monotonic()
    assert local_grading.run_grader([sys.executable, "-c", code], timeout_s=60) == 7
    assert time.monotonic() - started < 20
    with pytest.raises(NotegradeError, match="stopped"):
        local_grading.run_grader([sys.executable, "-c", "pass"], timeout_s=60)
