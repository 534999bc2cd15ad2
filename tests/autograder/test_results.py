"""results.json from outcomes: gradescope-utils fields, late line, clamping, schema, report golden file."""
from __future__ import annotations

import json
import os
import pathlib

import jsonschema
import pytest

from autograder.checks.outcome import ItemOutcome, SubCheck
from autograder.report import html_report, markdown_report
from autograder.results import GradedItem, build_results, error_results, not_run_outcome, write_json_atomically
from autograder.rubric import LatePolicy, LeaderboardColumn, Rubric, RubricItem

HERE = pathlib.Path(__file__).resolve().parents[1]  # tests/: schema/, golden/
SCHEMA = json.loads((HERE / "schema" / "results.schema.json").read_text())
GOLDEN = HERE / "golden" / "report.md"
FAMILIES = ["bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal"]
ITEMS = (
    RubricItem(number="1.1", title="Per-layer parameter counts", points=10.0, check="architecture_params", tags=("architecture",)),
    RubricItem(number="2.1", title="Loss values", points=20.0, check="loss_values", tags=("losses",)),
    RubricItem(number="3.1", title="Early stopping", points=20.0, check="fit_early_stopping", visibility="visible"),
    RubricItem(number="4.1", title="Held-out accuracy", points=30.0, check="heldout_accuracy", tags=("accuracy",)),
    RubricItem(number="5.1", title="Hidden robustness", points=20.0, check="loss_stability", visibility="hidden"),
)
RUBRIC = Rubric(title="Test course A2", total_points=100.0, items=ITEMS, late_policy=LatePolicy(amount=3),
                leaderboard=(LeaderboardColumn(name="Accuracy", item="4.1", field="accuracy"),))
METADATA = {"created_at": "2024-10-09T02:04:00-07:00",
            "assignment": {"due_date": "2024-10-07T23:59:00-07:00", "late_due_date": "2024-10-14T23:59:00-07:00"},
            "users": [{"name": "Ada", "email": "ada@example.edu", "id": 1}]}


def validate(results: dict) -> dict:
    jsonschema.validate(results, SCHEMA)
    return results


def accuracy_outcome(rng) -> ItemOutcome:
    confusion = rng.integers(0, 20, size=(11, 11))
    per_family = {name: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i, name in enumerate(FAMILIES)}
    accuracy = float(confusion.trace() / confusion.sum())
    return ItemOutcome(fraction=0.8, message=f"accuracy {accuracy:.1%} (0 points at 25%, full points at 60%)",
                       data={"accuracy": accuracy, "count": int(confusion.sum()), "per_family": per_family,
                             "confusion": confusion})  # numpy on purpose: results must make it JSON


def graded_items(rng) -> list[GradedItem]:
    return [
        GradedItem(ITEMS[0], ItemOutcome.from_subchecks([
            SubCheck("conv1 parameters", True), SubCheck("conv2 parameters", True), SubCheck("conv3 parameters", False,
            message="conv3 has 18,432 parameters, expected 18,496: is the bias missing?"), SubCheck("fc parameters", True)]), 1.25),
        GradedItem(ITEMS[1], ItemOutcome.from_subchecks([SubCheck("mse_loss", True, 2.0), SubCheck("cross_entropy | softmax", True)],
                                                        data={"accuracy": 1.0})),  # like train_overfit's: not held out
        GradedItem(ITEMS[2], ItemOutcome.failed("timeout", "fit did not finish within 60 s")),
        GradedItem(ITEMS[3], accuracy_outcome(rng), 4.5),
        GradedItem(ITEMS[4], not_run_outcome()),
    ]


def test_scores_statuses_and_gradescope_fields(rng):
    data = validate(build_results(rubric=RUBRIC, graded=graded_items(rng), metadata=METADATA, execution_time=12.345)
                    .to_gradescope_dict())
    tests = {t.get("number", t["name"]): t for t in data["tests"]}
    assert [t.get("number") for t in data["tests"]] == ["1.1", "2.1", "3.1", "4.1", "5.1", None]
    assert tests["1.1"]["score"] == 7.5 and tests["1.1"]["max_score"] == 10 and tests["1.1"]["status"] == "failed"
    assert tests["1.1"]["tags"] == ["architecture"] and tests["1.1"]["name"] == "1.1 Per-layer parameter counts"
    assert "✗ conv3 parameters: conv3 has 18,432 parameters, expected 18,496: is the bias missing?" in tests["1.1"]["output"]
    assert tests["2.1"]["status"] == "passed" and tests["2.1"]["score"] == 20
    assert tests["3.1"]["score"] == 0 and "fit did not finish within 60 s" in tests["3.1"]["output"]
    assert tests["3.1"]["extra_data"]["status"] == "timeout"
    assert tests["4.1"]["score"] == 24
    assert extra_is_heldout(data)
    assert tests["5.1"]["visibility"] == "hidden" and tests["5.1"]["output"].strip() == "not run: time budget exhausted"
    late = tests["Late penalty"]
    assert late["score"] == -6 and late["output"] == "submitted 1 day 2 h 5 min late → 2 days × 3 points = −6"
    assert data["score"] == 7.5 + 20 + 24 - 6
    assert data["execution_time"] == 12.345 and isinstance(data["execution_time"], float)
    assert (data["output_format"], data["visibility"], data["stdout_visibility"]) == ("md", "visible", "hidden")
    assert data["leaderboard"] == [{"name": "Accuracy", "value": pytest.approx(data["extra_data"]["heldout_accuracy"]), "order": "desc"}]
    extra = data["extra_data"]
    assert len(extra["confusion"]) == 11 and isinstance(extra["confusion"][0][0], int)
    assert set(extra["per_family"]) == set(FAMILIES) and extra["rubric_hash"] == RUBRIC.rubric_hash
    assert extra["late"]["penalty"] == 6 and extra["late"]["late_seconds"] == 93_900
    assert extra["toolkit_version"]


