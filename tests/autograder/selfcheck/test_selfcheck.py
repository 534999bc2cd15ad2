"""The student self-check: ``python selfcheck.py`` (vendored) and ``notegrade selfcheck`` (toolkit).

The vendored copy runs in a subprocess from a copy of the template, with the repo unimportable
(as on a student's laptop) and, when these tests run as root, as the user ``nobody``: the reference
solution filled in gets full visible marks, the raw template gets zero with a "not implemented"
message per item.  On corpus cases the self-check and ``run_autograder`` (both run here) agree item
by item: status, points and, except for the accuracy label, the very same message.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch

from testkit import sandbox_support as support
from autograder import cli, run_autograder
from autograder.selfcheck import command as selfcheck
from autograder.selfcheck import plan as selfcheck_plan
from autograder.errors import NotegradeError
from autograder.instructor.assign import template as assign
from autograder.instructor.assign import vendor_selfcheck
from autograder.rubric import parse_rubric, tomllib
from testkit.autograder_dir import REPO, STUDENT_FILES, grading_assets, heldout_flip_notes, make_autograder_dir
from testkit.flat_template import FLAT_PRELUDE

ROOT = os.geteuid() == 0
TEMPLATE = REPO / "student_template"
NOT_IMPLEMENTED = "not implemented yet (NotImplementedError: TODO: "
# Appended to test_assign's prelude (repo off sys.path, `autograder`/`reference` unimportable): run
# selfcheck.py as `python selfcheck.py` would, and say if any module of the repo got imported anyway.
RUN_VENDORED = FLAT_PRELUDE + textwrap.dedent(f"""
    import atexit, runpy
    def _report_repo_modules():
        leaked = sorted(n for n, m in list(sys.modules.items()) if str(getattr(m, "__file__", "") or "").startswith(
            ({str(REPO / "autograder")!r}, {str(REPO / "reference")!r})))
        if leaked:
            sys.stderr.write("REPO MODULES IMPORTED: " + ", ".join(leaked) + "\\n")
    atexit.register(_report_repo_modules)
    sys.argv = ["selfcheck.py"] + sys.argv[1:]
    runpy.run_path("selfcheck.py", run_name="__main__")
