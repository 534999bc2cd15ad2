"""What students and instructors see of the held-out item: [heldout] rubric table, split, visibility, rate limit."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from autograder.checks.heldout_presentation import HeldoutRun
from autograder.errors import NotegradeError
from autograder.rubric import parse_rubric
from autograder.rubric.model import HeldoutSettings, Perturbation
from testkit.autograder_dir import RENDERED_RUBRIC, grading_assets
from testkit.heldout_attack_support import grade, item_scores, line, student_view, subset_rubric, untrained_state

CONTRACT_KEYS = {"flagged", "heldout_accuracy", "train_accuracy", "heldout_loss", "train_loss", "reason"}


# ---------------------------------------------------------------- the [heldout] rubric table
def test_old_rubrics_stay_valid_with_defaults_and_keep_their_hash():
    text = RENDERED_RUBRIC.read_text()
    rubric = parse_rubric(text)
    assert rubric.heldout == HeldoutSettings()
    assert "heldout" not in rubric.to_dict()  # so the hash of a rubric without [heldout] did not change
    explicit = parse_rubric(text + "\n[heldout]\npublic_fraction = 0.0\n")
    assert explicit.rubric_hash == rubric.rubric_hash
    changed = parse_rubric(text + "\n[heldout]\npublic_fraction = 0.3\n")
    assert changed.rubric_hash != rubric.rubric_hash and changed.heldout.public_fraction == 0.3


def test_every_heldout_setting_parses():
    rubric = parse_rubric(RENDERED_RUBRIC.read_text() + """
