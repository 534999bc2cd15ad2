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

    def fake(*, submission, autograder, metadata, out, quiet, python, private):
        seen.append((submission.name, private))
        return {"score": 1.0, "tests": [], "extra_data": {"total_points": 1.0}}

    monkeypatch.setattr(batch, "grade_submission", fake)
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
    assert not batch.is_batch_folder(tmp_path / "one")
    (tmp_path / "many" / "a").mkdir(parents=True)
    (tmp_path / "many" / "b").mkdir()
    (tmp_path / "many" / ".DS_Store").write_text("")
    assert batch.is_batch_folder(tmp_path / "many") and batch.batch_problem(tmp_path / "many") is None
    assert not batch.is_batch_folder(tmp_path / "missing")
    # A zipped folder (one folder holding the work) is one submission, never a batch of one.
    (tmp_path / "nested" / "my_hw").mkdir(parents=True)
    (tmp_path / "nested" / "my_hw" / "model.py").write_text("")
    assert not batch.is_batch_folder(tmp_path / "nested")
    # A stray file never silently turns a batch into one submission: --batch says why.
    (tmp_path / "many" / "notes.txt").write_text("to do")
    assert not batch.is_batch_folder(tmp_path / "many")
    assert "holds files besides submission folders (notes.txt)" in batch.batch_problem(tmp_path / "many")


def test_batch_flag_and_jobs_without_a_batch_are_errors_that_say_why(tmp_path):
    (tmp_path / "many" / "a").mkdir(parents=True)
    (tmp_path / "many" / "notes.txt").write_text("to do")
    with pytest.raises(NotegradeError, match=r"--batch: .* holds files besides submission folders \(notes.txt\)"):
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


def test_missing_metadata_file_is_refused(tmp_path):
    with pytest.raises(NotegradeError, match="no such metadata file"):
        one_submission.grade_submission(submission=tmp_path, autograder=tmp_path, metadata=tmp_path / "m.json", out=tmp_path / "o")


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
