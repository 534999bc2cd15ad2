"""Issue 17.5: the same weights score nearly the same under every submission key.

The grader perturbs the held-out notes and replaces the weights' low mantissa bits per submission
key, so identical weights score slightly differently from one submission to the next.
``benchmarks/bench_heldout_spread.py`` measures that spread for the trained reference on 4,096
rendered test notes over 100 keys (docs/threat-model.md: "Held-out integrity"); this is its fast guard: the same
code (``testkit.heldout_spread``: the grader's presentation, scrambling, checkpoint reading and
scoring, and the summary the benchmark prints) on a synthetic held-out file of 1,024 notes (and a
128-note training sample presented mixed in) scored by a nearest-centroid linear classifier, so a
forward pass costs nothing and the whole module runs in seconds.

The classifier is built so the perturbation matters (per-bin note-to-note variation 0.25; the
rubric's 0.25 dB of noise is 0.006 of a feature unit, its 0.5 dB of gain 0.0125), many more notes
sit near a boundary than for the trained reference, and one note is 0.1 point of 1,024 (0.14 of the
716-note private part that scores).  Measured here (torch 2.11 CPU, fixed keys, so the numbers are
deterministic up to BLAS rounding), 20 keys, all notes / scored part: at the defaults std 0.37 /
0.41 points, swing 1.37 / 1.40, mean 0.3 above the notes as stored (70.5%), 62 notes change
verdict; fp16 copy 0.33 / 0.38; without the scrambling 0.37 / 0.47, the scrambling's mean effect
+0.04.  Four times the defaults (2 dB / 1 dB): 0.54 / 0.79, swing 2.34 / 3.07; the rubric's largest
(6 dB / 3 dB): 0.84 / 1.06, swing 2.73 / 4.19, mean 4.6 lower.  The bounds sit between, so a BLAS
difference that moves a note or two can't fail them and a perturbation several times the default
does (``test_a_larger_perturbation_fails_the_bounds``).  The old 1 dB / 0.5 dB is not told apart
here (0.39 / 0.46): on this set that takes more keys than a fast test affords; the benchmark tells
it apart on the trained reference.

Under the shipped rubrics (``control_weight = 0.8``) most of the score comes from the file's private
control split: the ``control_split`` tests pack 512 control notes into the synthetic file and check
that the in-process score presents them as the grader does and mixes the parts as the grader does
(the grader's own ``run_heldout`` on a stand-in worker, key by key, to the last digit).
"""
from __future__ import annotations

import json
import pathlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from autograder.checks.heldout import round_accuracy
from autograder.featurefile import read_feature_file, write_feature_file, write_heldout_with_sample
from testkit.heldout_spread import (Evaluator, Scoring, checkpoint_arrays, paired, submission_keys, summarise,
                                    within_spread)

REPO = pathlib.Path(__file__).resolve().parents[3]
KEYS = 20
NOTES, SAMPLE, FAMILIES, BINS = 1024, 128, 11, 64 * 64
CONTROL = 512  # the control split of the control_split tests
MAX_STD_POINTS = 0.6  # measured 0.37 / 0.41 at the defaults; 0.54 / 0.79 at 2 dB / 1 dB; 0.84 / 1.06 at 6 / 3
MAX_SWING_POINTS = 2.2  # max - min over the keys; measured 1.37 / 1.40; 2.34 / 3.07 at 2 dB / 1 dB
MAX_MEAN_SHIFT_POINTS = 0.6  # |mean over keys - as stored|; measured 0.3; 4.6 at 6 dB / 3 dB
MAX_SCRAMBLE_POINTS = 0.15  # |mean effect of the weight scrambling| key by key (goal 0.1 on 4,096 notes); 0.04


