"""``notegrade calibrate`` and self-check parity over its mistakes.

For every calibrate case, the self-check (the student's ``python selfcheck.py`` logic, on the case's
folder) and the grader in the Gradescope layout (``notegrade grade``: the grading runtime built from
the autograder's requirements.txt) give item-for-item identical verdicts: points, status and message.
With ``--features`` every item is compared (the accuracy label aside); without it, the held-out
item is compared whenever the grader refuses model.pt (then the self-check must say exactly the
same), and is otherwise "not run" after loading model.pt.

The committed calibration (``docs/calibration.json``, the instructor guide's table) must be current: each case
graded here earns, item by item, the fraction that file records for it (the held-out item's status
only: its fraction depends on the thresholds), the instructor guide shows its table, and it prices every
mistake at 3 points or more under each shipped offering rubric (``rubrics/*.toml``) and every
``free`` case at nothing.
"""
from __future__ import annotations

import csv
import io
import pathlib

import pytest
import torch

from autograder.errors import NotegradeError
from autograder.instructor.assign.template import DEFAULT_RUBRIC
from autograder.instructor.calibrate import cases
from autograder.instructor.calibrate import command as calibrate
from autograder.instructor.calibrate.calibration import Calibration, Row, render_markdown, render_text, slug
from autograder.instructor.calibrate.reweigh import load_calibration, reweigh
from autograder.instructor.grading import one_submission as grade
from autograder.rubric import RubricItem, load_rubric
from autograder.selfcheck import command as selfcheck
from testkit.autograder_dir import REPO, grading_assets, make_autograder_dir

# the rest are slow: ~35 s each (a grading and two self-checks)
FAST = ("empty model.pt", "import librosa", "import tqdm", "import tqdm in train.py", "F.max_pool2d pooling")
COMMITTED = REPO / "docs" / "calibration.json"
OFFERING_RUBRICS = sorted((REPO / "rubrics").glob("*.toml"))  # what a course uses; the demo's lives with the demo
MIN_COST = 3.0


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
                   "nn.Sequential with other names", "softmax without max-subtraction", "BCE without clamping",
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


def _committed_verdicts(name: str) -> "dict[str, dict]":
    """Check name -> the {"fraction", "status"} docs/calibration.json records for this case."""
    committed = load_calibration(COMMITTED)
    fractions = committed.reference if name == "reference" else \
        next(r.items for r in committed.rows if r.mistake.name == name)
    return {committed.checks[number]["check"]: verdict for number, verdict in fractions.items()}


def _assert_committed_calibration_is_current(name: str, tests: "dict[str, dict]") -> None:
    recorded = _committed_verdicts(name)
    for number, test in tests.items():
        check, extra = test["extra_data"]["check"], test["extra_data"]
        want = recorded[check]
        assert extra["status"] == want["status"], (name, number, "recalibrate: see docs/instructor-guide.md, Calibrating the rubric")
        if check != "heldout_accuracy" or extra["status"] != "ran":  # the held-out fraction depends on thresholds
            assert abs(extra["fraction"] - want["fraction"]) < 1e-5, (name, number, extra["fraction"], want,
                                                                      "recalibrate: see docs/instructor-guide.md, Calibrating the rubric")


def _compare(mistake: cases.Mistake, setup: dict, tmp_path: pathlib.Path) -> None:
    case = cases.build(mistake, tmp_path / "case", state=setup["state"])
    graded = grade.grade_submission(submission=case, autograder=setup["source"], out=tmp_path / "graded", quiet=True)
    assert graded["extra_data"]["runtime"]["kind"] == "grading-venv"
    tests = {t["number"]: t for t in graded["tests"] if t.get("number")}
    _assert_committed_calibration_is_current(mistake.name, tests)
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
    # tests/rubrics/rendered.toml gives 3.4 five points: the two "best weights" sub-checks (4 of 10) are 2
    assert fit.split()[-2:] == ["2", "98"]  # nearly free under this rubric, and the table says so
    assert "* nearly free (at most 2 points): fit keeps the last weights." in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "calibration.csv").read_text())))
    assert [r["mistake"] for r in rows] == ["empty model.pt", "fit keeps the last weights"]
    assert rows[0]["lost 4.1"] == "30.0" and rows[1]["lost 3.4"] == "2.0" and rows[1]["total lost"] == "2.0"
    markdown = (tmp_path / "out" / "calibration.md").read_text()
    assert markdown.startswith("| mistake | 1.1 (10) |") and "| empty model.pt |" in markdown
    assert (tmp_path / "out" / "cases" / "empty_model_pt.json").is_file()
    out = tmp_path / "out"  # the reference's results item by item: the instructor's only (issue 17)
    assert {("dir" if p.is_dir() else "file", oct(p.stat().st_mode & 0o777)) for p in [out, *out.rglob("*")]} == \
        {("dir", "0o700"), ("file", "0o600")}
    written = load_calibration(tmp_path / "out" / "calibration.json")  # what --from and the instructor guide's table read
    assert written.checks["3.4"] == {"check": "fit_early_stopping", "params": {}}
    fit_row = next(r for r in written.rows if r.mistake.name == "fit keeps the last weights")
    assert fit_row.items["3.4"] == {"fraction": 0.6, "status": "ran"} and written.reference["3.4"]["fraction"] == 1.0