""")


@pytest.fixture(scope="module")
def assets():
    """Synthetic held-out features (testkit/nsynth_factory.py through the real front-end), a briefly
    trained reference model, and the rendered-data rubric calibrated so that model clears it."""
    return grading_assets()


@pytest.fixture(scope="module")
def public_dir():
    """A directory every user can read (pytest's tmp_path is root-only): templates for `nobody`."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-selfcheck-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def calibrated_template(assets, public_dir) -> pathlib.Path:
    """`notegrade assign` with the calibrated test rubric (the tiny model can't reach real NSynth's 60%)."""
    rubric = public_dir / "rendered_calibrated.toml"
    rubric.write_text(assets.rubric)
    out = public_dir / "calibrated_template"
    assign.write_template(assign.generate_files(rubric=rubric), out)
    return out


def run_vendored(template: pathlib.Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python selfcheck.py ARGS`` in ``template``, the repo unimportable; as `nobody` when root."""
    # As root, grading_assets() sets NOTEGRADE_WORKER_PYTHON when this interpreter is out of
    # `nobody`'s reach (a venv under /root); otherwise this interpreter is reachable and used as is.
    python = (os.environ.get("NOTEGRADE_WORKER_PYTHON") if ROOT else None) or sys.executable
    command = ["env", "-i", f"HOME={template}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", python, "-c", RUN_VENDORED, *args]
    if ROOT:
        command = ["runuser", "-u", "nobody", "--"] + command
    result = subprocess.run(command, cwd=template, capture_output=True, text=True, timeout=timeout)
    assert "REPO MODULES IMPORTED" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def fill_with_reference(template: pathlib.Path, destination: pathlib.Path, *, state_dict_path: pathlib.Path) -> pathlib.Path:
    shutil.copytree(template, destination)
    for name in STUDENT_FILES:
        shutil.copyfile(REPO / "reference" / name, destination / name)
    shutil.copyfile(state_dict_path, destination / "model.pt")
    return destination


# ---------------------------------------------------------------- the vendored copy, as a student runs it
def test_reference_filled_template_gets_full_visible_marks(assets, calibrated_template, public_dir):
    work = fill_with_reference(calibrated_template, public_dir / "filled", state_dict_path=assets.state_dict_path)
    shutil.copyfile(assets.heldout, work / "valid.safetensors")
    result = run_vendored(work, "--features", "valid.safetensors", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["passed"] and report["score"] == report["max_score"] == 100
    assert [i["number"] for i in report["items"]] == ["1.1", "1.2", "2.1", "2.2", "2.3", "2.4", "3.1", "3.2", "3.3", "3.4", "4.1"]
    assert all(i["status"] == "passed" and i["score"] == i["points"] for i in report["items"]), report["items"]
    accuracy = report["items"][-1]
    assert accuracy["estimated_from_your_file"] and selfcheck.VALIDATION_LABEL in accuracy["output"]
    assert "held-out accuracy" not in accuracy["output"]
    # perturbed (keyed on the submission) against unperturbed: the notes the perturbation can flip
    assert abs(accuracy["data"]["accuracy"] - assets.accuracy) <= (heldout_flip_notes() + 0.5) / accuracy["data"]["count"]
    text = selfcheck.render_text(report)
    assert "All 11 visible items pass: 100 / 100 visible points." in text
    assert f"* {selfcheck.VALIDATION_LABEL}" in text and "per family: bass " in text


def test_raw_template_gives_zero_with_a_not_implemented_message_per_item(assets, public_dir):
    work = public_dir / "raw"
    shutil.copytree(TEMPLATE, work)
    shutil.copyfile(assets.state_dict_path, work / "model.pt")  # so that item 4.1 gets as far as NoteCNN()
    shutil.copyfile(assets.heldout, work / "valid.safetensors")
    result = run_vendored(work, "--features", "valid.safetensors")
    assert result.returncode == 1, result.stderr
    table, *sections = result.stdout.split("\n\n")[1:]
    rows = table.splitlines()
    assert rows[0].split() == ["#", "item", "points", "status"] and len(rows) == 1 + 11 + 2
    plan = selfcheck_plan.load_plan(TEMPLATE / "_selfcheck" / "rubric.json")
    for row, item in zip(rows[1:12], plan.items, strict=True):
        assert row.startswith(f"  {item.number} ") and row.endswith((f" 0 / {item.points:g}  error", f" 0 / {item.points:g}  failed"))
    assert rows[12].endswith(" 0 / 100") and "total of the visible items" in rows[12]
    assert rows[13] == f"  * {selfcheck.VALIDATION_LABEL}: an estimate, Gradescope scores it on held-out notes"
    messages = {section.split(" ", 1)[0]: section for section in sections[:-1]}
    assert sorted(messages) == [item.number for item in plan.items]
    for number, section in messages.items():
        assert NOT_IMPLEMENTED in section, section
    assert sections[-1].startswith("11 of 11 visible items do not pass yet (1.1, 1.2, 2.1")


def test_without_features_model_pt_is_still_loaded_and_run(tmp_path, assets):
    export = json.loads((TEMPLATE / "_selfcheck" / "rubric.json").read_text())
    export["items"] = [item for item in export["items"] if item["check"] == "heldout_accuracy"]
    (tmp_path / "rubric.json").write_text(json.dumps(export))
    # A usable model.pt: loaded, run on a synthetic batch, and the accuracy "not run" with the hint.
    work = fill_with_reference(TEMPLATE, tmp_path / "filled", state_dict_path=assets.state_dict_path)
    report = selfcheck.main(directory=work, rubric=tmp_path / "rubric.json", progress=False)
    assert [(i["number"], i["status"], i["score"]) for i in report["items"]] == [("4.1", "not run", 0.0)]
    assert report["items"][0]["output"] == ("model.pt loads into your NoteCNN (10 tensors, 119,691 values) and gives "
                                            "(4, 11) logits on a synthetic batch.\n" + selfcheck.NO_FEATURES_HINT)
    # Issue 19.2: an item that could not run for want of --features is not a failure (exit 0), and says so.
    text = selfcheck.render_text(report)
    assert report["passed"] and report["items"][0]["needs_features"]
    points = f"{export['items'][0]['points']:g}"  # the course rubric's (25 in the default one)
    assert f"All 0 visible items that ran pass: 0 / {points} visible points." in text
    assert f"4.1 ({points} points) needs --features VALID_FILE to measure the accuracy" in text
    assert "do not pass yet" not in text
    # No model.pt (the raw template): the error Gradescope gives, not "not run", and a failure.
    report = selfcheck.main(directory=TEMPLATE, rubric=tmp_path / "rubric.json", progress=False)
    assert report["items"][0]["status"] == "error" and not report["passed"]
    assert report["items"][0]["output"].startswith("model.pt is missing from the submission")
    assert "1 of 1 visible items do not pass yet (4.1)" in selfcheck.render_text(report)


def test_a_nested_upload_names_its_model_and_what_gradescope_would_ignore(tmp_path, assets):
    """Issue 19.3: the header names the model.pt that is checked, and the "Ignored" note the grader gives
    appears for files that are not the starter folder's own."""
    export = json.loads((TEMPLATE / "_selfcheck" / "rubric.json").read_text())
    export["items"] = [item for item in export["items"] if item["check"] == "architecture_params"]
    (tmp_path / "rubric.json").write_text(json.dumps(export))
    work = fill_with_reference(TEMPLATE, tmp_path / "filled", state_dict_path=assets.state_dict_path)
    upload = tmp_path / "upload"
    (upload / "my_hw").mkdir(parents=True)
    for name in ("model.py", "losses.py", "train.py", "model.pt", "features.py"):
        (upload / "my_hw" / name).write_bytes((work / name).read_bytes())
    (upload / "my_hw" / "labels.npy").write_bytes(b"\x93NUMPY")
    report = selfcheck.main(directory=upload, rubric=tmp_path / "rubric.json", progress=False)
    assert report["model"] == str(upload / "my_hw" / "model.pt")
    assert any("inside the folder my_hw/" in note for note in report["notes"])
    assert "Ignored (only model.py, losses.py, train.py, model.pt are graded): labels.npy." in report["notes"]
    assert not any("features.py" in note for note in report["notes"])  # the starter's own file: no note


# ---------------------------------------------------------------- verdicts agree with the autograder
def _rubric_for(base: str, numbers: "tuple[str, ...] | None") -> str:
    """The calibrated rubric restricted to ``numbers`` (all items when None), points summed again."""
    import tomli_w

    data = tomllib.loads(base)
    if numbers is not None:
        data["items"] = [item for item in data["items"] if item["number"] in numbers]
        data["total_points"] = sum(item["points"] for item in data["items"])
        data["leaderboard"] = [c for c in data.get("leaderboard", []) if c["item"] in numbers]
    return tomli_w.dumps(data)


def _both(case: support.Case, tmp_path: pathlib.Path, assets, numbers: "tuple[str, ...] | None") -> "tuple[dict, dict]":
    """(autograder's tests by number, self-check's items by number) for one corpus case."""
    built = support.build_case(case, tmp_path / "case", heldout=assets.heldout,
                               state_dict=torch.load(assets.state_dict_path, weights_only=True))
    rubric = tmp_path / "rubric.toml"
    rubric.write_text(_rubric_for(assets.rubric, numbers))
    root = tmp_path / "autograder"
    make_autograder_dir(root / "source", rubric=rubric, heldout=assets.heldout)
    shutil.copytree(built.submission, root / "submission", symlinks=True)
    graded = run_autograder.main(root=root)
    report = selfcheck.main(directory=built.submission, rubric=rubric, features=assets.heldout, progress=False)
    tests = {t["number"]: t for t in graded["tests"] if t.get("number")}
    return tests, {item["number"]: item for item in report["items"]}


AGREEMENT_CASES = {  # case -> the items it breaks plus one it must not (None: the whole rubric)
    "conv3_missing_bias": ("1.1", "3.3", "4.1"),
    "symlink_to_heldout": ("3.3", "4.1"),
    "syntax_error": ("1.2", "2.2", "2.4"),
    "train_no_zero_grad": ("3.1", "3.4"),
    "checkpoint_2gb": ("1.1", "4.1"),
    "fit_no_restore": None,
    "wrong_output_shape": ("1.2", "2.3", "4.1"),
    "evaluate_no_eval": ("3.2", "3.3"),
}
FAST_AGREEMENT = ("conv3_missing_bias", "symlink_to_heldout")


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST_AGREEMENT else pytest.mark.slow)
                                  for n in AGREEMENT_CASES])