def linear_classifier() -> torch.nn.Module:
    """The network the synthetic file is scored with: one linear layer over the 64x64 features."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(BINS, FAMILIES))


def _synthetic(tmp: pathlib.Path, control: int = 0) -> "tuple[pathlib.Path, pathlib.Path]":
    """A held-out file (with a training sample, and ``control`` control notes) of noisy class prototypes,
    and the nearest-centroid classifier's ``model.pt`` (about 70% right: many notes near a boundary, as in
    a real model)."""
    from autograder.featurefile import CONTROL_FORMAT
    from reference.features import FRONTEND_PARAMS, frontend_hash

    rng = np.random.default_rng(0)
    prototypes = 0.0085 * rng.normal(size=(FAMILIES, BINS)).astype(np.float32)
    parts = []
    for name, count in (("heldout", NOTES), ("sample", SAMPLE), ("control", control)):
        if not count:
            continue
        labels = rng.integers(0, FAMILIES, count)
        features = prototypes[labels] - 0.5 + 0.25 * rng.normal(size=(count, BINS)).astype(np.float32)
        parts.append(write_feature_file(tmp / f"{name}.safetensors", features=features.reshape(count, 1, 64, 64),
                                        labels=labels, notes=np.arange(count), note_strs=[f"{name}_{i}" for i in
                                                                                          range(count)],
                                        frontend_params=FRONTEND_PARAMS, frontend_hash=frontend_hash(),
                                        split={"heldout": "test", "sample": "train"}.get(name, name),
                                        kind="heldout" if name == "heldout" else "features"))
    heldout, sample, *rest = (read_feature_file(p, mmap=False) for p in parts)
    extra = {"control": json.dumps({"format": CONTROL_FORMAT, "count": control, "split": "control"})} if control else {}
    path = write_heldout_with_sample(tmp / "heldout-with-sample.safetensors", heldout=heldout, sample=sample,
                                     control=rest[0] if rest else None, extra_metadata=extra)
    # Nearest centroid (centroids prototype - 0.5): argmax of w.x + b, w = prototype, b = -|w|^2/2 + sum(w)/2.
    weight = torch.from_numpy(prototypes)
    bias = -0.5 * (weight**2).sum(1) + 0.5 * weight.sum(1)
    torch.save({"1.weight": weight, "1.bias": bias}, tmp / "model.pt")
    return path, tmp / "model.pt"


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is faster on a shared 2-core machine (and what the benchmark ran)
    try:
        heldout, model_pt = _synthetic(tmp_path_factory.mktemp("spread"))
        scoring = Scoring.from_rubric(REPO / "rubrics" / "fall2024_a2.toml")
        evaluator = Evaluator(heldout, scoring, architecture=linear_classifier)
        weights = {"fp32": checkpoint_arrays(model_pt), "fp16": checkpoint_arrays(model_pt, torch.float16)}
        keys = submission_keys(KEYS)
        variants = {"fp32": (weights["fp32"], True), "fp16": (weights["fp16"], True),
                    "unscrambled": (weights["fp32"], False)}
        per_key = [evaluator.evaluate_variants(variants, key) for key in keys]
        scores = {name: [one[name] for one in per_key] for name in variants}
        stored = evaluator.evaluate(weights["fp32"], "as stored", scrambled=False, perturb=False)
        yield {"evaluator": evaluator, "weights": weights, "keys": keys, "scoring": scoring, "scores": scores,
               "stored": stored, "summary": {name: summarise(name, s, scoring, split=bool(evaluator.public.any()))
                                             for name, s in scores.items()}}
    finally:
        torch.set_num_threads(threads)


def _within_bounds(summary: dict, stored: float) -> "list[str]":
    """What breaks the bounds (empty: none)."""
    o, s = summary["overall"], summary["scored"]
    problems = [f"{part} std {x['std']:.3f} > {MAX_STD_POINTS}" for part, x in (("all notes", o), ("scored", s))
                if x["std"] > MAX_STD_POINTS]
    problems += [f"{part} swing {x['max'] - x['min']:.2f} > {MAX_SWING_POINTS}" for part, x in
                 (("all notes", o), ("scored", s)) if x["max"] - x["min"] > MAX_SWING_POINTS]
    if abs(o["mean"] - stored * 100) > MAX_MEAN_SHIFT_POINTS:
        problems.append(f"mean {o['mean']:.2f} vs {stored * 100:.2f} as stored")
    return problems


def test_the_rubric_perturbation_is_the_one_measured(spread):
    """The bounds here and the README's numbers were measured with these; new defaults must be measured again."""
    scoring = spread["scoring"]
    assert (scoring.perturb, scoring.gain_db, scoring.noise_db, scoring.public_fraction) == (True, 0.5, 0.25, 0.3)


