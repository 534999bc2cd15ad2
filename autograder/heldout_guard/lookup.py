"""The lookup detector: a public-only gain, told apart by the private control split.

A lookup of NSynth's public test labels (in the weights, the code or anything else) can answer
public held-out notes, never the control notes: nobody outside the course has them.  An honest
model's accuracy on the two parts moves together, so the reference's ratio (its public accuracy
over its control accuracy, recorded in the held-out file by ``notegrade heldout --control DIR
--reference-model model.pt``) predicts a model's public accuracy from its control accuracy::

    expected = min(1, ratio * control)        excess = public - expected
    se = sqrt(p0 (1 - p0) / n_public + ratio^2 c0 (1 - c0) / n_control)   (binomial, under the null:
         c0 pools both parts' estimates of the control accuracy, p0 = ratio * c0)
    lower = excess - z * se - (0.5 / n_public + ratio * 0.5 / n_control)  (half a note of continuity)
    flagged when  lower > margin       (z: one-sided ``confidence``, default 0.99 -> 2.33)

so an honest model on the reference's ratio is flagged at most ``1 - confidence`` of the time, and
``margin`` absorbs how far honest models stray from that ratio.  Honest models do stray: each has its
own luck on the few instruments a split holds.  When the file records two or more other honest
models (``notegrade heldout --honest-model``), the ratio is the median of all their ratios and the
reference's, and the root-mean-square of their excesses over it (``spread``) joins the standard
error: ``sqrt(se^2 + spread^2)``.  With 4,096 public and 1,000 control notes the binomial bound's
half-width is 3-4.5 points (less at high accuracies): a +5-point public-only gain is flagged about
half the time at 40-70% accuracy, +10 nearly always; more control notes narrow it, a spread widens
it (the detector table in docs/threat-model.md gives the measured rates).  Instructor-only, like the other
integrity lines; it never changes a score.

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

import numpy as np

from autograder.rubric.model import LookupDetector


def _number(value: Any) -> "float | None":
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _smoothed(accuracy: Any, n: int) -> Any:
    """``accuracy`` pulled half a note towards 1/2, so 0% and 100% still have a variance."""
    return (accuracy * n + 0.5) / (n + 1)


def bound(public: Any, n_public: int, control: Any, n_control: int, ratio: float,
          confidence: float = 0.99, spread: float = 0.0) -> "tuple[Any, Any, Any]":
    """``(excess, se, lower)``: the public accuracy above ``ratio`` x control (capped at 1), its
    binomial standard error under the null and its one-sided lower confidence bound at ``confidence``.

    Under the null (public = ratio x control) both parts estimate one control accuracy ``c0``: their
    estimates are pooled by precision, and the standard error is taken at ``c0`` (taken at the observed
    accuracies, it shrinks exactly when the control accuracy comes out low, which flags too often at
    low accuracies); half a note of continuity correction on each part keeps the rate of honest flags at
    or under ``1 - confidence`` (measured: 0.73-0.97% at 0.99 from 10% to 95% accuracy).  ``spread``:
    how far honest models stray from the ratio (:func:`calibration`), added to the standard error in
    quadrature.  Floats or numpy arrays of accuracies alike (the benchmark simulates many models at once)."""
    public = np.asarray(public, dtype=np.float64)
    control = np.asarray(control, dtype=np.float64)
    expected = np.minimum(1.0, ratio * control)
    p, c = _smoothed(public, n_public), _smoothed(control, n_control)
    weight_control, weight_public = n_control / (c * (1 - c)), n_public * ratio ** 2 / (p * (1 - p))
    pooled = (weight_control * c + weight_public * p / ratio) / (weight_control + weight_public)
    c0 = np.clip(pooled, 1e-4, min(1.0, 1.0 / ratio) - 1e-4)
    p0 = ratio * c0
    below_cap = ratio * control < 1.0  # at the cap the expectation is 100%: nothing is above it
    se = np.where(below_cap, np.sqrt(p0 * (1 - p0) / n_public + ratio ** 2 * c0 * (1 - c0) / n_control),
                  np.sqrt(p * (1 - p) / n_public))
    se = np.sqrt(se ** 2 + spread ** 2)
    excess = public - expected
    lower = excess - NormalDist().inv_cdf(confidence) * se - (0.5 / n_public + ratio * 0.5 / n_control)
    if np.ndim(excess) == 0:
        return float(excess), float(se), float(lower)
    return excess, se, lower


def calibration(ref_public: float, ref_control: float, honest: Any) -> "tuple[float, float, int]":
    """``(ratio, spread, models)``: the reference's ratio alone, or, with two or more honest models, the
    median ratio of them all and the root-mean-square excess of them all over it."""
    points = [(ref_public, ref_control)]
    for model in honest if isinstance(honest, list) else []:
        public = _number(model.get("heldout_accuracy")) if isinstance(model, dict) else None
        control = _number(model.get("control_accuracy")) if isinstance(model, dict) else None
        if public is not None and control:
            points.append((public, control))
    if len(points) < 3:
        return ref_public / ref_control, 0.0, 0
    ratio = float(np.median([public / control for public, control in points]))
    spread = math.sqrt(sum((public - min(1.0, ratio * control)) ** 2 for public, control in points) / len(points))
    return ratio, spread, len(points) - 1


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
    ratio, spread, models = calibration(ref_public, ref_control, (reference or {}).get("honest"))
    excess, se, lower = bound(public, n_public, control, n_control, ratio, settings.confidence, spread)
    expected = min(1.0, ratio * control)
    flagged = lower > settings.margin
    source = (f"the median ratio {ratio:.2f} of the reference and {models} honest models (which stray by "
              f"{spread * 100:.1f} points)" if models else f"the reference's ratio {ratio:.2f} ({ref_public:.1%} / "
                                                           f"{ref_control:.1%})")
    numbers = (f"public notes {public:.1%} ({n_public:,}), control notes {control:.1%} ({n_control:,}); "
               f"{source} predicts {expected:.1%} public")
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
            "honest_models": models, "honest_spread": round(spread, 4), "confidence": settings.confidence,
            "margin": settings.margin, "reason": reason}