def test_verdicts_agree_with_the_autograder_item_by_item(name, tmp_path, assets):
    case = next(c for c in support.load_cases() if c.name == name)
    tests, items = _both(case, tmp_path, assets, AGREEMENT_CASES[name])
    assert sorted(tests) == sorted(items) and tests
    for number, test in tests.items():
        item = items[number]
        assert (item["score"], item["check_status"]) == (test["score"], test["extra_data"]["status"]), (number, test, item)
        # gradescope-utils keeps the newline of the printed output
        assert item["output"].replace(selfcheck.VALIDATION_LABEL, "held-out accuracy") == test["output"].rstrip("\n"), number
    broken = {n for n, t in tests.items() if t["extra_data"]["check"] in case.expect}
    assert broken and all(items[n]["status"] != "passed" for n in broken)
    assert all(items[n]["status"] == "passed" for n in set(items) - broken)


# ---------------------------------------------------------------- plan export, CLI errors (no worker)
HIDDEN_ITEM = """
[[items]]
number = "5.1"
title = "Hidden robustness"
points = 10
visibility = "hidden"
check = "train_step"
"""


def test_export_keeps_only_visible_items_and_round_trips(tmp_path):
    text = (REPO / "rubrics" / "winter2025_hw3.toml").read_text().replace("total_points = 100", "total_points = 110")
    rubric = parse_rubric(text + HIDDEN_ITEM, source="w.toml")
    export = json.loads(json.dumps(selfcheck_plan.export_rubric(rubric, frontend_hash="abc")))
    plan = selfcheck_plan.plan_from_export(export, source="rubric.json")
    assert [i.number for i in plan.items] == [i.number for i in rubric.items if i.visibility == "visible"]
    assert "5.1" not in [i.number for i in plan.items] and (plan.not_shown_items, plan.not_shown_points) == (1, 10.0)
    assert plan.items[-1].params == {"zero_at": 0.25, "full_at": 0.6} and plan.items[-1].timeout_s == 240
    assert plan.frontend_hash == "abc" and plan.late_policy["cap"] == 10
    assert selfcheck_plan.late_summary(plan.late_policy) == (
        "1 point per started day late, at most 10 points, 0 points after the late due date")
    (tmp_path / "r.toml").write_text(text + HIDDEN_ITEM)
    assert selfcheck_plan.load_plan(tmp_path / "r.toml").items == plan.items  # the toolkit reads .toml directly