def test_the_synthetic_set_has_notes_on_the_boundary(spread):
    """A model no note of which the perturbation can move would pass any bound."""
    stored, summary = spread["stored"], spread["summary"]["fp32"]
    assert 0.6 <= stored["overall"] <= 0.8 and spread["evaluator"].m == SAMPLE
    assert summary["unstable_notes"] >= 10 and summary["overall"]["std"] > 0.1, summary


def test_the_same_weights_score_within_a_small_spread_over_20_keys(spread):
    for name in ("fp32", "fp16"):
        summary = spread["summary"][name]
        assert not _within_bounds(summary, spread["stored"]["overall"]), (name, summary)


def test_an_fp16_copy_scores_within_the_fp32_spread(spread):
    fp32, fp16 = spread["summary"]["fp32"], spread["summary"]["fp16"]
    assert within_spread(fp32, fp16) and within_spread(fp32, fp16, "scored"), (fp32, fp16)
    # ... and key for key it differs by a note or two, not by the spread (the same presentation).
    assert abs(paired(spread["scores"]["fp16"], spread["scores"]["fp32"], "overall")["mean"]) <= MAX_STD_POINTS
    shifted = {**fp16, "overall": {**fp16["overall"], "mean": fp32["overall"]["max"] + 0.1}}
    assert not within_spread(fp32, shifted)  # the rule can say no


def test_the_weight_scrambling_moves_the_score_by_less_than_0_1_points(spread):
    effect = paired(spread["scores"]["fp32"], spread["scores"]["unscrambled"], "overall")
    assert abs(effect["mean"]) <= MAX_SCRAMBLE_POINTS, effect


@pytest.mark.parametrize("gain_db, noise_db, keys", [(6.0, 3.0, 10), (2.0, 1.0, KEYS)])
def test_a_larger_perturbation_fails_the_bounds(spread, gain_db, noise_db, keys):
    """The bounds can fail: the rubric's largest perturbation (on 10 keys it breaks all five: std 0.87 /
    0.96, swing 2.73 / 2.93, mean 4.5 lower), and four times the defaults (20 keys: the scored part)."""
    evaluator, fp32 = spread["evaluator"], spread["weights"]["fp32"]
    scores = [evaluator.evaluate(fp32, key, gain_db=gain_db, noise_db=noise_db) for key in spread["keys"][:keys]]
    summary = summarise("larger", scores, spread["scoring"], split=True)
    assert _within_bounds(summary, spread["stored"]["overall"]), summary


