"""`notegrade heldout --control DIR`: the private control split packed, checked and measured by the reference."""
from __future__ import annotations

import json

import pytest
import torch

from autograder.errors import NotegradeError
from autograder.featurefile import read_feature_file
from reference.heldout import main as heldout
from reference.heldout_control import NOT_VARIED, notes_about
from testkit.nsynth_factory import make_nsynth_split


@pytest.fixture
def splits(tmp_path):
    make_nsynth_split(tmp_path, split="train", n_per_family=3, seed=0)
    make_nsynth_split(tmp_path, split="test", n_per_family=2, seed=5)
    make_nsynth_split(tmp_path / "private", split="private", n_per_family=2, seed=9)
    from reference.model import NoteCNN

    torch.manual_seed(0)
    torch.save(NoteCNN().state_dict(), tmp_path / "ref.pt")
    return tmp_path


def test_control_split_is_packed_with_its_metadata_and_the_references_numbers(splits):
    summary = heldout(nsynth=splits / "nsynth-test", out=splits / "h.safetensors", progress=False,
                      control=splits / "private" / "nsynth-private", reference_model=splits / "ref.pt")
    assert (summary["notes"], summary["control"], summary["train_sample"]) == (22, 22, 0)
    data = read_feature_file(splits / "h.safetensors")
    assert len(data) == 22 and len(data.control) == 22 and data.sample is None
    assert not set(data.note_strs) & set(data.control.note_strs)
    info = json.loads(data.metadata["control"])
    assert info["format"] == "notegrade-control/1" and info["count"] == 22 and info["split"] == "private"
    assert info["render"] is None  # no render manifest beside a split written by hand (or recorded)
    reference = json.loads(data.metadata["reference"])
    assert {"heldout_accuracy", "control_accuracy", "control_count", "heldout_count"} <= set(reference)
    assert "train_accuracy" not in reference  # no training sample: the train-on-test detector's rule stays off
    # With a training sample too: all three parts, the sample and the control split disjoint.
    summary = heldout(nsynth=splits / "nsynth-test", out=splits / "h2.safetensors", progress=False,
                      train_sample=splits / "nsynth-train", sample_size=10,
                      control=splits / "private" / "nsynth-private", reference_model=splits / "ref.pt")
    both = read_feature_file(splits / "h2.safetensors")
    assert len(both.sample) == 10 and len(both.control) == 22
    assert {"train_accuracy", "control_accuracy"} <= set(json.loads(both.metadata["reference"]))


def test_a_control_split_that_is_not_private_is_refused(splits):
    with pytest.raises(NotegradeError, match=r"control split shares 22 note\(s\) with the held-out notes"):
        heldout(nsynth=splits / "nsynth-test", out=splits / "h.safetensors", progress=False,
                control=splits / "nsynth-test")
    with pytest.raises(NotegradeError, match=r"control split shares \d+ note\(s\) with the training sample"):
        heldout(nsynth=splits / "nsynth-test", out=splits / "h.safetensors", progress=False,
                train_sample=splits / "nsynth-train", sample_size=5, control=splits / "nsynth-train")
    with pytest.raises(NotegradeError, match="--control .*: no such folder"):
        heldout(nsynth=splits / "nsynth-test", out=splits / "h.safetensors", progress=False,
                control=splits / "missing")
    with pytest.raises(NotegradeError, match="--reference-model needs --train-sample or --control"):
        heldout(nsynth=splits / "nsynth-test", out=splits / "h.safetensors", progress=False,
                reference_model=splits / "ref.pt")


def test_notes_for_the_instructor():
    counts = {"bass": 0, "organ": 1500}
    notes = notes_about({"count": 1500, "family_counts": counts, "render": {"secret_fingerprint": None}})
    assert notes == [NOT_VARIED, "the control split has no notes of bass", "1,500 control notes: a +5-point "
                     "public-only gain is flagged about half the time with 1,000 and 77% of the time with 2,000 "
                     "(docs/threat-model.md: 'How large')"]
    assert notes_about({"count": 2400, "family_counts": {}, "render": {"secret_fingerprint": "abc"}}) == []


def test_honest_models_are_measured_for_the_lookup_detector(splits):
    from reference.model import NoteCNN

    for seed in (1, 2):
        torch.manual_seed(seed)
        torch.save(NoteCNN().state_dict(), splits / f"honest{seed}.pt")
    heldout(nsynth=splits / "nsynth-test", out=splits / "h.safetensors", progress=False,
            control=splits / "private" / "nsynth-private", reference_model=splits / "ref.pt",
            honest_models=[splits / "honest1.pt", splits / "honest2.pt"])
    honest = json.loads(read_feature_file(splits / "h.safetensors").metadata["reference"])["honest"]
    assert len(honest) == 2 and all(set(h) == {"heldout_accuracy", "control_accuracy", "model_sha256"} for h in honest)
    with pytest.raises(NotegradeError, match="--honest-model needs --reference-model and --control"):
        heldout(nsynth=splits / "nsynth-test", out=splits / "h.safetensors", progress=False,
                reference_model=splits / "ref.pt", train_sample=splits / "nsynth-train",
                honest_models=[splits / "honest1.pt"])
