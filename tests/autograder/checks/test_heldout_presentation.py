"""The held-out presentation: secret order and batches, the perturbation, the public/private split, the probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autograder.checks.heldout import mean_cross_entropy, round_accuracy, scaled_fraction
from autograder.checks.heldout_presentation import (NO_SECRET, HeldoutRun, derive_key, present, presentation,
                                                    public_mask, restore_order, submission_digest)

SECRET = b"s" * 32


def _features(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.5, 1.5, size=(n, 1, 64, 64)).astype(np.float16)


def test_order_and_batches_are_a_function_of_secret_and_submission_only():
    run = HeldoutRun(secret=SECRET, submission_digest="a" * 64, batch_size=64)
    first, again = presentation(1000, run), presentation(1000, run)
    assert first.order.tolist() == again.order.tolist() and first.batches == again.batches  # a regrade
    assert np.array_equal(first.gain, again.gain) and first.noise_seed == again.noise_seed
    other_submission = presentation(1000, HeldoutRun(secret=SECRET, submission_digest="b" * 64))
    other_secret = presentation(1000, HeldoutRun(secret=b"t" * 32, submission_digest="a" * 64))
    for other in (other_submission, other_secret):
        assert other.order.tolist() != first.order.tolist()
    assert sorted(first.order.tolist()) == list(range(1000))
    assert first.batches == [64] * 15 + [40]  # fixed sizes (a steady heap); what fills them is secret
    # The order is no longer "sorted by note id": it is not even close to it.
    assert abs(np.corrcoef(first.order, np.arange(1000))[0, 1]) < 0.1


def test_without_a_secret_it_says_so():
    assert not HeldoutRun().has_secret and HeldoutRun(secret=SECRET).has_secret
    assert derive_key(b"", "run", "x") == derive_key(NO_SECRET, "run", "x")


def test_submission_digest_covers_every_graded_file(tmp_path):
    for name in ("model.py", "losses.py", "train.py", "model.pt"):
        (tmp_path / name).write_bytes(name.encode())
    base = submission_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("not graded")
    assert submission_digest(tmp_path) == base
    (tmp_path / "model.pt").write_bytes(b"other weights")
    changed = submission_digest(tmp_path)
    assert changed != base
    (tmp_path / "model.pt").unlink()
    assert submission_digest(tmp_path) not in (base, changed)


def test_perturbation_is_a_small_gain_and_noise_and_restore_order_inverts():
    features = _features(300)
    run = HeldoutRun(secret=SECRET, submission_digest="d", gain_db=2.0, noise_db=1.0)
    plan = presentation(300, run)
    sent = present(features, plan, run)
    assert sent.dtype == np.float16 and sent.shape == features.shape
    back = restore_order(sent.astype(np.float32), plan)
    delta = back - features.astype(np.float32)
    per_note_gain = delta.reshape(300, -1).mean(axis=1)
    assert np.allclose(per_note_gain, plan.gain, atol=0.004)  # the gain, up to averaged noise and fp16
    assert np.abs(plan.gain).max() <= 2.0 / 40 + 1e-7 and np.abs(plan.gain).max() > 1.5 / 40
    noise = delta - plan.gain[:, None, None, None]
    assert 0.9 * (1.0 / 40) < noise.std() < 1.1 * (1.0 / 40)
    off = HeldoutRun(secret=SECRET, submission_digest="d", perturb=False)
    plan_off = presentation(300, off)
    assert np.array_equal(restore_order(present(features, plan_off, off), plan_off), features)


def test_the_issues_lookup_stops_matching_under_the_default_perturbation():
    """Projected keys of every note, matched with cdist < 1e-2: every note matches unperturbed, none perturbed."""
    features = _features(256, seed=3)
    proj = np.random.default_rng(1).normal(size=(4096, 32)).astype(np.float32) / 64
    keys = features.reshape(256, -1).astype(np.float32) @ proj

    def matches(x: np.ndarray) -> int:
        projected = x.reshape(len(x), -1).astype(np.float32) @ proj
        distance = torch.cdist(torch.from_numpy(projected), torch.from_numpy(keys)).min(1).values
        return int((distance < 1e-2).sum())

    run = HeldoutRun(secret=SECRET, submission_digest="d")  # the rubric's default gain and noise
    plan = presentation(256, run)
    assert matches(features) == 256
    assert matches(restore_order(present(features, plan, run), plan)) == 0


def test_public_part_is_stratified_by_family_and_the_same_for_every_submission():
    labels = np.repeat(np.arange(10), [84, 27, 18, 65, 77, 20, 50, 24, 31, 14])
    mask = public_mask(labels, secret=SECRET, fraction=0.3)
    assert mask.sum() == sum(round(0.3 * c) for c in np.bincount(labels))
    for family in range(10):
        members = labels == family
        assert abs(mask[members].mean() - 0.3) <= 0.5 / members.sum() + 1e-9
    assert np.array_equal(mask, public_mask(labels, secret=SECRET, fraction=0.3))
    assert not np.array_equal(mask, public_mask(labels, secret=b"t" * 32, fraction=0.3))
    assert not public_mask(labels, secret=SECRET, fraction=0.0).any()


def test_rounding_scoring_and_loss():
    assert round_accuracy(0.71249) == 0.712 and round_accuracy(0.7125) == 0.713 and round_accuracy(1.0) == 1.0
    assert scaled_fraction(0.25, zero_at=0.25, full_at=0.6) == 0.0 and scaled_fraction(0.7, zero_at=0.25, full_at=0.6) == 1
    logits = np.array([[2.0, 0.0], [0.0, 3.0]])
    expected = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor([0, 0])))
    assert mean_cross_entropy(logits, np.array([0, 0])) == pytest.approx(expected)


def test_probe_runs_the_graders_batches_and_refuses_a_plan_that_does_not_fit():
    from autograder.harness.probes import _batch_plan
    from autograder.harness.common import ProbeFailure

    assert _batch_plan({"batches": [3, 5, 2]}, 10) == [3, 5, 2]
    assert _batch_plan({"batch_size": 4}, 10) == [4, 4, 2]
    with pytest.raises(ProbeFailure, match="cover 9 notes, the input holds 10"):
        _batch_plan({"batches": [4, 5]}, 10)