def test_summary_std_and_swing_in_rubric_points():
    """The numbers the benchmark reports, on scores worked out by hand (fall2024_a2: 30 points from 25% to 60%)."""
    scoring = Scoring(points=30, zero_at=0.25, full_at=0.60)

    def score(scored: float, correct: "list[bool]", overall: "float | None" = None) -> dict:
        return {"overall": scored if overall is None else overall, "scored": scored,
                "scored_rounded": round_accuracy(scored), "points": scoring.item_points(scored),
                "correct": np.array(correct)}

    # In the linear part: 50.04%, 50.16%, 49.95% -> rounded 50.0, 50.2, 50.0 (half up): swing 0.2 points
    # of accuracy = 0.2 * 30 / 35 = 0.171 rubric points; std of 50.04, 50.16, 49.95 = 0.1054 points.
    linear = summarise("linear", [score(0.5004, [True, True, False]), score(0.5016, [True, False, False]),
                                  score(0.4995, [True, True, False])], scoring, split=True)
    assert linear["scored"]["std"] == pytest.approx(0.10536, abs=1e-4)
    assert linear["scored"]["mean"] == pytest.approx(50.05) and linear["scored"]["max"] == pytest.approx(50.16)
    assert linear["rounded_swing"] == pytest.approx(0.2) and linear["linear_swing"] == pytest.approx(0.2 * 30 / 35)
    assert linear["points_swing"] == pytest.approx(0.2 * 30 / 35)  # as graded = linear part here
    assert linear["unstable_notes"] == 1 and linear["keys"] == 3
    # Above full_at every key gets 30 points: no swing as graded, the same swing in the linear part.
    high = summarise("high", [score(0.7704, [True]), score(0.7749, [True]), score(0.7651, [True])], scoring, split=True)
    assert high["points_swing"] == 0.0 and high["points_mean"] == 30.0
    assert high["rounded_swing"] == pytest.approx(1.0) and high["linear_swing"] == pytest.approx(30 / 35)
    assert summarise("one", [score(0.5, [True])], scoring, split=False)["overall"]["std"] == 0.0


def test_the_in_process_logits_are_the_workers(spread):
    """The benchmark runs only the held-out rows; the worker runs every presented row (the training
    sample's mixed in) in the grader's batches.  A row's logits don't depend on its batch, so both
    give the same verdicts (checked with the reference NoteCNN, whose batch norm and convolutions
    could make them differ)."""
    from reference.model import NoteCNN

    torch.manual_seed(0)
    arrays = {k: v.numpy() for k, v in NoteCNN().state_dict().items()}
    evaluator = Evaluator(spread["evaluator"].data.path, spread["scoring"])  # the reference NoteCNN by default
    run = evaluator.run(spread["keys"][0])
    plan, sent = evaluator.presented(run)
    network = evaluator.model(arrays, run)
    assert isinstance(network, NoteCNN) and (evaluator.n, evaluator.m) == (NOTES, SAMPLE)
    ours, worker = evaluator.logits(network, plan, sent), evaluator.logits_like_the_worker(network, plan, sent)
    assert sum(plan.batches) == NOTES + SAMPLE
    assert np.allclose(ours, worker, atol=1e-4)
    assert np.array_equal(ours.argmax(1), worker.argmax(1))


@pytest.fixture(scope="module")
def control_split(tmp_path_factory):
    """The synthetic file with a 512-note control split, scored under the shipped rubric (control_weight 0.8)."""
    heldout, model_pt = _synthetic(tmp_path_factory.mktemp("control"), control=CONTROL)
    scoring = Scoring.from_rubric(REPO / "rubrics" / "fall2024_a2.toml")
    assert scoring.control_weight == 0.8  # what the shipped rubrics score, and what the numbers below assume
    return Evaluator(heldout, scoring, architecture=linear_classifier), checkpoint_arrays(model_pt)