def test_a_toml_rubric_in_the_toolkit_restricts_imports_to_the_grading_runtime(tmp_path):
    """The toolkit's requirements.txt (autograder/gradescope/) is found from selfcheck/plan.py (the re-layout
    had moved the module one folder down without the path, so a .toml rubric allowed every import)."""
    (tmp_path / "r.toml").write_text((REPO / "rubrics" / "winter2025_hw3.toml").read_text())
    allowed = selfcheck_plan.load_plan(tmp_path / "r.toml").allowed_imports
    assert allowed is not None and "torch" in allowed and "librosa" not in allowed


@pytest.mark.parametrize("data, message", [
    ({"format": "other"}, "not a self-check rubric (notegrade-selfcheck-rubric/1); regenerate it"),
    ({"format": selfcheck_plan.EXPORT_FORMAT, "items": [{"number": "1", "title": "t", "points": 1, "check": "nope"}]},
     "item 1: unknown check 'nope'"),
    ({"format": selfcheck_plan.EXPORT_FORMAT, "items": [{"number": "1", "title": "t", "check": "train_step"}]},
     "malformed item"),
    ({"format": selfcheck_plan.EXPORT_FORMAT, "items": []}, "no visible items"),
])
def test_a_stale_or_broken_export_is_refused_with_the_reason(data, message):
    with pytest.raises(NotegradeError, match=re.escape(message)):
        selfcheck_plan.plan_from_export(data, source="rubric.json")