def extra_is_heldout(data: dict) -> bool:
    extra = data["extra_data"]
    return extra["heldout_item"] == "4.1" and extra["heldout_accuracy"] < 1.0 and extra["heldout_count"] == sum(map(sum, extra["confusion"]))


def test_score_is_clamped_to_zero_and_total(rng):
    nothing = [GradedItem(item, ItemOutcome.failed("error", "model.py crashed at import")) for item in ITEMS]
    data = validate(build_results(rubric=RUBRIC, graded=nothing, metadata=METADATA).to_gradescope_dict())
    assert data["score"] == 0 and data["tests"][-1]["score"] == 0  # nothing earned: nothing to deduct
    everything = [GradedItem(item, ItemOutcome(fraction=1.0)) for item in ITEMS]
    on_time = dict(METADATA, created_at="2024-10-01T00:00:00-07:00")
    data = validate(build_results(rubric=RUBRIC, graded=everything, metadata=on_time).to_gradescope_dict())
    assert data["score"] == 100 and all(t["status"] == "passed" for t in data["tests"])


def test_local_run_without_metadata_notes_no_penalty(rng):
    data = validate(build_results(rubric=RUBRIC, graded=graded_items(rng), metadata=None,
                                  metadata_note="no submission_metadata.json (a local run?): no late penalty applied")
                    .to_gradescope_dict())
    assert data["tests"][-1]["score"] == 0 and "local run" in data["tests"][-1]["output"]
    assert "local run" in data["extra_data"]["late"]["note"] and "Note: no submission_metadata.json" in data["output"]


def test_leaderboard_column_is_dropped_when_its_item_did_not_run():
    graded = [GradedItem(item, not_run_outcome()) for item in ITEMS]
    data = validate(build_results(rubric=RUBRIC, graded=graded, metadata=None).to_gradescope_dict())
    assert data["leaderboard"] == [] and data["extra_data"]["heldout_accuracy"] is None


def test_nan_in_check_data_becomes_null(rng):
    outcome = ItemOutcome(fraction=0.0, message="logits contain NaN", data={"accuracy": float("nan")})
    graded = [GradedItem(ITEMS[3], outcome)]
    rubric = Rubric(title="t", total_points=30.0, items=(ITEMS[3],))
    data = build_results(rubric=rubric, graded=graded, metadata=None).to_gradescope_dict()
    json.dumps(data, allow_nan=False)  # raises on NaN
    assert data["extra_data"]["heldout_accuracy"] is None and data["leaderboard"] == []


def test_student_report_hides_non_visible_items_and_total(rng):
    data = build_results(rubric=RUBRIC, graded=graded_items(rng), metadata=METADATA).to_gradescope_dict()
    student = data["output"]
    assert "Hidden robustness" not in student and "5.1" not in student
    assert "1 more item(s) worth 20 points" in student and "**Total**" not in student
    instructor = markdown_report(data, audience="instructor")
    assert "Hidden robustness" in instructor and f"**{data['score']:g} / 100**" in instructor


INTEGRITY_LINE = {"name": "Integrity (instructors only)", "score": 0.0, "max_score": 0.0, "status": "failed",
                  "visibility": "hidden", "output": "Train-on-test detector: FLAGGED. Tampering report (1): ...",
                  "extra_data": {"kind": "integrity", "flagged": True}}


