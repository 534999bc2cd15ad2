"""``notegrade demo``: the whole toolkit end to end (slow), and its argument, --out and failure handling (fast).

The slow test runs the real demo once (render, features, training, autograder zip, starter code,
grading in the sandbox, regrade, class report: ~3-4 minutes on 2 shared cores) and checks the
artefacts and every score it prints.  The fast tests replace the steps' work where a test is
about the orchestration (step lines, failures naming their step, expectations reported).
"""
from __future__ import annotations

import json
import pathlib
import re
import zipfile

import pandas as pd
import pytest

from autograder.cli import main as cli_main
from autograder.errors import NotegradeError
from autograder.instructor.demo import run as demo
from autograder.instructor.demo import steps as demo_steps
from autograder.instructor.demo import summary as demo_summary

REPO = pathlib.Path(__file__).resolve().parents[3]
STEP_LINE = re.compile(r"^\[(\d)/8\] .+ +\d+\.\d s  \S")
STEP_NAMES = ("render", "features", "train", "build", "starter", "grade", "regrade", "report")


# ------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    lines: list[str] = []
    result = demo.run_demo(out=out, jobs=2, progress=False, echo=lines.append)
    return result, lines, out


@pytest.mark.slow
def test_demo_runs_every_step_and_meets_its_expectations(demo_run):
    result, lines, out = demo_run
    assert result.problems == []
    steps = [line for line in lines if STEP_LINE.match(line)]
    assert [int(STEP_LINE.match(line)[1]) for line in steps] == list(range(1, 9))
    record = json.loads((out / "demo.json").read_text())
    assert record["status"] == "done" and len(record["steps"]) == 8 and record["problems"] == []
    assert sum(step["seconds"] for step in record["steps"]) <= record["seconds"] + 1
    summary = demo_summary.summary_text(result)
    for relative in ("autograder.zip", "class_report.html", "starter.zip", "regrade/"):
        assert relative in summary
    assert "no copydetect/ (only when code is flagged)" in summary  # no pair of the demo is flagged for code


