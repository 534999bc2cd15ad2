"""``notegrade calibrate`` and self-check parity over its mistakes.

For every calibrate case, the self-check (the student's ``python selfcheck.py`` logic, on the case's
folder) and the grader in the Gradescope layout (``notegrade grade``: the grading runtime built from
the autograder's requirements.txt) give item-for-item identical verdicts: points, status and message.
With ``--features`` every item is compared (the accuracy label aside); without it, the held-out
item is compared whenever the grader refuses model.pt (then the self-check must say exactly the
same), and is otherwise "not run" after loading model.pt.
"""
from __future__ import annotations

import csv
import io
import pathlib

import pytest
import torch

from autograder.instructor.grading import one_submission as grade
from autograder.selfcheck import command as selfcheck
from autograder.instructor.calibrate import command as calibrate
from autograder.instructor.calibrate.calibration import slug
from autograder.instructor.calibrate import cases
from testkit.autograder_dir import grading_assets, make_autograder_dir

FAST = ("empty model.pt", "import librosa", "import tqdm", "import tqdm in train.py")  # the rest are slow: ~35 s each (a grading and two self-checks)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    assets = grading_assets()
    work = tmp_path_factory.mktemp("calibrate")
    rubric = work / "rubric.toml"
    rubric.write_text(assets.rubric)
    source = make_autograder_dir(work / "autograder", rubric=rubric, heldout=assets.heldout)
    return {"assets": assets, "source": source, "state": torch.load(assets.state_dict_path, weights_only=True),
            "work": work}


def test_the_set_has_every_mistake_the_issue_names_and_each_still_applies(tmp_path):
    names = {m.name for m in cases.MISTAKES}
    assert len(names) - 1 >= 15  # the reference is the baseline, not a mistake
    for needed in ("whole pickled model", "DataParallel module. keys", "empty model.pt", "text model.pt",
                   "Git LFS pointer", "CUDA-saved model.pt", "conv3 without bias", "BatchNorm added",
                   "nn.Sequential, other names", "softmax without max-subtraction", "BCE without clamping",
                   "CE gradient not divided by N", "fit keeps the last weights", "evaluate without eval()",
                   "no zero_grad", "import librosa", "import tqdm", "import tqdm in train.py", "nested folder"):
        assert needed in names
    state = grading_assets().state_dict_path
    for mistake in cases.MISTAKES:  # every patch still matches the reference (else a NotegradeError names it)
        built = cases.build(mistake, tmp_path / slug(mistake.name), state=torch.load(state, weights_only=True))
        root = built / mistake.folder if mistake.folder else built
        assert sorted(p.name for p in root.iterdir()) == ["losses.py", "model.pt", "model.py", "train.py"]
        reference = {n: (cases.REFERENCE / n).read_text() for n in cases.CODE_FILES}
        changed = [n for n in cases.CODE_FILES if (root / n).read_text() != reference[n]]
        assert bool(changed) == bool(mistake.patches or mistake.append or mistake.model_py), mistake.name


def _compare(mistake: cases.Mistake, setup: dict, tmp_path: pathlib.Path) -> None:
    case = cases.build(mistake, tmp_path / "case", state=setup["state"])
    graded = grade.grade_submission(submission=case, autograder=setup["source"], out=tmp_path / "graded", quiet=True)
    assert graded["extra_data"]["runtime"]["kind"] == "grading-venv"
    tests = {t["number"]: t for t in graded["tests"] if t.get("number")}
    with_features = selfcheck.main(directory=case, autograder=setup["source"], features=setup["assets"].heldout,
                                   progress=False)
    without = selfcheck.main(directory=case, autograder=setup["source"], progress=False)
    for report, features in ((with_features, True), (without, False)):
        items = {item["number"]: item for item in report["items"]}
        assert sorted(items) == sorted(tests), mistake.name
        for number, test in tests.items():
            item = items[number]
            if not features and test["extra_data"]["check"] == "heldout_accuracy" and test["extra_data"]["status"] == "ran":
                assert item["check_status"] == "not_run" and item["output"].endswith(selfcheck.NO_FEATURES_HINT)
                continue
            got = (item["score"], item["check_status"], item["output"].replace(selfcheck.VALIDATION_LABEL, "held-out accuracy"))
            assert got == (test["score"], test["extra_data"]["status"], test["output"].rstrip("\n")), (mistake.name, number)
    if mistake.name.startswith("import "):  # parity alone would also hold if both let the import through
        module = mistake.name.split()[1]
        assert any(f"No module named '{module}'" in t["output"] for t in tests.values()), mistake.name
        assert without["score"] < without["max_score"], mistake.name
    if mistake.folder:
        assert any("inside the folder my_hw/" in note for note in without["notes"])
        assert "inside the folder my_hw/" in graded["output"]


@pytest.mark.parametrize("name", [pytest.param(m.name, marks=() if m.name in FAST else pytest.mark.slow)
                                  for m in cases.MISTAKES])
def test_selfcheck_and_gradescope_layout_agree_item_for_item(name, setup, tmp_path):
    _compare(next(m for m in cases.MISTAKES if m.name == name), setup, tmp_path)


def test_calibrate_prints_the_cost_of_each_mistake_and_writes_markdown_and_csv(setup, tmp_path, capsys, umask_022):
    import argparse

    model = tmp_path / "model.pt"
    torch.save(setup["state"], model)
    model.chmod(0o600)  # the reference's weights: private, or a grader at the uid level refuses them
    parser = argparse.ArgumentParser()
    calibrate.add_arguments(parser)
    args = parser.parse_args(["--autograder", str(setup["source"]), "--model", str(model), "--out", str(tmp_path / "out"),
                              "--only", "empty model.pt", "--only", "fit keeps the last weights", "--jobs", "2"])
    assert calibrate.run(args) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["mistake", "1.1", "(10)"] and lines[0].split()[-2:] == ["lost", "score"]
    empty = next(line for line in lines if line.startswith("empty model.pt"))
    assert empty.split()[-3:] == ["30", "30", "70"]  # 4.1's 30 points, total 30 lost, 70 left
    fit = next(line for line in lines if line.startswith("fit keeps the last weights *"))
    assert fit.split()[-2:] == ["1", "99"]  # nearly free: one point, and the table says so
    assert "* nearly free (at most 2 points): fit keeps the last weights." in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "calibration.csv").read_text())))
    assert [r["mistake"] for r in rows] == ["empty model.pt", "fit keeps the last weights"]
    assert rows[0]["lost 4.1"] == "30.0" and rows[1]["lost 3.4"] == "1.0" and rows[1]["total lost"] == "1.0"
    markdown = (tmp_path / "out" / "calibration.md").read_text()
    assert markdown.startswith("| mistake | 1.1 (10) |") and "| empty model.pt |" in markdown
    assert (tmp_path / "out" / "cases" / "empty_model_pt.json").is_file()
    out = tmp_path / "out"  # the reference's results item by item: the instructor's only (issue 17)
    assert {("dir" if p.is_dir() else "file", oct(p.stat().st_mode & 0o777)) for p in [out, *out.rglob("*")]} == \
        {("dir", "0o700"), ("file", "0o600")}
