"""Benchmark: the lookup detector's flags on honest models and on public-lookup models (issue 17.1).

Prints measured numbers for the detector table in docs/threat-model.md, with the rubric's default
``[heldout.lookup]`` (``autograder/heldout_guard/lookup.py``):

1. **Binomial simulation at the course's sizes** (4,096 public, 1,000 control notes; ``--draws``
   per row): honest models exactly on the reference's public/control ratio at several strengths
   (the test's own false-flag rate), and the same models with a public-only gain of +2, +5, +10 and
   +30 points (what a lookup of the public test labels buys): the share flagged.
2. **Real models' accuracies at the course's sizes**: every honest model of
   ``benchmarks/lookup_models.py`` (seeds x epochs x training-set sizes, trained for real on a
   rendered public world) has its measured public and control accuracies taken as its true ones,
   redrawn binomially at 4,096 / 1,000 notes: the false flags that the spread of honest models
   around the reference's ratio adds to the test's own; and the same models with the lookup gains.
   Twice: with the reference alone, and calibrated by six other honest models (``notegrade heldout
   --honest-model``: two more seeds of the reference's recipe, 1/8, 1/4, 1/2 and twice its epochs),
   counting only the models outside that set.
   A second table: the +5 flag rate by control-split size (500 to 8,000 notes).
3. **Real models as measured** (their own, smaller note counts: 640 public, about 1,300-2,000
   control notes): each honest model's verdict, and each model with a real lookup table
   answering wrong public notes until it gains +2 ... +30 points.
4. **A note-pattern test, tried and not used**: does a model get the public notes that the calibration
   models find hard right more often than its accuracy predicts (a person-fit z score)?  Honest models'
   z and lookup models' z, to show why the detector does not rest on it.

Run: ``python benchmarks/bench_lookup.py [--work DIR] [--draws N] [--skip-real]``; the first run
renders and trains (``lookup_models.py``, ~30-60 min on 2 cores), later runs read the cache.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

N_PUBLIC, N_CONTROL = 4096, 1000
GAINS = (0.02, 0.05, 0.10, 0.30)
STRENGTHS = ((0.40, 0.30), (0.55, 0.42), (0.65, 0.50), (0.72, 0.60), (0.85, 0.78))  # (public, control) on the ratio


def flags(public: np.ndarray, n_public: int, control: np.ndarray, n_control: int, ratio: float,
          spread: float = 0.0) -> np.ndarray:
    """The detector's verdicts for arrays of accuracies (:func:`lookup.bound` with the rubric's defaults)."""
    from autograder.heldout_guard.lookup import bound
    from autograder.rubric.model import LookupDetector

    settings = LookupDetector()
    return bound(public, n_public, control, n_control, ratio, settings.confidence, spread)[2] > settings.margin


def simulate(true_public: float, true_control: float, ratio: float, *, draws: int, rng: np.random.Generator,
             n_public: int = N_PUBLIC, n_control: int = N_CONTROL, spread: float = 0.0) -> float:
    """Share of ``draws`` binomial draws of a model with these true accuracies that is flagged."""
    public = rng.binomial(n_public, min(true_public, 1.0), draws) / n_public
    control = rng.binomial(n_control, true_control, draws) / n_control
    return float(flags(public, n_public, control, n_control, ratio, spread).mean())


def _row(label: str, values: "list[float]") -> str:
    return f"| {label} | " + " | ".join(f"{v:.1%}" for v in values) + " |"


def part_one(draws: int, rng: np.random.Generator) -> None:
    print(f"1. Binomial simulation, {N_PUBLIC:,} public / {N_CONTROL:,} control notes, {draws:,} draws per cell; "
          "honest = on the reference's ratio (the reference itself at each strength)")
    print("| model (true public / control accuracy) | honest | +2 | +5 | +10 | +30 |")
    print("|---|---|---|---|---|---|")
    for public, control in STRENGTHS:
        ratio = public / control
        cells = [simulate(public + gain, control, ratio, draws=draws, rng=rng) for gain in (0.0, *GAINS)]
        print(_row(f"{public:.0%} / {control:.0%}", cells))


def part_sizes(draws: int, rng: np.random.Generator) -> None:
    print(f"\nHow large: a +5-point public-only gain flagged, by control-split size ({N_PUBLIC:,} public notes), "
          "and honest false flags")
    sizes = (500, 1000, 2000, 4000, 8000)
    print("| model (true public / control) | " + " | ".join(f"{n:,} control: +5 / honest" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for public, control in ((0.65, 0.50), (0.85, 0.78)):
        cells = []
        for n in sizes:
            gained = simulate(public + 0.05, control, public / control, draws=draws, rng=rng, n_control=n)
            honest = simulate(public, control, public / control, draws=draws, rng=rng, n_control=n)
            cells.append(f"{gained:.0%} / {honest:.1%}")
        print(f"| {public:.0%} / {control:.0%} | " + " | ".join(cells) + " |")


def _accuracies(models: dict, control: str) -> "dict[str, tuple[float, float, int, int]]":
    return {key: (float(np.mean(m["public"])), float(np.mean(m[control])), len(m["public"]), len(m[control]))
            for key, m in models.items()}


def settings_for(found: dict, reference: str, honest: "tuple[str, ...]") -> "tuple[float, float, str]":
    """(ratio, spread, label) of the detector with the reference alone or calibrated by ``honest`` models."""
    from autograder.heldout_guard.lookup import calibration

    ref_public, ref_control, _, _ = found[reference]
    ratio, spread, models = calibration(ref_public, ref_control, [
        {"heldout_accuracy": found[k][0], "control_accuracy": found[k][1]} for k in honest])
    label = (f"reference + {models} honest models (ratio {ratio:.2f}, spread {spread * 100:.1f} points)" if models
             else f"reference alone (ratio {ratio:.2f})")
    return ratio, spread, label


def part_two(models: dict, reference: str, honest: "tuple[str, ...]", control: str, draws: int,
             rng: np.random.Generator) -> None:
    found = _accuracies(models, control)
    ref_public, ref_control, _, _ = found[reference]
    others = [k for k in found if k != reference and k not in honest]
    print(f"\n2. Real honest models' accuracies (control split '{control}'; reference {reference}: "
          f"{ref_public:.1%} public / {ref_control:.1%} control) redrawn at {N_PUBLIC:,} / {N_CONTROL:,} notes, "
          f"{draws:,} draws each; the {len(others)} models outside the calibration set")
    print("| detector | honest | +2 | +5 | +10 | +30 | most flagged honest model |")
    print("|---|---|---|---|---|---|---|")
    for calibrated in ((), honest):
        ratio, spread, label = settings_for(found, reference, calibrated)
        rows = {gain: [simulate(found[k][0] + gain, found[k][1], ratio, draws=draws, rng=rng, spread=spread)
                       for k in others] for gain in (0.0, *GAINS)}
        worst = int(np.argmax(rows[0.0]))
        key = others[worst]
        print(f"| {label} | " + " | ".join(f"{np.mean(rows[g]):.1%}" for g in rows)
              + f" | {key} ({found[key][0]:.1%} / {found[key][1]:.1%}): {rows[0.0][worst]:.0%} |")


def with_lookup(correct: np.ndarray, gain: float, rng: np.random.Generator) -> "np.ndarray | None":
    """The model's per-note correctness plus a lookup table answering ``gain`` of the notes it got wrong
    (chosen at random), or None when it got too few wrong to gain that much."""
    wrong = np.flatnonzero(~correct)
    need = int(round(gain * len(correct)))
    if need > len(wrong):
        return None
    answered = correct.copy()
    answered[rng.choice(wrong, need, replace=False)] = True
    return answered


def part_three(models: dict, reference: str, honest: "tuple[str, ...]", control: str,
               rng: np.random.Generator) -> None:
    found = _accuracies(models, control)
    others = [k for k in found if k != reference and k not in honest]
    print(f"\n3. Real models as measured (control '{control}', {found[reference][2]} public / {found[reference][3]} "
          f"control notes): flagged / models, the {len(others)} outside the calibration set")
    print("| detector | honest | +2 | +5 | +10 | +30 |")
    print("|---|---|---|---|---|---|")
    for calibrated in ((), honest):
        ratio, spread, label = settings_for(found, reference, calibrated)
        counts = {g: [0, 0] for g in (0.0, *GAINS)}
        for key in others:
            correct = np.asarray(models[key]["public"], dtype=bool)
            for gain in counts:
                answered = with_lookup(correct, gain, rng)
                if answered is None:
                    continue  # the model is too good to gain that much
                counts[gain][1] += 1
                counts[gain][0] += bool(flags(np.array([answered.mean()]), len(answered), np.array([found[key][1]]),
                                              found[key][3], ratio, spread)[0])
        print(f"| {label} | " + " | ".join(f"{a} / {b}" for a, b in counts.values()) + " |")


def pattern_z(correct: np.ndarray, difficulty: np.ndarray) -> float:
    """A person-fit z score: does the model get hard notes right more often than its accuracy predicts?

    Each note's difficulty ``b`` is the logit of how many calibration models got it wrong; a one-parameter
    (Rasch) model ``P(right) = sigmoid(theta - b)`` is fitted to the model's overall accuracy, and the
    hard-weighted sum of its surprises (``w = b`` centred) is standardised.  A lookup fixing wrong notes
    lands mostly on hard ones, so it scores high; an honest model should score near 0."""
    from scipy.optimize import brentq
    from scipy.special import expit

    accuracy = float(correct.mean())
    theta = brentq(lambda t: float(expit(t - difficulty).mean()) - accuracy, -30, 30)
    expected = expit(theta - difficulty)
    variance = expected * (1 - expected)
    weight = difficulty - np.average(difficulty, weights=variance)
    return float((weight * (correct - expected)).sum() / np.sqrt((weight ** 2 * variance).sum()))


def part_pattern(models: dict, reference: str, honest: "tuple[str, ...]", rng: np.random.Generator) -> None:
    """Tried instead of (or beside) the control split: a test of which public notes a model gets right."""
    from scipy.special import logit

    calibration = [reference, *honest]
    right = np.array([models[k]["public"] for k in calibration], dtype=float)
    difficulty = -logit((right.sum(0) + 0.5) / (len(calibration) + 1))
    others = [k for k in models if k not in calibration]
    honest_z = np.array([pattern_z(np.asarray(models[k]["public"], bool), difficulty) for k in others])
    print(f"\n4. A note-pattern (person-fit) test on the public notes alone, difficulty from the {len(calibration)} "
          f"calibration models: z of the {len(others)} honest models outside them, and of the same models with a "
          "lookup fixing random wrong public notes (20 draws each)")
    print(f"honest z: min {honest_z.min():+.2f}, median {np.median(honest_z):+.2f}, max {honest_z.max():+.2f}; "
          f"above 2.33 (a 1% test if honest z were standard normal): {np.mean(honest_z > 2.33):.0%}")
    print("| gain | median z | share above 2.33 | share above the largest honest z |")
    print("|---|---|---|---|")
    for gain in GAINS[:3]:
        scores = []
        for key in others:
            correct = np.asarray(models[key]["public"], dtype=bool)
            for _ in range(20):
                answered = with_lookup(correct, gain, rng)
                if answered is not None:
                    scores.append(pattern_z(answered, difficulty))
        scores = np.array(scores)
        print(f"| +{gain * 100:.0f} | {np.median(scores):+.2f} | {np.mean(scores > 2.33):.0%} | "
              f"{np.mean(scores > honest_z.max()):.0%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/notegrade-lookup2"))
    parser.add_argument("--draws", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-real", action="store_true", help="only the binomial simulation")
    parser.add_argument("--cached-only", action="store_true",
                        help="use only the models already in WORK/models.json (train nothing)")
    args = parser.parse_args()
    from autograder.rubric.model import LookupDetector

    rng = np.random.default_rng(args.seed)
    settings = LookupDetector()
    print(f"lookup detector defaults: confidence {settings.confidence}, margin {settings.margin}\n")
    part_one(args.draws, rng)
    part_sizes(args.draws, rng)
    if args.skip_real:
        return 0
    from lookup_models import CONTROL_FONTS, GRID, REFERENCE, honest_models, model_key

    if args.cached_only:
        import json

        models = json.loads((args.work / "models.json").read_text())
    else:
        models = honest_models(args.work)
    reference = model_key(REFERENCE["seed"], REFERENCE["epochs"], REFERENCE["size"])
    # What an instructor would train besides the reference: two more seeds of its recipe, and 1/8, 1/4, 1/2 and
    # twice its epochs (honest models of every strength students reach).
    honest = tuple(k for k in (model_key(1, 8, 1.0), model_key(2, 8, 1.0), model_key(0, 1, 1.0), model_key(0, 2, 1.0),
                               model_key(0, 4, 1.0), model_key(0, 16, 1.0)) if k in models)
    print(f"\nreal models: {len(models)} ({', '.join(f'{k} {v}' for k, v in GRID.items())}); reference {reference}; "
          f"calibration set: {', '.join(honest)}")
    for control in CONTROL_FONTS:
        part_two(models, reference, honest, control, args.draws // 10, rng)
        part_three(models, reference, honest, control, rng)
    part_pattern(models, reference, honest, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
