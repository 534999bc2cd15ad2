"""The train-on-test detector and the perturbation, calibrated on rendered data with disjoint instruments.

The slow tests render the demo's dataset (FluidSynth, TimGM6mb: ~950 train / 176 test notes of
instruments that never meet), train three small models for real (seeded, one CPU thread) and
check the numbers: the trained reference is not flagged, a weak honest model is not, a model
trained on the held-out split is; and the perturbation moves the reference's accuracy by less
than a point.  The fast tests pack a training sample with ``notegrade heldout`` from NSynth's
official layout (``testkit/nsynth_factory.py``) and check the refusals.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from autograder.checks.heldout import heldout_metrics, mean_cross_entropy, train_sample_metrics
from autograder.checks.heldout_presentation import HeldoutRun, present, presentation, restore_order
from autograder.errors import NotegradeError
from autograder.featurefile import read_feature_file
from autograder.heldout_guard.trained_on_heldout import detect
from autograder.rubric.model import TrainOnTest
from testkit.autograder_dir import train_reference

RENDER = {"seed": 0, "max_programs_per_family": 8, "notes_per_instrument": 16}  # the demo's dataset
SAMPLE = 300


# ---------------------------------------------------------------- packing, on NSynth's official layout
def test_heldout_packs_a_training_sample_from_the_official_layout(tmp_path):
    from reference.heldout import main as heldout
    from testkit.nsynth_factory import make_nsynth_split

    make_nsynth_split(tmp_path, split="train", n_per_family=4, n_instruments=2, seed=0)
    make_nsynth_split(tmp_path, split="test", n_per_family=2, seed=5)
    summary = heldout(nsynth=tmp_path / "nsynth-test", out=tmp_path / "heldout.safetensors",
                      train_sample=tmp_path / "nsynth-train", sample_size=20, progress=False)
    assert summary["notes"] == 22 and summary["train_sample"] == 20
    data = read_feature_file(tmp_path / "heldout.safetensors")
    assert len(data) == 22 and len(data.sample) == 20 and data.sample.features.dtype == np.float16
    info = json.loads(data.metadata["train_sample"])
    assert info["count"] == 20 and info["split"] == "train"
    assert not set(data.note_strs) & set(data.sample.note_strs)
    again = heldout(nsynth=tmp_path / "nsynth-test", out=tmp_path / "again.safetensors",
                    train_sample=tmp_path / "nsynth-train", sample_size=20, progress=False)
    assert again["train_sample"] == 20 and read_feature_file(tmp_path / "again.safetensors").sample.note_strs == \
        data.sample.note_strs  # the same seed draws the same notes
    import safetensors.numpy

    assert sorted(safetensors.numpy.load_file(str(tmp_path / "heldout.safetensors"))) == [
        "features", "labels", "note_str", "notes", "sample_features", "sample_labels", "sample_note_str",
        "sample_notes"]  # a standard safetensors file


def test_heldout_refuses_a_sample_from_the_heldout_split_and_a_reference_without_sample(tmp_path):
    from reference.heldout import main as heldout
    from testkit.nsynth_factory import make_nsynth_split

    make_nsynth_split(tmp_path, split="test", n_per_family=2, seed=5)
    with pytest.raises(NotegradeError, match="the training sample shares 22 note"):
        heldout(nsynth=tmp_path / "nsynth-test", out=tmp_path / "h.safetensors", train_sample=tmp_path / "nsynth-test",
                sample_size=100, progress=False)
    with pytest.raises(NotegradeError, match="--reference-model needs --train-sample"):
        heldout(nsynth=tmp_path / "nsynth-test", out=tmp_path / "h.safetensors", reference_model=tmp_path / "x.pt",
                progress=False)


def test_detector_needs_a_sample_and_can_be_turned_off():
    data = {"overall_accuracy": 0.99, "loss": 0.01, "train_sample": {"accuracy_matched": 0.5, "loss": 1.0}}
    assert detect({"overall_accuracy": 0.99}, TrainOnTest()) is None
    assert detect(data, TrainOnTest(enabled=False)) is None
    assert detect(data, TrainOnTest())["flagged"]


def test_detector_rule_relative_to_the_reference():
    reference = {"heldout_accuracy": 0.70, "train_accuracy": 0.95}
    better_everywhere = {"overall_accuracy": 0.76, "loss": 0.9, "train_sample": {"accuracy_matched": 0.99, "loss": 0.05}}
    assert not detect(better_everywhere, TrainOnTest(), reference)["flagged"]
    only_on_test = {"overall_accuracy": 0.80, "loss": 0.6, "train_sample": {"accuracy_matched": 0.85, "loss": 0.4}}
    verdict = detect(only_on_test, TrainOnTest(), reference)
    assert verdict["flagged"] and "ratio 0.94 against the reference's 0.74" in verdict["reason"]
    assert not detect(only_on_test, TrainOnTest())["flagged"]  # without the reference's numbers: not this rule


# ---------------------------------------------------------------- calibration on real (small) training
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Rendered data, a held-out file with a training sample and the reference's numbers, three models."""
    from reference.heldout import main as heldout
    from reference.make_features import build_feature_file
    from reference.render import main as render

    root = tmp_path_factory.mktemp("calibration")
    render(out=root / "data", soundfonts=["/usr/share/sounds/sf2/TimGM6mb.sf2"], workers=2, progress=False, **RENDER)
    for split in ("train", "test"):
        build_feature_file(nsynth=root / "data" / f"nsynth-{split}", out=root / f"{split}.safetensors", progress=False)
    models = {"reference": train_reference(root / "train.safetensors", epochs=12, seed=0),
              "weak": train_reference(root / "train.safetensors", epochs=1, seed=0),
              "on_test": train_reference(root / "test.safetensors", epochs=12, seed=0)}
    for name, state in models.items():
        torch.save(state, root / f"{name}.pt")
    heldout(nsynth=root / "data" / "nsynth-test", out=root / "heldout.safetensors", progress=False,
            train_sample=root / "data" / "nsynth-train", sample_size=SAMPLE, reference_model=root / "reference.pt")
    return {"root": root, "models": models, "heldout": root / "heldout.safetensors"}