@pytest.mark.slow
def test_demo_artefacts(demo_run):
    _, _, out = demo_run
    manifest = json.loads((out / "data" / "render_manifest.json").read_text())
    assert manifest["totals"]["test"] >= 11 * 8
    assert not (out / "data" / "nsynth-train").exists()  # WAVs removed without --keep
    assert (out / "features" / "train.safetensors").is_file() and (out / "heldout.safetensors").is_file()
    assert {"model.pt", "checkpoint.pt", "curves.png"} <= {p.name for p in (out / "reference").iterdir()}
    with zipfile.ZipFile(out / "autograder.zip") as archive:
        names = set(archive.namelist())
        assert {"setup.sh", "run_autograder", "rubric.toml", "heldout.safetensors"} <= names
        assert archive.read("rubric.toml") == (REPO / "autograder" / "instructor" / "demo" / "demo_rubric.toml").read_bytes()
        assert not any(n.startswith(("reference/", "tests/", "autograder/instructor/")) for n in names)
    starter = (out / "starter" / "model.py").read_text()
    assert "raise NotImplementedError(" in starter and "nn.Conv2d(32, 64" not in starter
    with zipfile.ZipFile(out / "starter.zip") as archive:
        assert any(n.endswith("/model.py") for n in archive.namelist())
    page = (out / "class_report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) == 6 and all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in images)
    assert "<h2>Integrity: evidence for review (no score was changed)</h2>" in page
    assert (out / "regrade" / "integrity" / "integrity.csv").is_file()
    check_class_report_page(page)


def check_class_report_page(page: str) -> None:
    """What the demo's class report must say beyond its figures (issue 19: 13, 14)."""
    # Dev's model.py does not compile: listed with what errored, not only a 50 in the histogram.
    assert re.search(r"<td>Dev Null</td><td>100004</td><td>graded, items errored</td><td class=\"r\">50</td>"
                     r"<td>1\.1, 1\.2, 4\.1 \(error\): model\.py has a syntax error", page)
    # score_changes.csv of the regrade: Cleo +6 (her extension), Gus and Hana -3 (late), Dev +50, Eve +7.33.
    assert "<h2>Score changes against Gradescope</h2>" in page and "5 of 7 students&#x27; scores differ" in page
    assert "<td>Gus Grissom</td><td>100007</td><td class=\"r\">100</td><td class=\"r\">97</td><td class=\"r\">−3</td>" in page
    assert "The reference line (" in page and "low mantissa bits of model.pt&#x27;s weights replaced" in page
    # Every student hands in the reference code: code is not evidence, so no (empty) shared-regions column.
    assert "<th>shared regions</th>" not in page and "No shared-regions column" in page
    assert "the median pair of this class shares model.py 100%" in page


@pytest.mark.slow
def test_demo_scores_reference_starter_and_mistakes(demo_run):
    import jsonschema

    result, _, out = demo_run
    schema = json.loads((REPO / "tests" / "schema" / "results.schema.json").read_text())
    for name in demo_steps.SUBMISSIONS:
        jsonschema.validate(json.loads((out / "graded" / name / "results.json").read_text()), schema)
    scores = result.scores

    def failing(name: str) -> set[str]:
        return {n for n, item in scores[name]["items"].items() if item["score"] < item["max_score"]}

    assert scores["reference"]["score"] == scores["reference"]["total"] == 100.0 and failing("reference") == set()
    assert scores["starter"]["score"] == 0.0
    assert all(item["score"] == 0 and "not implemented" in item["message"] for item in scores["starter"]["items"].values())
    # conv3 without bias: its model.pt has no conv3.bias, so only the architecture (and at most accuracy) suffer.
    assert "1.1" in failing("conv3_no_bias") and failing("conv3_no_bias") <= {"1.1", "4.1"}
    assert "is the bias missing?" in scores["conv3_no_bias"]["items"]["1.1"]["message"]
    assert failing("softmax_unstable") == {"2.4"}
    assert "nan" in scores["softmax_unstable"]["items"]["2.4"]["message"]
    assert failing("evaluate_no_eval") == {"3.3"}
    assert "model.eval()" in scores["evaluate_no_eval"]["items"]["3.3"]["message"]
    for mistake in demo_steps.MISTAKES:
        assert 0 < scores[mistake.name]["score"] < 100


@pytest.mark.slow
def test_demo_regrade_applies_late_penalty_and_extension(demo_run):
    _, _, out = demo_run
    grades = pd.read_csv(out / "regrade" / "grades.csv", dtype={"sid": str}).set_index("name")
    assert len(grades) == 7 and (grades["status"] == "graded").all()
    assert grades.loc["Ada Lovelace", ["penalty", "total"]].tolist() == [0.0, 100.0]
    # 1 day 2 h 5 min late at 3 points per started day: 6 points.
    assert grades.loc["Ben Franklin", ["penalty", "total"]].tolist() == [6.0, 94.0]
    assert grades.loc["Ben Franklin", "late_seconds"] > 86_400
    # Cleo submitted 1 day 12 h after the due date, within her extension: no penalty.
    assert grades.loc["Cleo Patra", ["penalty", "total"]].tolist() == [0.0, 100.0]
    assert "extension" in grades.loc["Cleo Patra", "lateness"]
    assert grades.loc["Gus Grissom", "penalty"] == grades.loc["Hana Abe", "penalty"] == 3.0
    architecture = [c for c in grades.columns if c.startswith("1.")]
    assert grades.loc["Dev Null", architecture].sum() == 0 < grades.loc["Dev Null", "total"] < 100
    losses = [c for c in grades.columns if c.startswith("2.")]
    assert grades.loc["Eve Adams", losses].sum() < grades.loc["Ada Lovelace", losses].sum()
    changes = pd.read_csv(out / "regrade" / "score_changes.csv")
    assert changes["changed"].any()
    canvas = pd.read_csv(out / "regrade" / "canvas.csv")
    assert canvas.iloc[0, 0].strip() == "Points Possible" and len(canvas) == 8


# ------------------------------------------------------------------------------- fast: arguments
@pytest.mark.parametrize("jobs", ["0", "-2", "two"])
def test_bad_jobs_is_a_usage_error(jobs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "--jobs", jobs])
    assert exit_info.value.code == 2
    assert "--jobs" in capsys.readouterr().err