def test_cli_errors_are_one_line_with_exit_status_1_and_usage_is_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an assignment")
    for args, message in [((str(tmp_path / "nope"),), "no such folder"),
                          ((str(tmp_path),), "has none of model.py, losses.py, train.py"),
                          ((str(TEMPLATE), "--features", str(tmp_path / "v.safetensors")), "--features"),
                          ((str(TEMPLATE), "--rubric", str(tmp_path / "r.json")), "rubric file not found")]:
        assert cli.main(["selfcheck", *args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("notegrade selfcheck: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    for usage in ([], [str(TEMPLATE), "--bogus"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["selfcheck", *usage])
        assert exit_info.value.code == 2


def test_features_made_with_another_front_end_are_refused(tmp_path):
    features = tmp_path / "valid.safetensors"
    support.make_heldout(features, state_dict=support.reference_state_dict(0), n=4)  # its front-end hash is "test"
    export = json.loads((TEMPLATE / "_selfcheck" / "rubric.json").read_text())
    (tmp_path / "rubric.json").write_text(json.dumps(export))
    with pytest.raises(NotegradeError, match=r"--features: .*different front-end parameters"):
        selfcheck.main(directory=TEMPLATE, rubric=tmp_path / "rubric.json", features=features, progress=False)


def test_a_large_feature_file_is_cut_to_evenly_spaced_notes(tmp_path):
    from autograder.featurefile import read_feature_file

    features = tmp_path / "valid.safetensors"
    labels = support.make_heldout(features, state_dict=support.reference_state_dict(0), n=10)
    plan = selfcheck_plan.Plan(title="t", total_points=0.0, items=(), frontend_hash="test")
    path, count, used = selfcheck._features_for_check(features, plan, tmp_path, max_notes=4)
    subset = read_feature_file(path)
    assert (count, used, len(subset)) == (10, 4, 4) and subset.note_strs == ["n0", "n3", "n6", "n9"]
    assert subset.labels.tolist() == labels[[0, 3, 6, 9]].tolist() and subset.frontend_hash == "test"
    assert selfcheck._features_for_check(features, plan, tmp_path, max_notes=0) == (features, 10, 10)
    with pytest.raises(NotegradeError, match="--max-notes must be 0"):
        selfcheck.main(directory=TEMPLATE, features=features, max_notes=-1)


def test_staging_copies_only_the_submitted_files_and_keeps_what_the_sandbox_refuses(tmp_path):
    plan = selfcheck_plan.Plan(title="t", total_points=0.0, items=(), sandbox={"max_file_mb": 50.0})
    source = tmp_path / "folder"
    (source / "runs" / "first").mkdir(parents=True)
    (source / "model.py").write_text("x = 1\n")
    (source / "features.py").write_text("support code\n")
    os.symlink("/etc/passwd", source / "train.py")
    with open(source / "model.pt", "wb") as handle:
        handle.truncate(60 << 20)  # over the 50 MB limit: staged sparse, never read
    assert selfcheck._stage(source, None, tmp_path / "staged", plan) == ([], None)  # the starter files: no note
    staged = tmp_path / "staged"
    assert sorted(p.name for p in staged.iterdir()) == ["model.pt", "model.py", "train.py"]
    assert os.readlink(staged / "train.py") == "/etc/passwd" and (staged / "model.pt").stat().st_size == 60 << 20
    (source / "model.pt").unlink()
    (source / "runs" / "first" / "model.pt").write_bytes(b"weights")
    os.symlink(source / "runs" / "first" / "model.pt", source / "latest.pt")
    selfcheck._stage(source, source / "latest.pt", tmp_path / "explicit", plan)  # --model: its target
    assert not (tmp_path / "explicit" / "model.pt").is_symlink()
    assert (tmp_path / "explicit" / "model.pt").read_bytes() == b"weights"
    assert selfcheck._hints(source, None) == [
        f"model.pt is not in {source}, but {source}/runs/first/model.pt is: pass --model {source}/runs/first/model.pt"]
    # A folder holding one folder with the work: graded from it, with the note run_autograder gives.
    nested = tmp_path / "upload"
    shutil.copytree(source, nested / "my_hw", symlinks=True)
    (nested / "__MACOSX").mkdir()
    notes, folder = selfcheck._stage(nested, None, tmp_path / "nested", plan)
    assert folder == "my_hw"
    assert notes and notes[0].startswith("Your upload has everything inside the folder my_hw/")
    assert sorted(p.name for p in (tmp_path / "nested").iterdir()) == ["model.py", "train.py"]


def test_vendored_files_import_nothing_from_the_toolkit():
    files = assign.selfcheck_files(repo_root=REPO, rubric=assign.DEFAULT_RUBRIC)
    assert "selfcheck.py" in files and "_selfcheck/rubric.json" in files and "_selfcheck/harness/worker_main.py" in files
    assert not any(name.startswith("_selfcheck/instructor") or name.endswith("rubric.py") for name in files)
    for name, data in files.items():
        if name.endswith(".py"):
            text = data.decode()
            assert "from autograder" not in text and "import autograder" not in text and "reference." not in text, name
    assert assign.selfcheck_files(repo_root=REPO, rubric=None) == {}
    with pytest.raises(NotegradeError, match="harness imports autograder.checks"):
        vendor_selfcheck._harness_source("from autograder.checks import REGISTRY\n", path="autograder/harness/x.py")


def test_run_is_a_thin_layer_over_main(monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    selfcheck.add_arguments(parser)
    report = {"title": "T", "directory": "d", "model": "d/model.pt", "features": None, "feature_count": None,
              "items": [{"number": "1.1", "title": "Counts", "points": 10.0, "score": 10.0, "status": "passed",
                         "output": "✓ conv1 parameters: 160", "estimated_from_your_file": False, "data": {},
                         "needs_features": False}],
              "score": 10.0, "max_score": 10.0, "passed": True, "not_shown_items": 0, "not_shown_points": 0.0,
              "late_policy": "no late penalty", "hints": [], "seconds": 1.0}
    seen = {}
    monkeypatch.setattr(selfcheck, "main", lambda **kwargs: seen.update(kwargs) or report)
    assert selfcheck.run(parser.parse_args(["d", "--json"])) == 0
    assert json.loads(capsys.readouterr().out) == report and seen["directory"] == pathlib.Path("d")
    report.update(passed=False)
    assert selfcheck.run(parser.parse_args(["d"])) == 1
    out = capsys.readouterr().out
    assert "  1.1   Counts" in out and "10 / 10  passed" in out and "    ✓ conv1 parameters: 160" in out


def test_the_rubric_is_the_folders_own_or_the_autograders_never_a_hard_coded_offering(tmp_path, assets):
    """Point 7: a demo once scored 14.12/30 here and 30/30 on its autograder, because the two used different rubrics."""
    assert selfcheck_plan.default_rubric(TEMPLATE) == TEMPLATE / "_selfcheck" / "rubric.json"
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(NotegradeError, match="has no _selfcheck/rubric.json .* pass --autograder autograder.zip"):
        selfcheck_plan.default_rubric(bare)
    # --autograder: that autograder's rubric.toml and requirements.txt, from its zip or its folder.
    rubric = tmp_path / "rubric.toml"
    rubric.write_text(assets.rubric)
    source = make_autograder_dir(tmp_path / "autograder", rubric=rubric, heldout=assets.heldout)
    archive = shutil.make_archive(str(tmp_path / "autograder_zip"), "zip", source)
    for given in (source, pathlib.Path(archive)):
        plan = selfcheck_plan.plan_from_autograder(given)
        assert plan.title == parse_rubric(assets.rubric).title and plan.items[-1].params["full_at"] == 0.35
        assert "torch" in plan.allowed_imports and "numpy" in plan.allowed_imports
        assert "librosa" not in plan.allowed_imports and "tqdm" not in plan.allowed_imports
    with pytest.raises(NotegradeError, match="give --rubric or --autograder, not both"):
        selfcheck.main(directory=TEMPLATE, rubric=rubric, autograder=source)
    with pytest.raises(NotegradeError, match="not an autograder zip"):
        (tmp_path / "empty.zip").write_bytes(open(shutil.make_archive(str(tmp_path / "e"), "zip", bare), "rb").read())
        selfcheck_plan.plan_from_autograder(tmp_path / "empty.zip")
