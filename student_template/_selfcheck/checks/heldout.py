"""Held-out accuracy: the student's ``model.pt`` in their ``NoteCNN`` on notes only the grader can label.

TRUSTED side.  The grader reads the held-out file (``autograder.featurefile``, numpy only), and
sends the worker feature batches alone, in a secret order, in secret batches and slightly
perturbed (``heldout_presentation.py``), mixed with the file's labelled training sample and its
private control split when it has them.  The logits come back, are put back in note order, and
numpy computes: accuracy, per-family accuracy, the 11x11 confusion matrix (rows: true family,
columns: predicted), the mean cross-entropy, the public and private parts' accuracies (when the
rubric splits the set), the control split's accuracy and the training sample's accuracy and loss
(for the grader's train-on-test and lookup detectors, which live outside this package).  The
accuracy that scores is the public notes' (their private part with a split), the control
split's, or the rubric's weighted mix of the two (``control_weight``); it is rounded to 0.1 point
first, so the points reveal no more than the rounded accuracy; points scale linearly from
``zero_at`` (none) to ``full_at`` (all).  The grader's run (``keep_predictions``) also
keeps the predicted family of every public note, in file order, for the class-wide integrity
analysis (``integrity_probe.py``; the guard moves it to ``extra_data["integrity"]["probe"]``).

Example
-------
>>> metrics = heldout_metrics(np.eye(11, dtype=np.float32)[[0, 1, 1]], np.array([0, 1, 2]))
>>> round(metrics["accuracy"], 4), metrics["per_family"]["flute"], metrics["confusion"][2][1]
(0.6667, 0.0, 1)
>>> scaled_fraction(0.6, zero_at=0.5, full_at=0.7)
0.5
>>> round_accuracy(0.71249), round_accuracy(0.71251)
(0.712, 0.713)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from _selfcheck.checks import checkpoint
from _selfcheck.checks.common import Budget, Phases, call, outcome_for_failure
from _selfcheck.checks.device_agreement import cross_check_on_cpu
from _selfcheck.checks.heldout_presentation import (HeldoutRun, derive_key, part_slices, present, presentation,
                                                   public_mask, restore_order)
from _selfcheck.checks.integrity_probe import make_record, probe_digest
from _selfcheck.checks.outcome import ItemOutcome, SubCheck
from _selfcheck.errors import NotegradeError
from _selfcheck.featureset import FAMILIES

ACCURACY_DIGITS = 3  # 0.1 point: what students see, and what the points are computed from


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


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of ``logits`` against ``labels`` in float64 (log-sum-exp, max subtracted)."""
    if len(labels) == 0:
        return float("nan")
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())


def scaled_fraction(accuracy: float, *, zero_at: float, full_at: float) -> float:
    """0 at or below ``zero_at``, 1 at or above ``full_at``, linear between."""
    return float(min(1.0, max(0.0, (accuracy - zero_at) / (full_at - zero_at))))


def round_accuracy(accuracy: float) -> float:
    """``accuracy`` rounded to 0.1 point (half up, so 0.7125 -> 0.713)."""
    return float(np.floor(accuracy * 10**ACCURACY_DIGITS + 0.5) / 10**ACCURACY_DIGITS)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.argmax(logits, axis=1) == labels).mean()) if len(labels) else float("nan")


def train_sample_metrics(logits: np.ndarray, labels: np.ndarray, heldout_counts: np.ndarray) -> dict:
    """The training sample's accuracy and loss, and its accuracy re-weighted to the held-out family mix.

    ``logits`` and ``labels`` are the sample's; ``heldout_counts`` the held-out notes per family id.
    Returns ``{"accuracy", "loss", "count", "accuracy_matched"}``.  Re-weighting compares like with
    like: NSynth's test split has another family mix than a random training sample (e.g. no
    synth_lead), and families differ in difficulty.  The grader's train-on-test detector and
    ``notegrade heldout --reference-model`` both use it.
    """
    correct = np.argmax(logits, axis=1) == labels
    per_family, weights = [], []
    for family, count in enumerate(heldout_counts):
        members = labels == family
        if count and members.any():
            per_family.append(float(correct[members].mean()))
            weights.append(float(count))
    matched = float(np.average(per_family, weights=weights)) if weights else float("nan")
    return {"accuracy": float(correct.mean()), "loss": mean_cross_entropy(logits, labels), "count": int(len(labels)),
            "accuracy_matched": matched}


