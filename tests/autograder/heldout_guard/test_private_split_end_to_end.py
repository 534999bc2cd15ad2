"""The private control split end to end: render -> heldout -> build -> grade -> report -> regrade (slow).

A public world rendered from TimGM6mb (the demo's dataset: train/valid/test with disjoint
instruments) and a private control split rendered from FluidR3 with a secret variation (`notegrade
data render --single-split private --variation-secret`); `notegrade heldout --control` packs it with
a training sample and the reference's numbers; `notegrade build` ships it under a rubric that
scores 80% on the control notes.  Two submissions are graded in the sandbox, in a batch and again in
a regrade of an export with the integrity analysis and the class report: the reference, and a
model that knows the public test labels (trained on the public test split: what a lookup buys).
The second is flagged by the lookup detector in instructor-only places only; the first is not.
"""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import torch

from autograder.cli import main as cli_main
from testkit.autograder_dir import ensure_worker_python, train_reference
from testkit.heldout_attack_support import line, student_view, subset_rubric

PUBLIC = ["--soundfont", "/usr/share/sounds/sf2/TimGM6mb.sf2", "--max-programs-per-family", "8",
          "--notes-per-instrument", "16", "--seed", "0", "--workers", "2"]
PRIVATE = ["--soundfont", "/usr/share/sounds/sf2/FluidR3_GM.sf2", "--max-programs-per-family", "2",
           "--notes-per-instrument", "12", "--single-split", "private", "--workers", "2"]
pytestmark = pytest.mark.slow


def _cli(*argv: str) -> None:
    assert cli_main(list(argv)) == 0, argv


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Everything up to the autograder zip, and the two submissions' folders."""
    from reference.make_features import build_feature_file
    from testkit.autograder_dir import make_submission

    ensure_worker_python()
    root = tmp_path_factory.mktemp("private_split")
    _cli("data", "render", "--out", str(root / "data"), *PUBLIC)
    _cli("data", "render", "--out", str(root / "private"), "--variation-secret", str(root / "private.secret"), *PRIVATE)
    for split in ("train", "test"):
        build_feature_file(nsynth=root / "data" / f"nsynth-{split}", out=root / f"{split}.safetensors", progress=False)
    models = {"reference": train_reference(root / "train.safetensors", epochs=12, seed=0),
              "lookup": train_reference(root / "test.safetensors", epochs=12, seed=0)}
    torch.save(models["reference"], root / "reference.pt")
    _cli("heldout", "--nsynth", str(root / "data" / "nsynth-test"), "--out", str(root / "heldout.safetensors"),
         "--train-sample", str(root / "data" / "nsynth-train"), "--sample-size", "300",
         "--control", str(root / "private" / "nsynth-private"), "--reference-model", str(root / "reference.pt"))
    rubric = root / "rubric.toml"
    rubric.write_text(subset_rubric(("1.1", "4.1"), zero_at=0.10, full_at=0.60,
                                    extra="\n[heldout]\ncontrol_weight = 0.8\n"))
    _cli("build", "--rubric", str(rubric), "--heldout", str(root / "heldout.safetensors"),
         "--out", str(root / "autograder.zip"), "--quiet")
    for name, state in models.items():
        make_submission(root / "submissions" / name, state_dict=state)
    return root


@pytest.fixture(scope="module")
def graded(course):
    from autograder.instructor.grading.batch import grade_batch

    rows = grade_batch(submissions=course / "submissions", autograder=course / "autograder.zip",
                       out=course / "graded", jobs=2)
    assert sorted(r["status"] for r in rows) == ["graded", "graded"], rows
    return {name: json.loads((course / "graded" / name / "results.json").read_text()) for name in ("reference", "lookup")}


def test_the_private_split_is_rendered_packed_and_shipped(course):
    from autograder.featurefile import read_feature_file

    manifest = json.loads((course / "private" / "render_manifest.json").read_text())
    assert set(manifest["counts"]) == {"private"} and len(manifest["variation"]["secret_fingerprint"]) == 12
    heldout = read_feature_file(course / "heldout.safetensors")
    control = json.loads(heldout.metadata["control"])
    assert len(heldout.control) == control["count"] == manifest["totals"]["private"]
    assert control["render"]["secret_fingerprint"] == manifest["variation"]["secret_fingerprint"]
    reference = json.loads(heldout.metadata["reference"])
    assert 0 < reference["control_accuracy"] < 1 and reference["control_count"] == len(heldout.control)
    import zipfile

    with zipfile.ZipFile(course / "autograder.zip") as archive:
        shipped = json.loads(archive.read("MANIFEST.json"))
    assert shipped["heldout"]["control"] == len(heldout.control)


