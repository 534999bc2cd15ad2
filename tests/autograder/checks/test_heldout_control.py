"""The private control split in the held-out item: presented like the public notes, scored as the rubric says."""
from __future__ import annotations

import numpy as np
import pytest

from autograder.checks.heldout import _mixed, round_accuracy
from autograder.checks.heldout_presentation import HeldoutRun, part_slices, present, presentation, restore_order


def test_control_notes_are_mixed_into_the_same_batches_with_the_same_perturbation():
    n, m, k = 4096, 1024, 1000
    parts = [np.zeros((n, 1, 64, 64), np.float16), np.zeros((m, 1, 64, 64), np.float16),
             np.zeros((k, 1, 64, 64), np.float16)]
    for index, part in enumerate(parts):
        part[:, 0, 0, 0], part[:, 0, 0, 1], part[:, 0, 0, 2] = index, np.arange(len(part)) // 64, np.arange(len(part)) % 64
        part[:, 0, 1:, :] = 0.5
    run = HeldoutRun(secret=b"s" * 32, submission_digest="d", batch_size=256)
    plan = presentation(n + m + k, run)
    rows = part_slices([n, m, k])
    kind = np.zeros(n + m + k, int)
    kind[rows[1]], kind[rows[2]] = 1, 2
    sent_kind = kind[plan.order]
    # Every batch holds notes of every part, in the proportions of the whole (no block of control notes).
    starts = np.cumsum([0, *plan.batches[:-1]])
    shares = [np.mean(sent_kind[s:s + b] == 2) for s, b in zip(starts, plan.batches)]
    assert min(shares) > 0 and abs(np.mean(shares) - k / (n + m + k)) < 0.01
    assert abs(np.flatnonzero(sent_kind == 2).mean() / (n + m + k) - 0.5) < 0.03  # no position says "control"
    sent = present(tuple(parts), plan, run).astype(np.float32)
    # The same perturbation for each part: gains from one draw, noise of one scale.
    gain = (sent[:, 0, 1:, :].mean(axis=(1, 2)) - 0.5)
    noise = sent[:, 0, 1:, :].std(axis=(1, 2))
    for part in (0, 1, 2):
        chosen = sent_kind == part
        assert abs(gain[chosen].std() - (run.gain_db / 40) / np.sqrt(3)) < 0.002  # the run's own sizes (dB / 40)
        assert abs(noise[chosen].mean() - run.noise_db / 40) < 0.001
    # Answers put back in note order: each part's rows are its own.
    restored = restore_order(sent[:, 0, 0, 0:3].round(), plan)  # the "logits": each note's id, sent back
    assert (restored[rows[2], 0] == 2).all() and (restored[rows[0], 0] == 0).all()
    assert (restored[rows[2], 1] * 64 + restored[rows[2], 2]).tolist() == list(range(k))


def test_the_scored_accuracy_public_control_or_mixed():
    metrics = {"control_accuracy": 0.4512, "control_count": 1000}
    shown, text = _mixed(dict(metrics), 0.0, 0.6349, 4096, "")
    assert shown == 0.635 and text == " 63.5% (4,096 notes)"
    data = dict(metrics)
    shown, text = _mixed(data, 1.0, 0.6349, 4096, "")
    assert shown == 0.451 and "on the course's control notes 45.1% (1,000 notes)" in text
    assert data["scored_accuracy"] == 0.4512 and data["scored_notes"] == 1000
    data = dict(metrics)
    shown, text = _mixed(data, 0.8, 0.6349, 2867, " on the private part")
    assert shown == round_accuracy(0.2 * 0.635 + 0.8 * 0.451) == 0.488
    assert "80% from the course's control notes (45.1%, 1,000 notes)" in text
    assert "20% from the public test notes on the private part (63.5%, 2,867 notes)" in text
    assert data["scored_accuracy"] == pytest.approx(0.2 * 0.6349 + 0.8 * 0.4512) and data["control_weight"] == 0.8
    # No control split in the file: the public notes score whatever the weight.
    shown, text = _mixed({}, 0.8, 0.6349, 4096, "")
    assert shown == 0.635 and "control" not in text


def test_the_control_split_takes_the_classes_perturbation_the_public_notes_the_submissions():
    """Issue 17.5: the control notes' gain and noise are keyed by the secret alone (the same for every
    submission, wherever a note lands in the secret order), so the same weights score the same on them;
    the public notes keep the submission's draws, exactly as without a control split."""
    n, k = 600, 200
    features = np.random.default_rng(0).uniform(-1.5, 1.5, size=(n + k, 1, 64, 64)).astype(np.float16)

    def received(digest: str, *, control: int = k, secret: bytes = b"s" * 32, perturb: bool = True) -> np.ndarray:
        run = HeldoutRun(secret=secret, submission_digest=digest, batch_size=64, perturb=perturb)
        plan = presentation(n + k, run, control=control)
        return restore_order(present(features, plan, run), plan).astype(np.float32)

    a, b = received("a"), received("b")
    assert np.array_equal(a[n:], b[n:])  # control: the class's, note for note
    assert (np.abs(a[:n] - b[:n]).reshape(n, -1).max(axis=1) > 0).all()  # public: each submission's own
    assert np.array_equal(a[:n], received("a", control=0)[:n])  # the public draws did not move
    assert not np.array_equal(a[n:], received("a", secret=b"t" * 32)[n:])  # another class, another draw
    assert np.array_equal(received("a", perturb=False), features.astype(np.float32))
    # ... of the same size as the public notes' (the worker can't tell the parts apart by it).
    delta = a - features.astype(np.float32)
    gain = delta.reshape(n + k, -1).mean(axis=1)
    noise = (delta - gain[:, None, None, None]).reshape(n + k, -1).std(axis=1)
    run = HeldoutRun()
    for rows in (slice(0, n), slice(n, n + k)):
        assert abs(gain[rows].std() - (run.gain_db / 40) / np.sqrt(3)) < 0.0015
        assert abs(noise[rows].mean() - run.noise_db / 40) < 0.0005