def test_help_explains_the_root_worker_interpreter(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "NOTEGRADE_WORKER_PYTHON" in text and "/usr/bin/python3" in text and "--keep" in text


def test_unwritable_out_is_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert cli_main(["demo", "--out", str(blocker / "demo-out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("notegrade demo: error: cannot write to --out")
    assert cli_main(["demo", "--out", str(blocker)]) == 1
    assert "is a file" in capsys.readouterr().err


def test_out_must_be_empty_or_an_earlier_demo(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    with pytest.raises(NotegradeError, match="not empty and is not an earlier demo's output"):
        demo.prepare_out(mine)
    assert (mine / "thesis.tex").read_text() == "keep me"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / demo.MARKER).write_text("{}")
    (earlier / "stale.txt").write_text("old")
    demo.prepare_out(earlier)
    assert [p.name for p in earlier.iterdir()] == [demo.MARKER]


def test_the_demo_folder_is_private_whatever_the_umask(tmp_path, umask_022):
    """Issue 17: the demo writes a held-out file, a zip, a secret and a class's grades into --out."""
    demo.prepare_out(tmp_path / "a" / "demo-out")
    assert oct((tmp_path / "a" / "demo-out").stat().st_mode & 0o777) == oct((tmp_path / "a").stat().st_mode & 0o777) \
        == "0o700"


# ---------------------------------------------------------------------------- fast: orchestration
def _stub_steps(monkeypatch, failing: str | None = None, error: Exception | None = None) -> None:
    for name in STEP_NAMES:
        def work(self, name=name):
            if name == failing:
                raise error
            return f"{name} done"
        monkeypatch.setattr(demo_steps.Context, name, work)


def test_failing_step_is_named_and_recorded(tmp_path, monkeypatch):
    _stub_steps(monkeypatch, failing="train", error=NotegradeError("no training data"))
    lines: list[str] = []
    with pytest.raises(NotegradeError, match=r"^step 3/8 \(train the reference briefly\) failed: no training data$"):
        demo.run_demo(out=tmp_path / "out", jobs=1, progress=False, echo=lines.append)
    assert [line[:5] for line in lines if STEP_LINE.match(line)] == ["[1/8]", "[2/8]"]
    record = json.loads((tmp_path / "out" / demo.MARKER).read_text())
    assert record["status"] == "failed" and [s["number"] for s in record["steps"]] == [1, 2]


def test_unexpected_error_names_the_step_then_the_cli_reports_it(tmp_path, monkeypatch, capsys):
    _stub_steps(monkeypatch, failing="regrade", error=RuntimeError("boom"))
    assert cli_main(["demo", "--out", str(tmp_path / "out"), "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert "step 7/8 (regrade a synthetic class export) failed" in err
    assert "internal error: RuntimeError: boom" in err


def test_unmet_expectations_exit_1_with_a_list(tmp_path, monkeypatch, capsys):
    _stub_steps(monkeypatch)  # every step "succeeds" without grading anything
    assert cli_main(["demo", "--out", str(tmp_path / "out"), "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert sum(bool(STEP_LINE.match(line)) for line in out.splitlines()) == 8
    assert "expectation(s) not met" in out and "the reference should get full marks" in out


# ------------------------------------------------------------------------------------ fast: mistakes
@pytest.mark.parametrize("mistake", demo_steps.MISTAKES, ids=lambda m: m.name)
def test_mistakes_edit_the_reference_text(mistake):
    original = (REPO / "reference" / mistake.file).read_text()
    edited = mistake.edit(original)
    assert edited != original
    compile(edited, mistake.file, "exec")
    evaluate = edited[edited.index("def evaluate("):edited.index("def fit(")] if mistake.file == "train.py" else ""
    check = {"conv3_no_bias": lambda: 'nn.Conv2d(32, 64, kernel_size=3, padding="same", bias=False)' in edited,
             "softmax_unstable": lambda: "logits.amax(dim=dim" not in edited,
             "evaluate_no_eval": lambda: "model.eval()" not in evaluate and "with torch.no_grad()" not in evaluate}
    assert check[mistake.name]()


def test_a_mistake_whose_text_is_gone_is_a_loud_error():
    with pytest.raises(NotegradeError, match="update demo_steps.MISTAKES"):
        demo_steps.MISTAKES[0].edit("class NoteCNN: pass\n")
    with pytest.raises(NotegradeError, match="update demo_steps.MISTAKES"):
        demo_steps.unwrap_block("x = 1\n", "with torch.no_grad():")


# ------------------------------------------------------------------------------------ fast: summary
def test_summary_lists_only_the_files_the_run_wrote(tmp_path):
    regrade, integrity = tmp_path / "regrade", tmp_path / "regrade" / "integrity"
    integrity.mkdir(parents=True)
    for name in ("grades.csv", "score_changes.csv", "integrity/integrity.csv"):
        (regrade / name).write_text("x\n")
    (regrade / "reports").mkdir()
    result = demo.DemoResult(out=tmp_path, paths={"regrade": regrade, "integrity": integrity})
    lines = demo_summary.summary_text(result).splitlines()
    assert "  regrade/                             grades.csv, score_changes.csv, reports/" in lines  # no canvas.csv
    listed = next(line for line in lines if line.startswith("  regrade/integrity/"))
    # The demo's class flags identical checkpoints only: copydetect writes no report, so no copydetect/ is promised.
    assert listed.endswith("integrity.csv (flagged pairs and students, with the evidence), "
                           "no copydetect/ (only when code is flagged)")
    (integrity / "copydetect").mkdir()
    for pair in ("a__b", "a__c"):
        (integrity / "copydetect" / f"{pair}.html").write_text("<html></html>")
    listed = next(line for line in demo_summary.summary_text(result).splitlines() if line.startswith("  regrade/integrity/"))
    assert listed.endswith("with the evidence), copydetect/ (2 pair report(s))")
