"""The lookup detector: a public-only gain, told apart by the private control split.

A lookup of NSynth's public test labels (in the weights, the code or anything else) can answer
public held-out notes, never the control notes: nobody outside the course has them.  An honest
model's accuracy on the two parts moves together, so the reference's ratio (its public accuracy
over its control accuracy, recorded in the held-out file by ``notegrade heldout --control DIR
--reference-model model.pt``) predicts a model's public accuracy from its control accuracy::

    expected = min(1, ratio * control)        excess = public - expected
    se = sqrt(p(1 - p) / n_public + ratio^2 * c(1 - c) / n_control)     (binomial, p and c smoothed)
    flagged when  excess - z * se > margin   (z: one-sided ``confidence``, default 0.99 -> 2.33)

so an honest model on the reference's ratio is flagged at most ``1 - confidence`` of the time, and
``margin`` absorbs how far honest models stray from that ratio.  With 4,096 public and 1,000 control
notes, the bound's half-width is 3-4.5 points (less at high accuracies); the README's table gives
the measured flag rates of honest models and of lookups gaining +2 to +30 public points.
Instructor-only, like the other integrity lines; it never changes a score.

Example
-------
>>> reference = {"heldout_accuracy": 0.60, "control_accuracy": 0.50}
>>> honest = {"overall_accuracy": 0.612, "count": 4096, "control_accuracy": 0.51, "control_count": 1000}
>>> detect(honest, LookupDetector(), reference)["flagged"]
False
>>> lookup = {**honest, "overall_accuracy": 0.712}
>>> verdict = detect(lookup, LookupDetector(), reference)
>>> verdict["flagged"], verdict["expected_public"], round(verdict["excess"], 3)
(True, 0.612, 0.1)
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

from autograder.rubric.model import LookupDetector


def _number(value: Any) -> "float | None":
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _smoothed(accuracy: float, n: int) -> float:
    """``accuracy`` pulled half a note towards 1/2, so 0% and 100% still have a variance."""
    return (accuracy * n + 0.5) / (n + 1)


def bound(public: float, n_public: int, control: float, n_control: int, ratio: float,
          confidence: float = 0.99) -> "tuple[float, float, float]":
    """``(excess, se, lower)``: the public accuracy above ``ratio`` x control (capped at 1), its
    binomial standard error and its one-sided lower confidence bound at ``confidence``."""
    expected = min(1.0, ratio * control)
    p, c = _smoothed(public, n_public), _smoothed(control, n_control)
    slope = ratio if ratio * control < 1.0 else 0.0  # above the cap, the control accuracy no longer matters
    se = math.sqrt(p * (1 - p) / n_public + slope ** 2 * c * (1 - c) / n_control)
    z = NormalDist().inv_cdf(confidence)
    excess = public - expected
    return excess, se, excess - z * se


def detect(data: dict, settings: LookupDetector, reference: "dict | None") -> "dict | None":
    """The verdict (``integrity.lookup``), or None when it can't run (no control split, no reference numbers).

    ``data``: the held-out check's data (``overall_accuracy`` and ``count`` on the public notes,
    ``control_accuracy``/``control_count``); ``reference``: the file's ``heldout_accuracy`` and
    ``control_accuracy``.
    """
    if not settings.enabled or not isinstance(data, dict):
        return None
    public, control = _number(data.get("overall_accuracy")), _number(data.get("control_accuracy"))
    n_public, n_control = _count(data.get("count")), _count(data.get("control_count"))
    ref_public = _number((reference or {}).get("heldout_accuracy"))
    ref_control = _number((reference or {}).get("control_accuracy"))
    if None in (public, control, ref_public, ref_control) or not n_public or not n_control or not ref_control:
        return None
    ratio = ref_public / ref_control
    excess, se, lower = bound(public, n_public, control, n_control, ratio, settings.confidence)
    expected = min(1.0, ratio * control)
    flagged = lower > settings.margin
    numbers = (f"public notes {public:.1%} ({n_public:,}), control notes {control:.1%} ({n_control:,}); the "
               f"reference's ratio {ratio:.2f} ({ref_public:.1%} / {ref_control:.1%}) predicts {expected:.1%} public")
    if flagged:
        reason = (f"possible lookup of the public test labels: {numbers}, and the model is {excess * 100:+.1f} points "
                  f"above it (at least {lower * 100:+.1f} at {settings.confidence:.0%} confidence, tolerance "
                  f"{settings.margin * 100:.1f})")
    else:
        reason = (f"{numbers}: {excess * 100:+.1f} points (lower bound {lower * 100:+.1f} at "
                  f"{settings.confidence:.0%}, tolerance {settings.margin * 100:.1f}): no public-only gain shown")
    return {"flagged": bool(flagged), "public_accuracy": round(public, 4), "public_count": n_public,
            "control_accuracy": round(control, 4), "control_count": n_control, "reference_ratio": round(ratio, 4),
            "expected_public": round(expected, 4), "excess": round(excess, 4), "lower_bound": round(lower, 4),
            "confidence": settings.confidence, "margin": settings.margin, "reason": reason}