class _Worker:
    """A stand-in worker for the grader's ``run_heldout``: the evaluator's network on whatever it is sent."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network, self.files, self.submission = network, (), "/nonexistent"

    def call(self, probe, args, *, timeout_s, inputs=None):
        assert probe == "heldout_logits" and sum(args["batches"]) == NOTES + SAMPLE + CONTROL
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(inputs["features"].astype(np.float32))).numpy()
        return SimpleNamespace(ok=True, status="ok", arrays={"logits": logits}, array_errors={},
                               value={"device": "cpu", "seconds": 0.0, "dtype": "float32"})


def test_control_split_scores_as_the_grader_scores_it(control_split, monkeypatch):
    """Key by key, the grader's own run_heldout (presentation, restored order, the control part, the mix
    rounded part by part, the points) gives what the in-process score gives, which the benchmark reports."""
    from autograder.checks import checkpoint
    from autograder.checks.heldout import run_heldout

    evaluator, arrays = control_split
    assert (evaluator.n, evaluator.m, evaluator.c) == (NOTES, SAMPLE, CONTROL)
    monkeypatch.setattr(checkpoint, "verify", lambda *a, **k: (None, checkpoint.Verified({}, {}, [], "")))
    params = {"zero_at": evaluator.scoring.zero_at, "full_at": evaluator.scoring.full_at, "batch_size": 64}
    for key in submission_keys(3, seed=7):
        run = evaluator.run(key)
        plan, sent = evaluator.presented(run)
        network = evaluator.model(arrays, run)
        ours = evaluator.score(evaluator.logits(network, plan, sent))
        graded = run_heldout(_Worker(network), params, timeout_s=60, heldout_path=evaluator.data.path, heldout_run=run)
        data = graded.data
        assert data["overall_accuracy"] == ours["overall"] and data["private_accuracy"] == ours["nsynth"]
        assert data["control_accuracy"] == ours["control"] and data["control_count"] == CONTROL
        assert data["accuracy"] == ours["scored"] and data["accuracy_rounded"] == ours["scored_rounded"]
        assert graded.fraction * evaluator.scoring.points == pytest.approx(ours["points"], abs=1e-9)
        # ... which is the mix of the parts rounded first (not the mix rounded once), 80% control.
        assert ours["scored_rounded"] == round_accuracy(0.2 * round_accuracy(ours["nsynth"])
                                                        + 0.8 * round_accuracy(ours["control"]))
        assert ours["scored"] == pytest.approx(0.2 * ours["nsynth"] + 0.8 * ours["control"])


def test_control_split_logits_are_the_workers_and_its_spread_is_summarised(control_split):
    """The control rows the benchmark runs are the ones the worker runs; the summary reports the control
    part and the mix.  The control notes take the class's perturbation, so without the weight scrambling
    the same weights get the same control notes right under every key (the NSynth notes still move)."""
    evaluator, arrays = control_split
    keys = submission_keys(8)
    scores, unscrambled = [], []
    for key in keys:
        run = evaluator.run(key)
        plan, sent = evaluator.presented(run)
        network = evaluator.model(arrays, run)
        ours = evaluator.logits(network, plan, sent)
        assert ours.shape == (NOTES + CONTROL, FAMILIES)
        assert np.array_equal(ours.argmax(1), evaluator.logits_like_the_worker(network, plan, sent).argmax(1))
        scores.append(evaluator.score(ours))
        unscrambled.append(evaluator.score(evaluator.logits(evaluator.model(arrays, run, scrambled=False), plan, sent)))
    fixed = summarise("unscrambled", unscrambled, evaluator.scoring, split=True)
    assert fixed["unstable_control_notes"] == 0 and fixed["control"]["std"] == 0 and fixed["unstable_notes"] >= 10
    summary = summarise("control", scores, evaluator.scoring, split=True)
    assert summary["control"] is not None and summary["keys"] == len(keys)
    assert 30 <= summary["control"]["mean"] <= 90 and summary["unstable_notes"] >= 10, summary
    # The scored accuracy is 0.2 x NSynth part + 0.8 x control: its std lies in [|0.8 a - 0.2 b|, 0.8 a + 0.2 b].
    a, b, mixed = summary["control"]["std"], summary["nsynth"]["std"], summary["scored"]["std"]
    assert abs(0.8 * a - 0.2 * b) - 1e-9 <= mixed <= 0.8 * a + 0.2 * b + 1e-9
    assert summary["rounded_swing"] == pytest.approx(100 * (max(s["scored_rounded"] for s in scores)
                                                            - min(s["scored_rounded"] for s in scores)))