[heldout]
public_fraction = 0.3
details_visibility = "hidden"
max_source_kb = 100
integrity_line = "flagged"
[heldout.perturbation]
gain_db = 2
noise_db = 0.8
[heldout.rate_limit]
max_evaluations = 5
window_hours = 12
[heldout.train_on_test]
min_accuracy = 0.4
[heldout.lookup]
confidence = 0.995
margin = 0.01
""")
    settings = rubric.heldout
    assert (settings.public_fraction, settings.details_visibility, settings.max_source_kb, settings.integrity_line) \
        == (0.3, "hidden", 100.0, "flagged")
    assert settings.perturbation == Perturbation(enabled=True, gain_db=2.0, noise_db=0.8)
    assert (settings.rate_limit.max_evaluations, settings.rate_limit.window_hours) == (5, 12.0)
    assert settings.train_on_test.min_accuracy == 0.4 and settings.train_on_test.enabled
    assert (settings.lookup.enabled, settings.lookup.confidence, settings.lookup.margin) == (True, 0.995, 0.01)
    assert settings.control_weight == 0.0  # the default: the public notes score


def test_control_weight_and_the_lookup_table_keep_old_hashes_at_their_defaults():
    text = RENDERED_RUBRIC.read_text() + "\n[heldout]\npublic_fraction = 0.3\n"
    old = parse_rubric(text)
    assert "control_weight" not in old.to_dict()["heldout"] and "lookup" not in old.to_dict()["heldout"]
    assert parse_rubric(text + "control_weight = 0\n[heldout.lookup]\nconfidence = 0.99\n").rubric_hash == old.rubric_hash
    mixed = parse_rubric(text + "control_weight = 0.8\n")
    assert mixed.heldout.control_weight == 0.8 and mixed.rubric_hash != old.rubric_hash


@pytest.mark.parametrize("table, message", [
    ("[heldout]\npublic_fraction = 1.0", "public_fraction must be in [0, 1)"),
    ("[heldout]\ndetails_visibility = \"later\"", "details_visibility 'later' is not one of"),
    ("[heldout]\nintegrity_line = \"sometimes\"", "integrity_line 'sometimes' is not one of always, flagged, never"),
    ("[heldout]\nmax_source_kb = -1", "max_source_kb must be >= 0"),
    ("[heldout]\npublik_fraction = 0.3", "heldout: unknown key 'publik_fraction' (did you mean 'public_fraction'?)"),
    ("[heldout.perturbation]\ngain_db = 12", "heldout.perturbation: gain_db must be between 0 and 6, got 12"),
    ("[heldout.rate_limit]\nmax_evaluations = 2.5", "heldout.rate_limit: 'max_evaluations' must be a number"),
    ("[heldout.train_on_test]\nenabled = \"yes\"", "heldout.train_on_test: 'enabled' must be true/false"),
    ("[heldout]\ncontrol_weight = 1.5", "heldout: control_weight must be between 0 and 1: the share of the held-out "
                                        "item's accuracy taken from the private control split"),
    ("[heldout]\ncontrol_weight = \"most\"", "heldout: 'control_weight' must be a number"),
    ("[heldout.lookup]\nconfidence = 1.0", "heldout.lookup: confidence must be between 0.5 and 0.9999, got 1.0"),
    ("[heldout.lookup]\nmargin = -0.01", "heldout.lookup: margin must be between 0 and 0.5"),
])
def test_a_malformed_heldout_table_is_refused_with_a_specific_message(table, message):
    with pytest.raises(NotegradeError) as err:
        parse_rubric(RENDERED_RUBRIC.read_text() + "\n" + table + "\n", source="r.toml")
    assert message in str(err.value) and str(err.value).startswith("r.toml: ")


def test_the_checks_default_perturbation_is_the_rubrics():
    default = Perturbation()
    assert (HeldoutRun().perturb, HeldoutRun().gain_db, HeldoutRun().noise_db) == \
        (default.enabled, default.gain_db, default.noise_db)


# ---------------------------------------------------------------- whole runs in the Gradescope layout
@pytest.fixture(scope="module")
def assets():
    return grading_assets()


@pytest.mark.slow
def test_public_private_split_what_students_see_before_the_due_date(tmp_path, assets, monkeypatch):
    rubric = subset_rubric(("1.1", "4.1"), zero_at=0.1, full_at=0.99, extra="\n[heldout]\npublic_fraction = 0.3\n")
    results = grade(tmp_path / "split", rubric=rubric, heldout=assets.heldout,
                    state_dict=torch.load(assets.state_dict_path), monkeypatch=monkeypatch)
    points = next(t for t in results["tests"] if t.get("number") == "4.1")
    assert points["visibility"] == "after_due_date" and "on the private part" in points["output"]
    public = line(results, "heldout_public")
    assert public["visibility"] == "visible" and public["score"] == public["max_score"] == 0
    shown = float(re.search(r": (\d+\.\d)%", public["output"]).group(1)) / 100
    assert results["leaderboard"] == [{"name": "Held-out accuracy", "value": pytest.approx(shown), "order": "desc"}]
    block = results["extra_data"]["heldout"]
    assert block["public_accuracy_rounded"] == pytest.approx(shown) and block["public_count"] + block["private_count"] \
        == results["extra_data"]["heldout_count"]
    assert line(results, "heldout_details")["visibility"] == "after_due_date"
    assert line(results, "integrity")["visibility"] == "hidden"
    view = student_view(results)
    assert "/ 40" not in results["output"] and "total is not shown" in results["output"]  # Gradescope's rule
    assert "Confusion" not in view and "bass" not in view
    integrity = results["extra_data"]["integrity"]
    assert set(integrity) == {"train_on_test", "tampering", "lookup", "probe"}  # instructor-only (issue 20.1)
    assert integrity["probe"]["format"] == "notegrade-probe/1" and integrity["probe"]["predictions"] not in view


@pytest.mark.slow
def test_regrade_reproduces_the_score_and_another_secret_draws_another_order(tmp_path, assets, monkeypatch):
    rubric = subset_rubric(("4.1",), zero_at=0.1, full_at=0.99)
    state = untrained_state(3)
    first = grade(tmp_path / "a", rubric=rubric, heldout=assets.heldout, state_dict=state, monkeypatch=monkeypatch)
    again = grade(tmp_path / "b", rubric=rubric, heldout=assets.heldout, state_dict=state, monkeypatch=monkeypatch)
    assert first["score"] == again["score"] and first["extra_data"]["heldout_accuracy"] == \
        again["extra_data"]["heldout_accuracy"]
    assert first["extra_data"]["heldout"]["accuracy_rounded"] == again["extra_data"]["heldout"]["accuracy_rounded"]


@pytest.mark.slow
def test_over_the_rate_limit_the_item_keeps_the_last_result(tmp_path, assets, monkeypatch):
    rubric = subset_rubric(("1.1", "4.1"), extra="\n[heldout.rate_limit]\nmax_evaluations = 2\nwindow_hours = 24\n")
    created = "2024-10-05T12:00:00-07:00"
    evaluated = grade(tmp_path / "first", rubric=rubric, heldout=assets.heldout, monkeypatch=monkeypatch,
                      state_dict=torch.load(assets.state_dict_path), metadata={"created_at": "2024-10-05T11:00:00-07:00",
                                                                               "previous_submissions": []})
    assert item_scores(evaluated)["4.1"] == 30
    previous = [{"submission_time": "2024-10-05T10:00:00-07:00", "score": 40.0, "autograder_error": False},
                {"submission_time": "2024-10-05T10:30:00-07:00", "score": 0.0, "autograder_error": True},
                {"submission_time": "2024-10-05T11:00:00-07:00", "score": evaluated["score"],
                 "autograder_error": False, "results": evaluated}]
    metadata = {"created_at": created, "previous_submissions": previous,
                "assignment": {"due_date": "2024-10-07T23:59:00-07:00"}}
    limited = grade(tmp_path / "limited", rubric=rubric, heldout=assets.heldout, state_dict=untrained_state(),
                    metadata=metadata, monkeypatch=monkeypatch)
    item = next(t for t in limited["tests"] if t.get("number") == "4.1")
    assert item["score"] == 30, item["output"]  # the untrained model would score 0: the earlier result is kept
    assert "limited to 2 per 24 h" in item["output"] and "2024-10-06 11:00 -0700" in item["output"]
    assert limited["extra_data"]["heldout"]["evaluated"] is False
    assert limited["extra_data"]["integrity"]["train_on_test"] is None  # nothing was evaluated
    # ... and a third submission keeps it too, through the second one's results.
    metadata["previous_submissions"] = previous[:-1] + [dict(previous[-1], results={})] + [
        {"submission_time": "2024-10-05T12:00:00-07:00", "score": limited["score"], "autograder_error": False,
         "results": limited}]
    metadata["created_at"] = "2024-10-05T13:00:00-07:00"
    third = grade(tmp_path / "third", rubric=rubric, heldout=assets.heldout, state_dict=untrained_state(),
                  metadata=metadata, monkeypatch=monkeypatch)
    assert item_scores(third)["4.1"] == 30
    assert third["extra_data"]["heldout"]["carried_from"] == "2024-10-05T11:00:00-07:00"


def test_integrity_line_modes_and_contract():
    from autograder.checks.outcome import ItemOutcome, SubCheck
    from autograder.heldout_guard.rate_limit import RateDecision
    from autograder.heldout_guard.session import Session
    from autograder.items import GradedItem
    from autograder.results import build_results

    base = parse_rubric(RENDERED_RUBRIC.read_text())
    item = base.item("4.1")
    data = {"accuracy": 0.99, "overall_accuracy": 0.99, "accuracy_rounded": 0.99, "loss": 0.03, "scored_count": 88,
            "count": 88, "confusion": [[0] * 11 for _ in range(11)], "per_family": {"bass": 1.0},
            "train_sample": {"accuracy": 0.7, "accuracy_matched": 0.7, "loss": 0.9, "count": 100}}
    outcome = ItemOutcome(fraction=1.0, subchecks=[SubCheck("held-out accuracy", True)], data=data)
    for mode, expect_line in (("always", True), ("flagged", True), ("never", False)):
        rubric = dataclasses.replace(base, heldout=dataclasses.replace(HeldoutSettings(), integrity_line=mode))
        session = Session(rubric=rubric, run=HeldoutRun(), rate=RateDecision(evaluate=True))
        results = build_results(rubric=rubric, graded=[GradedItem(item, outcome)], metadata=None,
                                guard=session).to_gradescope_dict()
        verdict = results["extra_data"]["integrity"]["train_on_test"]
        assert set(verdict) == CONTRACT_KEYS and verdict["flagged"] is True
        assert (line(results, "integrity") is not None) == expect_line
        assert "FLAGGED" not in student_view(results) and json.dumps(results["extra_data"]["integrity"])
    clean = dataclasses.replace(base, heldout=dataclasses.replace(HeldoutSettings(), integrity_line="flagged"))
    honest = ItemOutcome(fraction=1.0, data={**data, "accuracy": 0.6, "overall_accuracy": 0.6})
    results = build_results(rubric=clean, graded=[GradedItem(item, honest)], metadata=None,
                            guard=Session(rubric=clean, run=HeldoutRun(), rate=RateDecision(evaluate=True)))
    assert line(results.to_gradescope_dict(), "integrity") is None  # nothing flagged: no hidden line, total shown


# ---------------------------------------------------------------- the secret, the build and a regrade's metadata
def test_build_makes_a_secret_keeps_it_for_rebuilds_and_refuses_a_damaged_one(tmp_path):
    import shutil
    import zipfile

    from autograder.instructor.build import package as build
    from autograder.heldout_guard.secret import read_secret

    heldout = tmp_path / "h" / "heldout.safetensors"
    heldout.parent.mkdir()
    shutil.copyfile(grading_assets().heldout, heldout)
    first = build.build_autograder(rubric=RENDERED_RUBRIC, heldout=heldout, out=tmp_path / "a.zip", quiet=True)
    secret_file = heldout.with_suffix(".secret")
    assert secret_file.is_file() and oct(secret_file.stat().st_mode & 0o777) == "0o600"
    again = build.build_autograder(rubric=RENDERED_RUBRIC, heldout=heldout, out=tmp_path / "b.zip", quiet=True)
    assert first.path.read_bytes() == again.path.read_bytes()  # same inputs (secret included), same bytes
    with zipfile.ZipFile(first.path) as archive:
        (tmp_path / "unpacked").mkdir()
        (tmp_path / "unpacked" / "heldout.secret").write_bytes(archive.read("heldout.secret"))
    assert read_secret(tmp_path / "unpacked" / "heldout.secret") == read_secret(secret_file)
    other = build.build_autograder(rubric=RENDERED_RUBRIC, heldout=heldout, out=tmp_path / "c.zip", quiet=True,
                       secret=tmp_path / "course.secret")
    assert read_secret(tmp_path / "course.secret") != read_secret(secret_file) and other.path.is_file()
    (tmp_path / "bad.secret").write_text("not a secret")
    with pytest.raises(NotegradeError, match="bad.secret: not a notegrade secret"):
        build.build_autograder(rubric=RENDERED_RUBRIC, heldout=heldout, out=tmp_path / "d.zip", quiet=True,
                   secret=tmp_path / "bad.secret")


def test_a_regrades_metadata_carries_each_earlier_submissions_results():
    import datetime as dt

    from autograder.instructor.export.due_dates import AssignmentInfo, submission_metadata
    from autograder.instructor.export.metadata_yaml import ExportEntry, HistoryItem, Submitter

    due = dt.datetime(2024, 10, 7, 23, 59, tzinfo=dt.timezone.utc)
    kept = {"extra_data": {"heldout": {"item": "4.1", "fraction": 0.5}}}
    entry = ExportEntry(key="submission_2", submission_id="2", folder=None, submitters=[Submitter("A", "1", "a@b")],
                        created_at=due, recorded_score=50.0, status="graded", recorded_results=None,
                        history=[HistoryItem("1", due - dt.timedelta(hours=1), 50.0, "graded", kept)])
    metadata = submission_metadata(entry=entry, assignment=AssignmentInfo(title="A2", due_date=due))
    assert metadata["previous_submissions"][0]["results"] == kept


LOOKUP_KEYS = {"flagged", "public_accuracy", "public_count", "control_accuracy", "control_count", "reference_ratio",
               "expected_public", "excess", "lower_bound", "honest_models", "honest_spread", "confidence", "margin",
               "reason"}


def test_the_lookup_verdict_is_for_instructors_only():
    from autograder.checks.outcome import ItemOutcome, SubCheck
    from autograder.heldout_guard.rate_limit import RateDecision
    from autograder.heldout_guard.session import Session
    from autograder.items import GradedItem
    from autograder.results import build_results

    base = parse_rubric(RENDERED_RUBRIC.read_text())
    rubric = dataclasses.replace(base, heldout=dataclasses.replace(HeldoutSettings(), integrity_line="flagged",
                                                                   control_weight=0.8))
    reference = {"heldout_accuracy": 0.60, "control_accuracy": 0.50}
    data = {"accuracy": 0.55, "overall_accuracy": 0.75, "accuracy_rounded": 0.55, "scored_count": 5096, "count": 4096,
            "control_accuracy": 0.50, "control_count": 1000, "confusion": [[0] * 11 for _ in range(11)],
            "per_family": {"bass": 1.0}}
    outcome = ItemOutcome(fraction=1.0, subchecks=[SubCheck("held-out accuracy", True)], data=data)
    session = Session(rubric=rubric, run=HeldoutRun(), rate=RateDecision(evaluate=True), reference=reference)
    results = build_results(rubric=rubric, graded=[GradedItem(base.item("4.1"), outcome)], metadata=None,
                            guard=session).to_gradescope_dict()
    verdict = results["extra_data"]["integrity"]["lookup"]
    assert set(verdict) == LOOKUP_KEYS and verdict["flagged"] is True and verdict["expected_public"] == 0.6
    hidden = line(results, "integrity")  # integrity_line = "flagged": shown because the lookup detector flagged
    assert hidden["visibility"] == "hidden" and hidden["status"] == "failed"
    assert "Lookup detector: FLAGGED. possible lookup of the public test labels" in hidden["output"]
    assert "+15.0 points above it" in hidden["output"]
    view = student_view(results)
    assert "ookup" not in view and "FLAGGED" not in view and "reference's ratio" not in view
    # An honest model on the reference's ratio: not flagged, no hidden line under "flagged".
    honest = ItemOutcome(fraction=1.0, data={**data, "overall_accuracy": 0.61})
    results = build_results(rubric=rubric, graded=[GradedItem(base.item("4.1"), honest)], metadata=None,
                            guard=session).to_gradescope_dict()
    assert results["extra_data"]["integrity"]["lookup"]["flagged"] is False and line(results, "integrity") is None
    # No reference number for the control split, or no control split: the detector does not run, and says so.
    for reference_numbers, outcome_data in (({"heldout_accuracy": 0.6}, data),
                                            (reference, {**data, "control_accuracy": None, "control_missing": True})):
        always = dataclasses.replace(rubric, heldout=dataclasses.replace(rubric.heldout, integrity_line="always"))
        quiet = Session(rubric=always, run=HeldoutRun(), rate=RateDecision(evaluate=True), reference=reference_numbers)
        results = build_results(rubric=always, graded=[GradedItem(base.item("4.1"), ItemOutcome(
            fraction=1.0, data=outcome_data))], metadata=None, guard=quiet).to_gradescope_dict()
        assert results["extra_data"]["integrity"]["lookup"] is None
        assert "Lookup detector: not run" in line(results, "integrity")["output"]
    assert "takes 80% of item 4.1 from a private control split, but the held-out file has none: scored on the " \
           "public notes only" in line(results, "integrity")["output"]


def test_the_class_integrity_analysis_reads_the_lookup_flag():
    from autograder.instructor.class_integrity.student_flags import describe, read_student_flags

    verdict = {"flagged": True, "public_accuracy": 0.75, "control_accuracy": 0.5, "expected_public": 0.6,
               "excess": 0.15, "lower_bound": 0.11, "reason": "possible lookup of the public test labels: ..."}
    flags = read_student_flags({"extra_data": {"integrity": {"train_on_test": None, "tampering": [], "lookup": verdict}}})
    assert flags.lookup_flagged and flags.flagged and flags.problems == []
    assert describe(flags).startswith("looked up the public test labels? possible lookup of the public test labels")
    old = read_student_flags({"extra_data": {"integrity": {"train_on_test": None, "tampering": []}}})
    assert old.checked and not old.flagged and old.lookup is None  # a grader from before the detector
    odd = read_student_flags({"extra_data": {"integrity": {"tampering": [], "lookup": "yes"}}})
    assert odd.problems == ["extra_data.integrity.lookup is a str; ignored"] and not odd.flagged


def test_the_public_line_says_the_points_also_come_from_the_control_notes():
    from types import SimpleNamespace

    from autograder.heldout_guard.results_lines import _public_line

    item = SimpleNamespace(number="4.1", title="Held-out accuracy")
    block = {"public_accuracy_rounded": 0.612, "public_count": 1229}
    plain = _public_line(item, block, 0.3)["output"]
    mixed = _public_line(item, block, 0.3, control=True)["output"]
    assert "come from the other notes (the private part) and are shown after the due date" in plain
    assert "(the private part) and the course's control notes and are shown after the due date" in mixed
