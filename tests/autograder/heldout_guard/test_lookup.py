"""The lookup detector's statistics: the binomial bound, its false flags at the null and its power."""
from __future__ import annotations

import math

import numpy as np
import pytest

from autograder.heldout_guard.lookup import bound, detect
from autograder.rubric.model import LookupDetector

REFERENCE = {"heldout_accuracy": 0.65, "control_accuracy": 0.50}


def flags(public, n_public, control, n_control, ratio, settings=LookupDetector()):
    return bound(public, n_public, control, n_control, ratio, settings.confidence)[2] > settings.margin


def simulate(public, control, ratio, *, draws, rng, n_public=4096, n_control=1000):
    """Share of binomial draws (4,096 public, 1,000 control notes) of a model with these true accuracies flagged."""
    drawn_public = rng.binomial(n_public, min(public, 1.0), draws) / n_public
    drawn_control = rng.binomial(n_control, control, draws) / n_control
    return float(flags(drawn_public, n_public, drawn_control, n_control, ratio).mean())


def _data(public: float, control: float, n_public: int = 4096, n_control: int = 1000) -> dict:
    return {"overall_accuracy": public, "count": n_public, "control_accuracy": control, "control_count": n_control}


def test_the_bound_is_the_documented_formula():
    excess, se, lower = bound(0.70, 4096, 0.50, 1000, 1.3, 0.99)
    p, c = (0.70 * 4096 + 0.5) / 4097, (0.50 * 1000 + 0.5) / 1001
    w_control, w_public = 1000 / (c * (1 - c)), 4096 * 1.3 ** 2 / (p * (1 - p))
    c0 = (w_control * c + w_public * p / 1.3) / (w_control + w_public)  # both parts' estimate of the control accuracy
    assert 0.5 < c0 < 0.70 / 1.3  # between the two estimates, nearer the more precise public one
    assert excess == pytest.approx(0.70 - 0.65)
    assert se == pytest.approx(math.sqrt(1.3 * c0 * (1 - 1.3 * c0) / 4096 + 1.3 ** 2 * c0 * (1 - c0) / 1000))
    assert lower == pytest.approx(excess - 2.3263479 * se - (0.5 / 4096 + 1.3 * 0.5 / 1000))
    # Above the cap (ratio x control >= 1) the expectation is 100%: never above it.
    excess, se, lower = bound(0.99, 4096, 0.90, 1000, 1.2)
    assert excess == pytest.approx(-0.01) and lower < 0
    # 0% and 100% still have a variance (half a note of smoothing).
    assert bound(1.0, 100, 0.0, 100, 1.0)[1] > 0


def test_the_vectorised_bound_agrees_with_the_detector():
    rng = np.random.default_rng(0)
    public, control = rng.uniform(0.3, 0.9, 200), rng.uniform(0.2, 0.8, 200)
    vectorised = flags(public, 4096, control, 1000, REFERENCE["heldout_accuracy"] / REFERENCE["control_accuracy"])
    one_by_one = [detect(_data(p, c), LookupDetector(), REFERENCE)["flagged"] for p, c in zip(public, control)]
    assert vectorised.tolist() == one_by_one


@pytest.mark.parametrize("public, control", [(0.30, 0.10), (0.40, 0.30), (0.65, 0.50), (0.85, 0.78), (0.95, 0.90),
                                             (0.50, 0.80)])
def test_honest_models_on_the_references_ratio_are_flagged_at_most_one_percent_of_the_time(public, control):
    rate = simulate(public, control, public / control, draws=100_000, rng=np.random.default_rng(1))
    assert rate <= 0.0105  # 1% and the simulation's own error (+-0.03% at 100,000 draws)


@pytest.mark.parametrize("public, control", [(0.40, 0.30), (0.65, 0.50), (0.85, 0.78)])
def test_public_only_gains_are_flagged(public, control):
    rng = np.random.default_rng(2)
    ratio = public / control
    five, ten, thirty = (simulate(public + gain, control, ratio, draws=20_000, rng=rng) for gain in (0.05, 0.10, 0.30))
    assert five >= 0.45 and ten >= 0.98 and thirty == 1.0  # docs/threat-model.md: the detector table (binomial part)
    assert five > simulate(public + 0.02, control, ratio, draws=20_000, rng=rng)


def test_verdicts_and_when_the_detector_does_not_run():
    honest = detect(_data(0.655, 0.505), LookupDetector(), REFERENCE)
    assert honest["flagged"] is False and honest["expected_public"] == pytest.approx(0.6565)
    assert "no public-only gain shown" in honest["reason"]
    lookup = detect(_data(0.755, 0.505), LookupDetector(), REFERENCE)
    assert lookup["flagged"] is True and "possible lookup of the public test labels" in lookup["reason"]
    assert lookup["reference_ratio"] == pytest.approx(1.3) and lookup["lower_bound"] > 0
    # A margin (points of tolerance) and the confidence come from [heldout.lookup].
    assert detect(_data(0.755, 0.505), LookupDetector(margin=0.10), REFERENCE)["flagged"] is False
    assert detect(_data(0.755, 0.505), LookupDetector(enabled=False), REFERENCE) is None
    assert detect({"overall_accuracy": 0.7, "count": 4096}, LookupDetector(), REFERENCE) is None  # no control split
    assert detect(_data(0.7, 0.5), LookupDetector(), {"heldout_accuracy": 0.65}) is None  # no reference number
    assert detect(_data(0.7, 0.5), LookupDetector(), None) is None
    assert detect(_data(0.7, 0.5, n_control=0), LookupDetector(), REFERENCE) is None
    assert detect(_data(0.7, 0.5), LookupDetector(), {"heldout_accuracy": 0.6, "control_accuracy": 0.0}) is None


def test_honest_models_recorded_in_the_file_calibrate_the_ratio_and_the_tolerance():
    from autograder.heldout_guard.lookup import calibration

    honest = [{"heldout_accuracy": 0.62, "control_accuracy": 0.45}, {"heldout_accuracy": 0.70, "control_accuracy": 0.52},
              {"heldout_accuracy": 0.58, "control_accuracy": 0.46}, {"heldout_accuracy": "n/a"}]
    ratio, spread, models = calibration(0.65, 0.50, honest)
    ratios = sorted([0.65 / 0.50, 0.62 / 0.45, 0.70 / 0.52, 0.58 / 0.46])
    assert models == 3 and ratio == pytest.approx((ratios[1] + ratios[2]) / 2)
    excesses = [p - ratio * c for p, c in ((0.65, 0.5), (0.62, 0.45), (0.70, 0.52), (0.58, 0.46))]
    assert spread == pytest.approx(math.sqrt(sum(e * e for e in excesses) / 4))
    assert calibration(0.65, 0.50, honest[:1]) == (pytest.approx(1.3), 0.0, 0)  # one honest model: the reference's
    verdict = detect(_data(0.755, 0.505), LookupDetector(), {**REFERENCE, "honest": honest})
    plain = detect(_data(0.755, 0.505), LookupDetector(), REFERENCE)
    assert verdict["honest_models"] == 3 and verdict["honest_spread"] == pytest.approx(spread, abs=1e-4)
    assert verdict["lower_bound"] < plain["lower_bound"] and "3 honest models" in verdict["reason"]
    _, se, _ = bound(0.755, 4096, 0.505, 1000, ratio)
    _, widened, _ = bound(0.755, 4096, 0.505, 1000, ratio, spread=spread)
    assert widened == pytest.approx(math.sqrt(se ** 2 + spread ** 2))