def _mixed(metrics: dict, weight: float, public: float, public_count: int, part: str) -> "tuple[float, str]":
    """The scored accuracy, rounded, and how the message names it: the public notes' (``public``, on
    ``part``), the control split's, or the rubric's mix; records ``scored_accuracy``/``scored_notes``.

    Each part's accuracy is rounded to 0.1 point before the mix, so a student learns nothing finer."""
    control = metrics.get("control_accuracy")
    if control is None or weight <= 0:
        shown = round_accuracy(public)
        return shown, f"{part} {shown:.1%} ({public_count:,} notes)"
    count = metrics["control_count"]
    control_shown = round_accuracy(control)
    metrics["control_accuracy_rounded"] = control_shown
    if weight >= 1:
        metrics.update(scored_accuracy=control, scored_notes=count, control_weight=1.0)
        return control_shown, f" on the course's control notes {control_shown:.1%} ({count:,} notes)"
    public_shown = round_accuracy(public)
    mixed = round_accuracy((1 - weight) * public_shown + weight * control_shown)
    metrics.update(scored_accuracy=(1 - weight) * public + weight * control, scored_notes=public_count + count,
                   control_weight=weight)
    return mixed, (f" {mixed:.1%}: {weight:.0%} from the course's control notes ({control_shown:.1%}, {count:,} notes) "
                   f"and {1 - weight:.0%} from the public test notes{part} ({public_shown:.1%}, {public_count:,} notes)")


def _budget_problem(sandbox: Any, max_source_kb: float) -> "str | None":
    """Why the submission's files other than model.pt are over the source budget, or None.

    Sizes come from the grader's own copy of the submission (never from files student code could
    have changed since), so a lookup table carried in source (or data) files is refused here."""
    if not max_source_kb:
        return None
    sizes = {}
    for name in sorted(getattr(sandbox, "files", ()) or ()):
        if name == "model.pt":
            continue
        try:
            sizes[name] = os.lstat(os.path.join(sandbox.submission, name)).st_size
        except OSError:
            continue
    total = sum(sizes.values())
    if total <= max_source_kb * 1024:
        return None
    listed = ", ".join(f"{name} {size / 1024:,.0f} KB" for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:5])
    return (f"the submitted code files hold {total / 1024:,.0f} KB ({listed}); the limit is {max_source_kb:g} KB, "
            "far above what the assignment's code needs: the held-out accuracy is not evaluated for a submission "
            "that carries data in its source (a table of notes?). Keep data out of your .py files and resubmit")