# --- the committed calibration: current, in the instructor guide, and fair under every shipped rubric ---------

def _offering(path: pathlib.Path) -> Calibration:
    rubric = load_rubric(path)
    return reweigh(load_calibration(COMMITTED), rubric.items, total_points=rubric.total_points)


def test_the_committed_calibration_grades_every_case_and_the_readme_shows_its_table():
    committed = load_calibration(COMMITTED)
    assert [r.mistake.name for r in committed.rows] == [m.name for m in cases.MISTAKES if m.name != "reference"]
    assert not any(r.error for r in committed.rows)
    assert all(v == {"fraction": 1.0, "status": "ran"} for v in committed.reference.values())  # the reference: 100
    # The table is the default rubric's: the same items, points, checks and params as the rubric today.
    rubric = load_rubric(DEFAULT_RUBRIC)
    assert committed.items == [(i.number, i.title, i.points) for i in rubric.items]
    assert committed.checks == {i.number: {"check": i.check, "params": dict(i.params)} for i in rubric.items}
    priced = reweigh(committed, rubric.items, total_points=rubric.total_points)
    for row, again in zip(committed.rows, priced.rows):
        assert again.lost == pytest.approx(row.lost, abs=0.011) and again.total_lost == pytest.approx(row.total_lost,
                                                                                                      abs=0.011)
    guide = (REPO / "docs" / "instructor-guide.md").read_text()
    assert render_markdown(committed) in guide, "the instructor guide's calibrate table is stale: paste docs/calibration.md"


@pytest.mark.parametrize("path", OFFERING_RUBRICS, ids=lambda p: p.name)
def test_every_mistake_costs_at_least_3_points_under_each_shipped_offering_rubric(path):
    assert {p.name for p in OFFERING_RUBRICS} >= {"fall2024_a2.toml", "winter2025_hw3.toml"}
    priced = _offering(path)
    assert priced.total_points == 100 and priced.baseline == 100
    cheap = {r.mistake.name: r.total_lost for r in priced.rows if not r.mistake.free and r.total_lost < MIN_COST}
    assert not cheap, f"{path.name}: mistakes that cost under {MIN_COST:g} points: {cheap}"
    charged = {r.mistake.name: r.total_lost for r in priced.rows if r.mistake.free and r.total_lost != 0}
    assert not charged, f"{path.name}: correct code or a tolerated slip lost points: {charged}"
    core = {"no zero_grad", "evaluate without eval()", "fit keeps the last weights", "softmax without max-subtraction",
            "BCE without clamping", "BatchNorm added"}  # the issue's "almost nothing" rows
    assert core <= {r.mistake.name for r in priced.rows if r.total_lost >= MIN_COST}
    assert "F.max_pool2d pooling" in {r.mistake.name for r in priced.rows if r.mistake.free}


def _toy(rows: "list[Row]") -> Calibration:
    return Calibration(items=[("1", "layers", 10.0), ("2", "held-out", 20.0)], baseline=30.0, total_points=30.0,
                       rows=rows, seconds=1.0, runtime={},
                       checks={"1": {"check": "architecture_params", "params": {}},
                               "2": {"check": "heldout_accuracy", "params": {"zero_at": 0.2, "full_at": 0.6}}},
                       reference={"1": {"fraction": 1.0, "status": "ran"}, "2": {"fraction": 1.0, "status": "ran"}})