def _logits(state: dict, features: np.ndarray) -> np.ndarray:
    from reference.model import NoteCNN

    model = NoteCNN()
    model.load_state_dict(state)
    model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()


def _check_data(state: dict, heldout: pathlib.Path, run: HeldoutRun) -> dict:
    """What the held-out check reports (held-out + sample, perturbed together), computed in-process."""
    data = read_feature_file(heldout)
    n = len(data)
    features = np.concatenate([np.asarray(data.features), np.asarray(data.sample.features)])
    plan = presentation(len(features), run)
    logits = restore_order(_logits(state, present(features, plan, run)), plan)
    metrics = heldout_metrics(logits[:n], data.labels)
    metrics.update(overall_accuracy=metrics["accuracy"], loss=mean_cross_entropy(logits[:n], data.labels),
                   train_sample=train_sample_metrics(logits[n:], data.sample.labels,
                                                     np.bincount(data.labels, minlength=11)))
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("name, flagged", [("reference", False), ("weak", False), ("on_test", True)])
def test_detector_flags_only_the_model_trained_on_the_heldout_split(world, name, flagged):
    reference = json.loads(read_feature_file(world["heldout"]).metadata["reference"])
    run = HeldoutRun(secret=b"k" * 32, submission_digest=name)
    data = _check_data(world["models"][name], world["heldout"], run)
    verdict = detect(data, TrainOnTest(), reference)
    print(f"{name}: held-out {verdict['heldout_accuracy']:.3f} (loss {verdict['heldout_loss']:.3f}), training sample "
          f"{verdict['train_accuracy']:.3f} (loss {verdict['train_loss']:.3f}) -> flagged {verdict['flagged']}")
    assert verdict["flagged"] is flagged, verdict


@pytest.mark.slow
def test_perturbation_moves_the_trained_reference_by_less_than_a_point(world):
    data = read_feature_file(world["heldout"])
    state = world["models"]["reference"]
    plain = float((_logits(state, data.features).argmax(1) == data.labels).mean())
    deltas = []
    for key in range(10):
        run = HeldoutRun(secret=b"k" * 32, submission_digest=f"run {key}")  # the rubric's default perturbation
        plan = presentation(len(data), run)
        logits = restore_order(_logits(state, present(np.asarray(data.features), plan, run)), plan)
        deltas.append(float((logits.argmax(1) == data.labels).mean()) - plain)
    mean, worst = float(np.mean(deltas)), float(np.max(np.abs(deltas)))
    print(f"reference on {len(data)} held-out notes: {plain:.2%} unperturbed; perturbed over 10 runs: mean change "
          f"{100 * mean:+.2f} points, largest {100 * worst:.2f} points")
    assert abs(mean) < 0.01  # less than a point on average over runs
    assert worst <= 4 / len(data)  # and a single run changes at most a few of the 176 notes


@pytest.mark.slow
def test_gradescope_layout_flags_training_on_test_in_the_hidden_line_only(world, tmp_path, monkeypatch):
    from testkit.heldout_attack_support import grade, line, student_view, subset_rubric

    demo_rubric = pathlib.Path(__file__).resolve().parents[3] / "autograder" / "instructor" / "demo" / "demo_rubric.toml"
    rubric = subset_rubric(("4.1",), base=demo_rubric, zero_at=0.10, full_at=0.30)
    results = {}
    for name in ("reference", "on_test"):
        results[name] = grade(tmp_path / name, rubric=rubric, heldout=world["heldout"],
                              state_dict=world["models"][name], monkeypatch=monkeypatch)
    honest, cheat = results["reference"], results["on_test"]
    assert honest["extra_data"]["integrity"]["train_on_test"]["flagged"] is False
    assert cheat["extra_data"]["integrity"]["train_on_test"]["flagged"] is True
    hidden = line(cheat, "integrity")
    assert hidden["visibility"] == "hidden" and "FLAGGED" in hidden["output"] and "training sample" in hidden["output"]
    assert honest["score"] == cheat["score"] == 30  # the flag never changes the score
    assert "FLAGGED" not in student_view(cheat) and "train" not in student_view(cheat).lower().replace("trained", "")