def test_the_item_scores_the_rubrics_mix_and_says_so(course, graded):
    reference = json.loads((course / "graded" / "reference" / "results.json").read_text())
    item = next(t for t in reference["tests"] if t.get("number") == "4.1")
    assert "80% from the course's control notes" in item["output"] and "20% from the public test notes" in item["output"]
    control = float(re.search(r"control notes \((\d+\.\d)%", item["output"]).group(1)) / 100
    public = float(re.search(r"public test notes \((\d+\.\d)%", item["output"]).group(1)) / 100
    mixed = float(re.search(r"held-out accuracy (\d+\.\d)%", item["output"]).group(1)) / 100
    assert mixed == pytest.approx(0.8 * control + 0.2 * public, abs=0.0011)
    assert graded["lookup"]["extra_data"]["heldout_accuracy"] is not None


def test_the_lookup_detector_flags_the_public_only_gain_for_instructors_only(graded):
    honest, lookup = (graded[name]["extra_data"]["integrity"]["lookup"] for name in ("reference", "lookup"))
    assert honest is not None and honest["flagged"] is False, honest
    assert lookup["flagged"] is True and lookup["excess"] > 0.2, lookup
    assert lookup["public_accuracy"] > 0.9 > lookup["control_accuracy"]
    hidden = line(graded["lookup"], "integrity")
    assert hidden["visibility"] == "hidden" and "Lookup detector: FLAGGED" in hidden["output"]
    assert "Lookup detector: not flagged" in line(graded["reference"], "integrity")["output"]
    for results in graded.values():
        view = student_view(results)
        assert "ookup" not in view and "FLAGGED" not in view


def test_the_regrade_its_reports_and_the_class_report(course, graded, tmp_path):
    from autograder.instructor.class_report.page import write_class_report as class_report
    from autograder.instructor.demo.synthetic_class import DUE, LATE_DUE, Student, Submission, make_export
    from autograder.instructor.regrade.run import regrade_export as regrade

    def files(name: str) -> dict:
        folder = course / "submissions" / name
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    students = [Submission(2001, [Student("Ada Honest", "200001", "ada@example.edu")], DUE, "reference", None,
                           files=files("reference")),
                Submission(2002, [Student("Lu Kup", "200002", "lu@example.edu")], DUE, "reference", None,
                           files=files("lookup"))]
    export = make_export(tmp_path / "export", submissions=students, as_zip=True)
    summary = regrade(export=export.path, autograder=course / "autograder.zip", out=tmp_path / "regrade", jobs=2,
                      extensions=export.extensions_csv, due=DUE.isoformat(), late_due=LATE_DUE.isoformat(),
                      progress=False, integrity=True)
    grades = pd.read_csv(summary.paths["grades"], dtype={"sid": str}).set_index("name")
    assert (grades["status"] == "graded").all()
    # The regrade reproduces the batch's held-out scores (same files, same autograder, same secret).
    for name, key in (("Ada Honest", "reference"), ("Lu Kup", "lookup")):
        assert grades.loc[name, "heldout_accuracy"] == pytest.approx(graded[key]["extra_data"]["heldout_accuracy"])
    flagged = pd.read_csv(summary.integrity.paths["csv"], dtype=str, keep_default_na=False)
    students_flagged = flagged[flagged["subject"] == "student"].set_index("name_a")
    assert "lookup" in students_flagged.loc["Lu Kup", "flags"]
    assert "looked up the public test labels?" in students_flagged.loc["Lu Kup", "evidence"]
    assert "Ada Honest" not in students_flagged.index or "lookup" not in students_flagged.loc["Ada Honest", "flags"]
    # The regrade's per-student reports/ are what instructors hand out (audience "published"): never the verdict;
    # the instructor's full report (submissions/<id>/report.md) shows it, and the student's report (results.json's
    # output, audience "student") never does.
    from autograder.report import markdown_report

    lu = next(p for p in summary.paths["reports"].iterdir() if p.name.endswith("Lu_Kup.md")).read_text()
    assert "ookup" not in lu and "FLAGGED" not in lu and "Integrity" not in lu
    instructor = (tmp_path / "regrade" / "submissions" / "submission_2002" / "report.md").read_text()
    assert "Lookup detector: FLAGGED" in instructor
    for results in graded.values():
        student = markdown_report(results, audience="student")
        assert "ookup" not in student and "FLAGGED" not in student and "ookup" not in results["output"]
    page = class_report(grades=summary.paths["grades"], out=tmp_path / "class_report.html").read_text()
    assert "Lu Kup" in page and "looked up the public test labels?" in page
    shutil.rmtree(tmp_path / "regrade" / "submissions", ignore_errors=True)
