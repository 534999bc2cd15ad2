"""Grade-time integrity predictions (issue 20.1): kept by the grader, instructor-only, read back only when exact."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from autograder.checks.integrity_probe import FORMAT, make_record, probe_digest, read_record

NOTES, LABELS = np.arange(100, 120), np.arange(20) % 11
DIGEST = probe_digest(NOTES, LABELS, "front")
SHA = "a" * 64


def _read(raw, **kw):
    return read_record(raw, **{"probe": DIGEST, "model_sha256": SHA, "count": 20, "classes": 11, **kw})


def test_a_record_reads_back_exactly_and_names_its_keys():
    predictions = (np.arange(20) * 7) % 11
    record = make_record(predictions, probe=DIGEST, model_sha256=SHA, perturbed=True)
    assert record["format"] == FORMAT and record["perturbed"] is True and len(json.dumps(record)) < 300
    back, why = _read(record)
    assert why == "" and back.tolist() == predictions.tolist()
    # The probe set is which notes, in which order, with which labels and front end.
    assert probe_digest(NOTES[::-1], LABELS, "front") != DIGEST
    assert probe_digest(NOTES, np.roll(LABELS, 1), "front") != DIGEST
    assert probe_digest(NOTES, LABELS, "other") != DIGEST
    with pytest.raises(ValueError):
        make_record(np.array([300]), probe=DIGEST, model_sha256=SHA, perturbed=False)


@pytest.mark.parametrize("change, reason", [
    (lambda r: None, "no grade-time predictions"),
    (lambda r: [r], "a malformed record"),
    (lambda r: {**r, "format": "notegrade-probe/9"}, "a record of format"),
    (lambda r: {**r, "probe": "0" * 64}, "graded with another held-out file"),
    (lambda r: {**r, "model_sha256": "b" * 64}, "graded with another model.pt"),
    (lambda r: {**r, "count": 21}, "a record of another size"),
    (lambda r: {**r, "predictions": base64.b64encode(bytes(19)).decode()}, "a record of another size"),
    (lambda r: {**r, "predictions": "A" * 10**6}, "a record of another size"),  # never decoded
    (lambda r: {**r, "predictions": "!!!!"}, "a record that is not base64"),
    (lambda r: {**r, "predictions": "é" * 4}, "a record that is not base64"),
    (lambda r: {**r, "predictions": 12}, "a record of another size"),
    (lambda r: {**r, "predictions": base64.b64encode(bytes([11] * 20)).decode()}, "a prediction outside the 11"),
])
def test_a_record_that_does_not_match_exactly_is_not_used(change, reason):
    record = make_record(np.zeros(20, np.int64), probe=DIGEST, model_sha256=SHA, perturbed=True)
    predictions, why = _read(change(record))
    assert predictions is None and why.startswith(reason)
    assert _read(record, model_sha256=None)[1] == "graded with another model.pt"  # no model.pt in the folder now


def test_the_grader_keeps_its_predictions_for_instructors_only(tmp_path):
    """The real grader on the reference: the record is in extra_data["integrity"], equals a clean forward
    pass but for a perturbation flip or two, is read back for the folder it graded, and is in nothing a
    student sees; the self-check's run of the same check keeps none."""
    from autograder.checks.heldout_presentation import HeldoutRun
    from autograder.featurefile import read_feature_file
    from autograder.instructor.class_integrity.logits import read_heldout
    from autograder.instructor.class_integrity.members import Member
    from autograder.instructor.class_integrity.recorded import recorded_outcomes
    from autograder.instructor.grading.one_submission import grade_submission
    from autograder.report import markdown_report
    from reference.model import NoteCNN
    from testkit.autograder_dir import grading_assets, make_autograder_dir, make_submission

    assert HeldoutRun().keep_predictions is False  # the self-check's default: nothing kept
    assets = grading_assets()
    autograder = make_autograder_dir(tmp_path / "autograder", rubric=assets.rubric, heldout=assets.heldout)
    state = torch.load(assets.state_dict_path)
    submission = make_submission(tmp_path / "ref", state_dict=state)
    results = grade_submission(submission=submission, autograder=autograder, out=tmp_path / "out", quiet=True)
    record = results["extra_data"]["integrity"]["probe"]
    inner = results["extra_data"]["timings"]["heldout"]  # where the held-out item's time went (issue 20.2)
    assert set(inner) == {"verify_checkpoint", "present", "forward_call", "metrics", "worker_forward"}
    assert 0 < inner["worker_forward"] <= inner["forward_call"], inner
    heldout = read_heldout(autograder / "heldout.safetensors")
    assert record["count"] == len(heldout.labels) and record["perturbed"] is True
    model = NoteCNN().eval()
    model.load_state_dict(state)
    with torch.inference_mode():
        clean = model(torch.from_numpy(np.asarray(heldout.features, np.float32))).argmax(1).numpy()
    member = Member(key="ref", submission_id="1", folder=submission, people=[], results=results)
    found, refused = recorded_outcomes([member], heldout)
    assert refused == {} and found["ref"].source == "grading"
    assert np.mean(found["ref"].answers() == clean) >= 0.97  # 88 notes: at most two perturbation flips
    # Nothing a student sees carries it: not the tests' outputs, not the report, not the top output.
    visible = json.dumps([results["output"], [t.get("output") for t in results["tests"]],
                          markdown_report(results, audience="student")])
    assert record["predictions"] not in visible and "probe" not in visible
    assert not any("probe" in json.dumps(t) for t in results["tests"])
    # The folder's model.pt changed after grading: the record is not used, and says why.
    torch.save({k: v + 1 for k, v in state.items()}, submission / "model.pt")
    found, refused = recorded_outcomes([member], heldout)
    assert found == {} and refused == {"ref": "graded with another model.pt"}
    assert read_feature_file(autograder / "heldout.safetensors").notes.shape == (len(heldout.labels),)