def test_reweigh_prices_the_recorded_fractions_by_check_and_refuses_a_check_it_did_not_grade():
    mistake = next(m for m in cases.MISTAKES if m.name == "BatchNorm added")
    row = Row(mistake, 26.25, {"1": 3.75, "2": 0.0}, 3.75, items={"1": {"fraction": 0.625, "status": "ran"},
                                                                  "2": {"fraction": 1.0, "status": "ran"}})
    items = [RubricItem("A", "held-out", 50.0, "heldout_accuracy", {"zero_at": 0.2, "full_at": 0.6}),
             RubricItem("B", "layers", 4.0, "architecture_params")]
    priced = reweigh(_toy([row]), items, total_points=54.0)
    assert priced.items == [("A", "held-out", 50.0), ("B", "layers", 4.0)] and priced.baseline == 54.0
    assert priced.rows[0].lost == {"A": 0.0, "B": 1.5} and priced.rows[0].total_lost == 1.5
    assert priced.rows[0].score == 52.5
    other = [RubricItem("A", "held-out", 50.0, "heldout_accuracy", {"zero_at": 0.3, "full_at": 0.6})]
    with pytest.raises(NotegradeError, match="item A runs heldout_accuracy with params .* did not grade"):
        reweigh(_toy([row]), other, total_points=50.0)


def test_the_legend_names_a_free_case_that_lost_points():
    free = next(m for m in cases.MISTAKES if m.name == "F.max_pool2d pooling")
    charged = Row(free, 28.75, {"1": 1.25, "2": 0.0}, 1.25, items={})
    text = render_text(_toy([charged]))
    assert "Meant to cost nothing, but lost points: F.max_pool2d pooling (1.25)" in text
    fine = Row(free, 30.0, {"1": 0.0, "2": 0.0}, 0.0, items={})
    text = render_text(_toy([fine]))
    assert "No points lost, as meant (correct code or a slip the grader tolerates" in text and "Meant to" not in text


def test_calibrate_from_prices_the_committed_calibration_under_a_rubric_without_grading(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    calibrate.add_arguments(parser)
    rubric = tmp_path / "heavy.toml"
    text = (REPO / "rubrics" / "winter2025_hw3.toml").read_text()
    rubric.write_text(text.replace('points = 8\ntimeout_s = 90\ncheck = "train_step"',
                                   'points = 16\ntimeout_s = 90\ncheck = "train_step"').replace(
        "total_points = 100", "total_points = 108"))
    args = parser.parse_args(["--from", str(COMMITTED), "--rubric", str(rubric), "--out", str(tmp_path / "out")])
    assert calibrate.run(args) == 0
    out = capsys.readouterr().out
    zero_grad = next(line for line in out.splitlines() if line.startswith("no zero_grad"))
    assert zero_grad.split()[-2:] == ["6.4", "101.6"]  # 3.1's 16 points x the 0.4 the sub-checks take
    assert (tmp_path / "out" / "calibration.json").is_file() and "3.1 (16)" in out
    for argv, message in ((["--from", str(COMMITTED)], "give --rubric"),
                          (["--from", str(COMMITTED), "--rubric", str(rubric), "--model", "m.pt"], "no --autograder"),
                          (["--rubric", str(rubric)], "calibrate grades with --autograder ZIP and --model")):
        with pytest.raises(NotegradeError, match=message):
            calibrate.run(parser.parse_args(argv))


def test_a_broken_model_gets_the_graders_message_not_torchs(tmp_path, capsys):
    """`calibrate --model` on an empty file or a Git LFS pointer: exit 1 with the student side's message for
    that file (autograder/checks/checkpoint.py), naming it, before anything is graded."""
    from autograder.cli import main as cli

    (tmp_path / "autograder").mkdir()  # refused before the autograder is read
    for content, message in ((b"", "is empty: 0 bytes"),
                             (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n",
                              "is a Git LFS pointer, not the weights: run `git lfs pull`")):
        model = tmp_path / "model.pt"
        model.write_bytes(content)
        code = cli(["calibrate", "--autograder", str(tmp_path / "autograder"), "--model", str(model),
                    "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 1 and f"{model} {message}" in err, err
        assert "EOFError" not in err and "WeightsUnpickler" not in err and not (tmp_path / "out").exists()