def run_heldout(sandbox: Any, params: dict, *, timeout_s: float, heldout_path: "str | os.PathLike | None" = None,
                accuracy_label: str = "held-out accuracy", heldout_run: "HeldoutRun | None" = None,
                max_source_kb: float = 0.0, checkpoint_policy: "dict | None" = None) -> ItemOutcome:
    """Evaluate model.pt on the held-out file ``heldout_path`` (kept by the grader, labels included).

    ``accuracy_label`` names the accuracy in the message and sub-check: the self-check runs this
    same check on the student's own validation file and says so.  ``heldout_run``: the secret,
    the submission's digest, the perturbation and the public/private split (default: perturbed,
    no secret, no split).  ``max_source_kb``: the budget of the submission's files besides
    model.pt (0: none).  ``checkpoint_policy``: the rubric's ``[checkpoint]`` table (see
    :mod:`autograder.checks.checkpoint`).
    """
    if heldout_path is None:
        raise NotegradeError("heldout_accuracy needs the held-out file: pass heldout_path=... to its run()")
    from _selfcheck.featurefile import read_feature_file

    if params.get("zero_at") is None or params.get("full_at") is None:
        raise NotegradeError("heldout_accuracy needs zero_at and full_at: set them in the rubric item's params")
    zero_at, full_at = float(params["zero_at"]), float(params["full_at"])
    run = dataclasses.replace(heldout_run or HeldoutRun(), batch_size=int(params.get("batch_size", 64)))
    budget = Budget(timeout_s, sandbox)
    phases = Phases()  # where the item's time goes (results.json extra_data["timings"]["heldout"])
    over = _budget_problem(sandbox, max_source_kb)
    if over:
        return ItemOutcome.failed("error", over, data={"source_budget_exceeded": True})
    # The same verdict as the self-check's; the worker gets the weights with their low bits replaced
    # (a lookup hidden there does not survive: see checks/weight_bits.py).
    blocked, verified = checkpoint.verify(sandbox, budget, checkpoint_policy,
                                          weights_key=derive_key(run.secret, "weights", run.submission_digest))
    if blocked:
        return blocked
    phases.mark("verify_checkpoint")
    heldout = read_feature_file(heldout_path)
    sample, control = heldout.sample, heldout.control
    parts = [part for part in (heldout, sample, control) if part is not None]
    n, m = len(heldout), (len(sample) if sample is not None else 0)
    total = sum(len(part) for part in parts)
    features = tuple(part.features for part in parts)
    plan = presentation(total, run, control=len(control) if control is not None else 0)
    db_scale = float(heldout.frontend_params.get("db_scale", 40.0)) if isinstance(heldout.frontend_params, dict) else 40.0
    sent = present(features, plan, run, db_scale=db_scale)
    phases.mark("present")
    result = call(sandbox, budget, "heldout_logits", {"batches": plan.batches, **verified.args},
                  {"features": sent, **verified.inputs})
    phases.mark("forward_call")
    if not result.ok:
        return outcome_for_failure(result, "evaluating model.pt on the held-out notes")
    presented = result.arrays.get("logits")
    if presented is None:
        return ItemOutcome.failed("error", "no logits came back: " + "; ".join(result.array_errors.values()))
    if presented.shape != (total, 11) or presented.dtype.kind != "f":
        return ItemOutcome.failed("error", f"NoteCNN produced {presented.dtype} logits of shape {tuple(presented.shape)} "
                                           f"for {total:,} held-out notes, expected ({total}, 11) float logits")
    bad = int((~np.isfinite(presented).all(axis=1)).sum())
    if bad:  # no index: which note is which stays with the grader
        return ItemOutcome.failed("error", f"the model produced NaN or infinite logits for {bad:,} of {total:,} notes: "
                                           "check model.pt and forward")
    # On a GPU, a sample of the same presented rows is re-run on the CPU (issue 13's cross-check).
    presented, device = cross_check_on_cpu(sandbox, budget, sent, presented, result.value.get("device"), params,
                                           (verified.args, verified.inputs))
    del sent
    logits = restore_order(presented.astype(np.float32), plan)
    families = tuple(heldout.families) if len(getattr(heldout, "families", ()) or ()) == 11 else FAMILIES
    rows = part_slices([len(part) for part in parts])
    held, labels = logits[rows[0]], np.asarray(heldout.labels, dtype=np.int64)
    metrics = heldout_metrics(held, labels, families)
    metrics["loss"] = mean_cross_entropy(held, labels)
    scored_accuracy, scored_count, part = metrics["accuracy"], n, ""
    if run.public_fraction > 0:
        mask = public_mask(labels, secret=run.secret, fraction=run.public_fraction)
        public_acc, private_acc = _accuracy(held[mask], labels[mask]), _accuracy(held[~mask], labels[~mask])
        metrics.update(public_accuracy=public_acc, public_accuracy_rounded=round_accuracy(public_acc),
                       public_count=int(mask.sum()), private_accuracy=private_acc, private_count=int((~mask).sum()))
        scored_accuracy, scored_count, part = private_acc, int((~mask).sum()), " on the private part"
    if control is not None:
        control_logits, control_labels = logits[rows[-1]], np.asarray(control.labels, dtype=np.int64)
        metrics.update(control_accuracy=_accuracy(control_logits, control_labels), control_count=len(control),
                       control_loss=mean_cross_entropy(control_logits, control_labels))
    shown, scored_text = _mixed(metrics, run.control_weight, scored_accuracy, scored_count, part)
    fraction = scaled_fraction(shown, zero_at=zero_at, full_at=full_at)
    message = (f"{accuracy_label}{scored_text}: no points at {zero_at:.0%} or below, "
               f"full points from {full_at:.0%}, so {fraction:.1%} of the points")
    if run.control_weight > 0 and control is None:
        metrics["control_missing"] = True  # the grader tells instructors; students see what was scored
    phases.mark("metrics")
    phases["worker_forward"] = result.value.get("seconds")
    metrics.update(phases=phases, overall_accuracy=metrics["accuracy"], accuracy=metrics.pop("scored_accuracy", scored_accuracy),
                   accuracy_rounded=shown, scored_count=metrics.pop("scored_notes", scored_count), zero_at=zero_at,
                   full_at=full_at,
                   inference_seconds=result.value.get("seconds"), logits_dtype=result.value.get("dtype"),
                   **device, presentation={"perturbed": run.perturb, "gain_db": run.gain_db, "noise_db": run.noise_db,
                                 "secret": run.has_secret, "batches": len(plan.batches),
                                 "public_fraction": run.public_fraction})
    if run.keep_predictions and verified.sha256:  # the grader's run: kept for the class analysis (instructor-only)
        metrics["probe"] = make_record(np.argmax(held, axis=1), perturbed=run.perturb, model_sha256=verified.sha256,
                                       probe=probe_digest(heldout.notes, labels, heldout.frontend_hash))
    if m:
        metrics["train_sample"] = train_sample_metrics(logits[rows[1]], np.asarray(sample.labels, dtype=np.int64),
                                                       np.bincount(labels, minlength=len(families)))
    return ItemOutcome(fraction=fraction, subchecks=[SubCheck(accuracy_label, shown >= full_at, 1.0, message)],
                       message="".join(note + "\n" for note in verified.notes) + message, data=metrics)
