"""Held-out accuracy: the student's ``model.pt`` in their ``NoteCNN`` on notes only the grader can label.

TRUSTED side.  The grader reads the held-out file (``autograder.featurefile``, numpy only),
sends the worker the features alone, gets logits back and computes, with numpy: accuracy,
per-family accuracy and the 11x11 confusion matrix (rows: true family, columns: predicted).
Points scale linearly from ``zero_at`` (no points) to ``full_at`` (all points).

Example
-------
>>> metrics = heldout_metrics(np.eye(11, dtype=np.float32)[[0, 1, 1]], np.array([0, 1, 2]))
>>> round(metrics["accuracy"], 4), metrics["per_family"]["flute"], metrics["confusion"][2][1]
(0.6667, 0.0, 1)
>>> scaled_fraction(0.6, zero_at=0.5, full_at=0.7)
0.5
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from _selfcheck.checks import checkpoint
from _selfcheck.checks.common import Budget, call, outcome_for_failure
from _selfcheck.checks.device_agreement import cross_check_on_cpu
from _selfcheck.checks.outcome import ItemOutcome, SubCheck
from _selfcheck.errors import NotegradeError

FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal")


def heldout_metrics(logits: np.ndarray, labels: np.ndarray, families: "tuple[str, ...] | list[str]" = FAMILIES) -> dict:
    """Accuracy, per-family accuracy (None for a family with no notes) and the confusion matrix."""
    classes = len(families)
    predicted = np.argmax(logits, axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    confusion = np.bincount(labels * classes + np.clip(predicted, 0, classes - 1),
                            minlength=classes * classes).reshape(classes, classes)
    per_count = confusion.sum(axis=1)
    per_family = {name: (float(confusion[i, i] / per_count[i]) if per_count[i] else None)
                  for i, name in enumerate(families)}
    correct = int(np.trace(confusion))
    return {"accuracy": correct / max(len(labels), 1), "count": int(len(labels)), "correct": correct,
            "per_family": per_family, "per_family_count": {n: int(c) for n, c in zip(families, per_count)},
            "confusion": confusion.astype(int).tolist(), "families": list(families)}


def scaled_fraction(accuracy: float, *, zero_at: float, full_at: float) -> float:
    """0 at or below ``zero_at``, 1 at or above ``full_at``, linear between."""
    return float(min(1.0, max(0.0, (accuracy - zero_at) / (full_at - zero_at))))


def run_heldout(sandbox: Any, params: dict, *, timeout_s: float, heldout_path: "str | os.PathLike | None" = None,
                accuracy_label: str = "held-out accuracy", checkpoint_policy: "dict | None" = None) -> ItemOutcome:
    """Evaluate model.pt on the held-out file ``heldout_path`` (kept by the grader, labels included).

    ``accuracy_label`` names the accuracy in the message and sub-check: the self-check runs this
    same check on the student's own validation file and says so.  ``checkpoint_policy``: the
    rubric's ``[checkpoint]`` table (see :mod:`autograder.checks.checkpoint`).
    """
    if heldout_path is None:
        raise NotegradeError("heldout_accuracy needs the held-out file: pass heldout_path=... to its run()")
    from _selfcheck.featurefile import read_feature_file

    if params.get("zero_at") is None or params.get("full_at") is None:
        raise NotegradeError("heldout_accuracy needs zero_at and full_at: set them in the rubric item's params")
    zero_at, full_at = float(params["zero_at"]), float(params["full_at"])
    budget = Budget(timeout_s, sandbox)
    blocked, verified = checkpoint.verify(sandbox, budget, checkpoint_policy)  # the same verdict as the self-check's
    if blocked:
        return blocked
    heldout = read_feature_file(heldout_path)
    features = sandbox.share_input("heldout_features", heldout.features)
    result = call(sandbox, budget, "heldout_logits", {"batch_size": int(params.get("batch_size", 64)), **verified.args},
                  {"features": features, **verified.inputs})
    if not result.ok:
        return outcome_for_failure(result, "evaluating model.pt on the held-out notes")
    n = len(heldout)
    logits = result.arrays.get("logits")
    if logits is None:
        return ItemOutcome.failed("error", "no logits came back: " + "; ".join(result.array_errors.values()))
    if logits.shape != (n, 11) or logits.dtype.kind != "f":
        return ItemOutcome.failed("error", f"NoteCNN produced {logits.dtype} logits of shape {tuple(logits.shape)} for "
                                           f"{n:,} held-out notes, expected ({n}, 11) float logits")
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        return ItemOutcome.failed("error", f"the model produced NaN or infinite logits for {int(bad.sum()):,} of {n:,} "
                                           f"held-out notes (first at note {first}): check model.pt and forward")
    logits, device = cross_check_on_cpu(sandbox, budget, heldout.features, logits, result.value.get("device"), params,
                                        (verified.args, verified.inputs))
    families = tuple(heldout.families) if len(getattr(heldout, "families", ()) or ()) == 11 else FAMILIES
    metrics = heldout_metrics(logits.astype(np.float32), heldout.labels, families)
    accuracy = metrics["accuracy"]
    fraction = scaled_fraction(accuracy, zero_at=zero_at, full_at=full_at)
    message = (f"{accuracy_label} {accuracy:.1%} ({metrics['correct']:,} of {n:,} notes): no points at "
               f"{zero_at:.0%} or below, full points from {full_at:.0%}, so {fraction:.1%} of the points")
    metrics.update(zero_at=zero_at, full_at=full_at, inference_seconds=result.value.get("seconds"),
                   logits_dtype=result.value.get("dtype"), **device)
    return ItemOutcome(fraction=fraction, subchecks=[SubCheck(accuracy_label, accuracy >= full_at, 1.0, message)],
                       message="".join(note + "\n" for note in verified.notes) + message, data=metrics)