def test_published_report_shows_graded_items_and_total_but_never_a_hidden_line(rng):
    """The audience of a regrade's per-student reports: what Gradescope shows a student once grades are
    published (after-due-date lines, the total) but never a hidden line (the integrity verdict)."""
    data = build_results(rubric=RUBRIC, graded=graded_items(rng), metadata=METADATA).to_gradescope_dict()
    data["tests"].insert(-1, INTEGRITY_LINE)
    data["tests"][0]["visibility"] = "after_due_date"
    for render in (markdown_report, html_report):
        published = render(data, audience="published")
        assert "Integrity" not in published and "FLAGGED" not in published and "Tampering" not in published
        assert "Hidden robustness" not in published and "1 more item(s) worth 20 points are graded for the " \
            "course staff only; the total includes them." in published
        assert "Per-layer parameter counts" in published and f"{data['score']:g} / 100" in published
        instructor = render(data, audience="instructor")
        assert "Integrity (instructors only)" in instructor and "FLAGGED" in instructor
    assert "Per-layer parameter counts" not in markdown_report(data, audience="student")
    with pytest.raises(ValueError, match="audience must be one of student, published, instructor"):
        markdown_report(data, audience="staff")


def test_markdown_report_matches_golden_file(rng):
    data = build_results(rubric=RUBRIC, graded=graded_items(rng), metadata=METADATA, execution_time=1.0).to_gradescope_dict()
    report = markdown_report(data, audience="instructor")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(report, encoding="utf-8")
    assert report == GOLDEN.read_text(encoding="utf-8"), "report changed; rerun with UPDATE_GOLDEN=1 and review the diff"


def test_student_output_cannot_break_out_of_its_code_block():
    outcome = ItemOutcome.failed("error", "student printed:\n```\n| fake | table |\n# Score: 100/100")
    rubric = Rubric(title="t", total_points=10.0, items=(ITEMS[0],))
    report = build_results(rubric=rubric, graded=[GradedItem(ITEMS[0], outcome)], metadata=None).to_gradescope_dict()["output"]
    assert "````text\nstudent printed:\n```\n| fake | table |\n# Score: 100/100\n````" in report


def test_html_report_is_self_contained_and_escaped(rng):
    graded = graded_items(rng)
    graded[1] = GradedItem(ITEMS[1], ItemOutcome.failed("error", "<script>alert(1)</script>"))
    page = html_report(build_results(rubric=RUBRIC, graded=graded, metadata=METADATA).to_gradescope_dict())
    assert page.startswith("<!DOCTYPE html>") and "<script>" not in page and "&lt;script&gt;" in page
    assert "src=" not in page and "href=" not in page  # nothing external
    assert "<table>" in page and "Held-out accuracy" in page and "Late penalty" in page


def test_error_results_keep_graded_items_and_explain(rng):
    graded = graded_items(rng)[:2]
    data = validate(error_results(rubric=RUBRIC, graded=graded, error="KeyError: 'x'", details="Traceback ...\nKeyError: 'x'",
                                  execution_time=3.0).to_gradescope_dict())
    names = [t["name"] for t in data["tests"]]
    assert names[-2:] == ["Autograder error", "Autograder error details (instructors only)"]
    assert data["tests"][-2]["visibility"] == "visible" and "not a problem with your code" in data["tests"][-2]["output"]
    assert data["tests"][-1]["visibility"] == "hidden" and "Traceback" in data["tests"][-1]["output"]
    assert data["score"] == 27.5  # the two graded items; the rest not run
    assert "not run: the autograder failed before this item" in data["tests"][2]["output"]
    no_rubric = validate(error_results(rubric=None, graded=[], error="rubric.toml: not valid TOML", details="...",
                                       execution_time=0.1).to_gradescope_dict())
    assert no_rubric["score"] == 0 and "rubric.toml: not valid TOML" in no_rubric["tests"][0]["output"]


def test_write_json_atomically_replaces_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "results.json"
    target.symlink_to(victim)
    write_json_atomically(target, {"score": 1})
    assert victim.read_text() == "keep me" and not target.is_symlink()
    assert json.loads(target.read_text()) == {"score": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".results-")] == []
    with pytest.raises(ValueError):
        write_json_atomically(target, {"score": float("nan")})
    assert json.loads(target.read_text()) == {"score": 1}  # a failed write leaves the old file whole


def test_a_sub_check_whose_message_starts_with_its_name_is_named_once():
    """Issue 19.6: "softmax at |logits| up to 1e4: softmax at |logits| up to 1e4 returned ..." said it twice."""
    from autograder.items import item_output

    outcome = ItemOutcome(fraction=0.5, subchecks=[
        SubCheck("softmax at |logits| up to 1e4", False, 1.0, "softmax at |logits| up to 1e4 returned shape (4,)"),
        SubCheck("cross_entropy value", True, 1.0, "cross_entropy matches torch.nn.functional.cross_entropy (2.3)")])
    text = item_output(GradedItem(ITEMS[1], outcome, 1.0))
    assert text.splitlines() == ["✗ softmax at |logits| up to 1e4 returned shape (4,)",
                                 "✓ cross_entropy value: cross_entropy matches torch.nn.functional.cross_entropy (2.3)"]
