"""Benchmark: how much the held-out score of the same weights moves from one submission key to the next.

Issue 17 (points 2 and 5).  The grader presents the held-out notes in a secret order with a small
per-submission perturbation (``checks/heldout_presentation.py``: a per-note gain offset and
Gaussian noise) and hands the worker the weights with their low mantissa bits replaced
(``checks/weight_bits.py``), both keyed by HMAC(secret, submission digest).  Identical weights
therefore score slightly differently per submission.  This measures that spread, in-process, with
the grader's own functions (``presentation`` / ``present`` / ``restore_order`` / ``public_mask`` /
``scramble`` / ``read_checkpoint`` / ``round_accuracy`` / ``_mixed`` / ``scaled_fraction``) and the reference
``NoteCNN`` on the CPU (channels_last, batches of the item's ``batch_size``, float16 features made
float32, as the worker's ``heldout_logits`` probe does), over ``--keys`` submission keys:

* **default**: the rubric's perturbation plus weight scrambling, fp32 ``model.pt``;
* **fp16 copy**: the same weights re-saved in float16, same keys;
* **no scrambling**: the perturbation alone, same keys (the scrambling's effect is the paired
  difference, key by key: the goal is <= 0.1 points on average);
* with ``--parts`` (the default), what drives the spread: scrambling alone, gain alone, noise alone;
* ``--candidate GAIN,NOISE`` (repeatable): another perturbation with scrambling, e.g. ``1,0.25``;
* and once, the notes as stored (no perturbation, no scrambling).

A held-out file with a private control split (``notegrade heldout --control DIR``) is presented as
the grader presents it (public notes, training sample and control notes in one secret order, the
control notes with the class's perturbation, so without the weight scrambling they score the same
under every key: "perturbation only" and the --parts variants show no control spread), and what
scores is the grader's mix under the rubric's ``[heldout] control_weight`` (0.8 in the shipped
offering rubrics): each part's accuracy rounded to 0.1 point, then weighted, then rounded again.
A rubric with ``control_weight > 0`` and a file without a control split is measured as the grader
would grade it (the NSynth notes only), with a warning.

For each: the mean, standard deviation, min and max of the accuracy on all NSynth notes, on their
part that scores (the private part when the rubric splits the set), on the control split, and of
the accuracy the item scores (the mix); the points the rubric's held-out item gives (from the
scored accuracy as the grader rounds it), and the largest swing in points between two keys -- both
as graded (zero when a model is above ``full_at`` on every key) and as it would be for a model in
the linear part between ``zero_at`` and ``full_at`` (the rounded scored accuracy's swing times
points / (full_at - zero_at)), which is the bound that matters.

``--verify N`` grades the same submission N times with the real grader (``run_autograder`` on a
temporary Gradescope root, as the attack tests do, with the presentation key fixed to one of the
keys; student code in the CPU-torch grading runtime when it can be built) and checks that its
accuracies equal the in-process ones: all NSynth notes (its confusion matrix), the scored accuracy
(``heldout_accuracy``, the mix before rounding) and the points; with a control split also the
control part (the lookup detector's ``control_accuracy``, to 4 digits) and both rounded parts the
item's line shows.

With a held-out file of more than ``--notes`` notes, ``--notes`` evenly spaced ones are kept (with
its labelled training sample and its control split, whole, both presented mixed in, as the grader
does), written to ``--work`` so the grader sees the same file.

Usage (files from the README's data, training and held-out commands)::

    python benchmarks/bench_heldout_spread.py --heldout data/heldout.safetensors --model runs/ref/model.pt \\
        [--keys 100] [--notes 4096] [--rubric rubrics/fall2024_a2.toml] [--verify 3] [--no-parts] \\
        [--candidate 1,0.25] [--json spread.json] [--work /tmp/notegrade-bench/spread] [--threads 2]
    # under the shipped rubrics' control_weight = 0.8: a held-out file with a control split
    python benchmarks/bench_heldout_spread.py --heldout data/heldout-control.safetensors \\
        --model runs/ref/model.pt --no-parts --threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testkit.heldout_spread import (Evaluator, Scoring, checkpoint_arrays, heldout_subset, paired,  # noqa: E402
                                    submission_keys, summarise, within_spread)

GOAL_STD_POINTS, GOAL_SWING_RUBRIC, GOAL_SCRAMBLE_POINTS = 0.3, 0.5, 0.1


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    weights: str  # "fp32" | "fp16"
    perturb: bool
    gain_db: float
    noise_db: float
    scrambled: bool
    keys: int


def variants(scoring: Scoring, *, keys: int, parts: bool, part_keys: int,
             candidates: "list[tuple[float, float]]", main: bool = True) -> "list[Variant]":
    g, z = scoring.gain_db, scoring.noise_db
    scrambled = f"gain +-{g:g} dB, noise {z:g} dB, scrambled bits"
    out = [] if not main else [
        Variant(f"default ({scrambled}), fp32", "fp32", scoring.perturb, g, z, True, keys),
        Variant(f"default ({scrambled}), fp16 copy", "fp16", scoring.perturb, g, z, True, keys),
        Variant(f"perturbation only (gain +-{g:g} dB, noise {z:g} dB, no scrambling), fp32", "fp32", scoring.perturb,
                g, z, False, keys)]
    if parts:
        out += [Variant("scrambled bits only (no perturbation), fp32", "fp32", False, 0.0, 0.0, True, part_keys),
                Variant(f"gain +-{g:g} dB only (no noise, no scrambling), fp32", "fp32", True, g, 0.0, False,
                        part_keys),
                Variant(f"noise {z:g} dB only (no gain, no scrambling), fp32", "fp32", True, 0.0, z, False, part_keys)]
    for gain, noise in candidates:
        out.append(Variant(f"candidate (gain +-{gain:g} dB, noise {noise:g} dB, scrambled bits), fp32", "fp32", True,
                           gain, noise, True, keys))
    return out


def measure(evaluator: Evaluator, weights: "dict[str, dict]", chosen: "list[Variant]", keys: "list[str]",
            progress: bool = True) -> "dict[str, list[dict]]":
    """Per variant, one score per key; each key's presentation is made once and shared by its variants."""
    from tqdm import tqdm

    results: "dict[str, list[dict]]" = {v.name: [] for v in chosen}
    total = sum(v.keys for v in chosen)
    with tqdm(total=total, desc="evaluations", unit="eval", file=sys.stderr, disable=not progress) as bar:
        for index, key in enumerate(keys):
            shown: "dict[tuple, tuple]" = {}
            for variant in chosen:
                if index >= variant.keys:
                    continue
                run = evaluator.run(key, gain_db=variant.gain_db, noise_db=variant.noise_db, perturb=variant.perturb)
                look = (run.perturb, run.gain_db, run.noise_db)
                if look not in shown:
                    shown[look] = evaluator.presented(run)
                plan, sent = shown[look]
                model = evaluator.model(weights[variant.weights], run, scrambled=variant.scrambled)
                results[variant.name].append({"key": key, **evaluator.score(evaluator.logits(model, plan, sent))})
                bar.update(1)
    return results


def describe(summary: dict, scoring: Scoring) -> str:
    o, p, s, c = summary["overall"], summary["nsynth"], summary["scored"], summary["control"]
    part = "private part" if summary["split"] else "all notes"
    mixed = c is not None and scoring.control_weight > 0
    text = (f"{summary['name']}, {summary['keys']} keys: accuracy {o['mean']:.2f} +- {o['std']:.3f} points "
            f"(min {o['min']:.2f}, max {o['max']:.2f}); {part} {p['mean']:.2f} +- {p['std']:.3f} "
            f"(min {p['min']:.2f}, max {p['max']:.2f})")
    if c is not None:
        text += (f"; control split {c['mean']:.2f} +- {c['std']:.3f} (min {c['min']:.2f}, max {c['max']:.2f}, "
                 f"rounded swing {summary['control_rounded_swing']:.1f}, {summary['unstable_control_notes']} "
                 "notes change verdict)")
    if mixed:
        text += (f"; SCORED ({scoring.control_weight:.0%} control) {s['mean']:.2f} +- {s['std']:.3f} "
                 f"(min {s['min']:.2f}, max {s['max']:.2f})")
    return (text + f", rounded swing {summary['rounded_swing']:.1f}; item points {summary['points_mean']:.2f}, "
            f"swing {summary['points_swing']:.2f} as graded, {summary['linear_swing']:.2f} in the linear part; "
            f"{summary['unstable_notes']} held-out notes change verdict")


def verify(evaluator: Evaluator, heldout: pathlib.Path, model_pt: pathlib.Path, rubric: pathlib.Path,
           scoring: Scoring, keys: "list[str]", work: pathlib.Path) -> "list[str]":
    """Grade with the real grader under fixed presentation keys; lines comparing its numbers with ours."""
    import pytest

    from testkit.heldout_attack_support import SECRET as GRADER_SECRET, grade, subset_rubric

    assert GRADER_SECRET == evaluator.secret
    text = subset_rubric(("4.1",), base=rubric, zero_at=scoring.zero_at, full_at=scoring.full_at)
    state = torch.load(model_pt, map_location="cpu", weights_only=True)
    arrays = checkpoint_arrays(model_pt)
    lines = []
    for index, key in enumerate(keys):
        run = evaluator.run(key, gain_db=scoring.gain_db, noise_db=scoring.noise_db, perturb=scoring.perturb)
        plan, sent = evaluator.presented(run)
        model = evaluator.model(arrays, run, scrambled=True)
        ours = evaluator.score(evaluator.logits(model, plan, sent))
        worker = evaluator.score(evaluator.logits_like_the_worker(model, plan, sent))
        patcher = pytest.MonkeyPatch()
        pathlib.Path(work).mkdir(parents=True, exist_ok=True)  # a fresh root per grading (a rerun keeps the old)
        root = pathlib.Path(tempfile.mkdtemp(prefix=f"verify-{index}-", dir=work))
        try:
            started = time.perf_counter()
            results = grade(root, rubric=text, heldout=heldout, state_dict=state, presentation_key=key,
                            monkeypatch=patcher)
            seconds = time.perf_counter() - started
        finally:
            patcher.undo()
        graded = graded_numbers(results)
        same = (graded["overall"] == ours["overall"] and graded["scored"] == ours["scored"]
                and worker["overall"] == ours["overall"] and graded["points"] is not None
                and abs(graded["points"] - ours["points"]) < 0.006)
        control = ""
        if evaluator.c:  # the control part: to 4 digits (the lookup detector's), and both parts as the line shows them
            same = same and worker["control"] == ours["control"] and graded["control"] is not None \
                and abs(graded["control"] - ours["control"]) < 5e-5 and graded["shown"] == _shown(ours, scoring)
            control = (f"; control {_pct(graded['control'])} (line {graded['shown']}) vs in-process "
                       f"{_pct(ours['control'])} (line {_shown(ours, scoring)})")
        lines.append(f"verify key {index}: grader (worker torch {graded['torch']}) {_pct(graded['overall'])} overall, "
                     f"{_pct(graded['scored'])} scored, {graded['points']} points ({seconds:.1f} s); "
                     f"in-process {_pct(ours['overall'])} / {_pct(ours['scored'])}, "
                     f"{ours['points']:.2f} points; all presented rows {_pct(worker['overall'])}{control}: "
                     f"{'same' if same else 'DIFFERENT'}")
    return lines


def graded_numbers(results: dict, item: str = "4.1") -> dict:
    """What a results.json says of the held-out item: accuracy on all NSynth notes (its confusion matrix), the
    scored accuracy before rounding, the points, the control accuracy (the lookup detector's, 4 digits; None
    without one) and the rounded (control, NSynth) parts the item's line shows (None when it shows no mix)."""
    import re

    extra = results.get("extra_data") or {}
    confusion = np.array(extra.get("confusion") or [[0]])
    test = next((t for t in results.get("tests", []) if t.get("number") == item), {})
    lookup = ((extra.get("integrity") or {}).get("lookup") or {})
    found = re.search(r"control notes \((\d+\.\d)%.*? public test notes.*?\((\d+\.\d)%", test.get("output", ""))
    return {"overall": float(np.trace(confusion) / max(confusion.sum(), 1)) if extra.get("confusion") else None,
            "scored": extra.get("heldout_accuracy"), "points": test.get("score"),
            "control": lookup.get("control_accuracy"), "shown": found.groups() if found else None,
            "torch": (extra.get("runtime") or {}).get("torch", "?")}


def _shown(score: dict, scoring: Scoring) -> "tuple[str, str] | None":
    """The rounded (control, NSynth) parts as the item's line prints them (the mix's line only)."""
    if not (0 < scoring.control_weight < 1) or score["control"] != score["control"]:
        return None
    return f"{score['control_rounded'] * 100:.1f}", f"{score['nsynth_rounded'] * 100:.1f}"


def _pct(value: "float | None") -> str:
    return "n/a" if value is None else f"{value * 100:.3f}%"


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example:\n  python benchmarks/bench_heldout_spread.py --heldout "
                                            "data/heldout.safetensors --model runs/ref/model.pt --keys 100")
    parser.add_argument("--heldout", type=pathlib.Path, default=REPO / "data" / "heldout.safetensors",
                        help="held-out file (notegrade heldout)")
    parser.add_argument("--model", type=pathlib.Path, default=REPO / "runs" / "ref" / "model.pt",
                        help="the trained reference's model.pt (notegrade train)")
    parser.add_argument("--rubric", type=pathlib.Path, default=REPO / "rubrics" / "fall2024_a2.toml")
    parser.add_argument("--keys", type=int, default=100, help="submission keys per variant")
    parser.add_argument("--key-seed", type=int, default=0, help="another set of submission keys")
    parser.add_argument("--part-keys", type=int, default=None, help="keys for the --parts variants (default: --keys)")
    parser.add_argument("--notes", type=int, default=4096, help="held-out notes used (evenly spaced; 0: all)")
    parser.add_argument("--parts", action=argparse.BooleanOptionalAction, default=True,
                        help="also scrambling alone, gain alone and noise alone (what drives the spread)")
    parser.add_argument("--candidate", action="append", default=[], metavar="GAIN,NOISE",
                        help="another perturbation (dB), with scrambling, over --keys keys (repeatable)")
    parser.add_argument("--candidates-only", action="store_true",
                        help="only the --candidate variants (no default, fp16, no-scrambling or --parts runs)")
    parser.add_argument("--verify", type=int, default=2, help="grade this many keys with the real grader (0: none)")
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/notegrade-bench/spread"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the per-key numbers here")
    args = parser.parse_args(argv)
    for path, how in ((args.heldout, "notegrade heldout --nsynth data/rendered/nsynth-test --out "
                                     "data/heldout.safetensors"
                                     " --train-sample data/rendered/nsynth-train --reference-model runs/ref/model.pt"),
                      (args.model, "notegrade train --train data/train.safetensors --valid data/valid.safetensors "
                                   "--out runs/ref")):
        if not path.is_file():
            raise SystemExit(f"{path} not found: make it with `{how}` (see the README's CLI section)")
    if args.threads:
        torch.set_num_threads(args.threads)
    candidates = [tuple(float(x) for x in c.split(",")) for c in args.candidate]
    scoring = Scoring.from_rubric(args.rubric)
    started = time.perf_counter()
    heldout = heldout_subset(args.heldout, args.notes, args.work)
    evaluator = Evaluator(heldout, scoring)
    split = bool(evaluator.public.any())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}; {evaluator.n:,} held-out notes ({int((~evaluator.public).sum()):,} private, "
          f"scored) + {evaluator.m:,} training-sample notes + {evaluator.c:,} control notes presented; "
          f"{args.rubric.name}: {scoring.points:g} points from {scoring.zero_at:.0%} to {scoring.full_at:.0%} "
          f"({scoring.points_per_accuracy / 100:.3f} points per accuracy point), public fraction "
          f"{scoring.public_fraction:g}, control_weight {scoring.control_weight:g}", flush=True)
    if scoring.control_weight > 0 and not evaluator.c:
        print(f"WARNING: {args.rubric.name} takes {scoring.control_weight:.0%} of the item from a control split and "
              f"{args.heldout.name} has none: measured as the grader grades such a file (the NSynth notes only; "
              "`notegrade build` refuses the pair). Make one with `notegrade heldout ... --control DIR`", flush=True)
    weights = {"fp32": checkpoint_arrays(args.model), "fp16": checkpoint_arrays(args.model, torch.float16)}
    base_run = evaluator.run("as stored", gain_db=0.0, noise_db=0.0, perturb=False)
    plan, sent = evaluator.presented(base_run)
    base = evaluator.score(evaluator.logits(evaluator.model(weights["fp32"], base_run, scrambled=False), plan, sent))
    base16 = evaluator.score(evaluator.logits(evaluator.model(weights["fp16"], base_run, scrambled=False), plan, sent))
    print(f"as stored (no perturbation, no scrambling): accuracy {base['overall'] * 100:.2f}%, NSynth part that "
          f"scores {base['nsynth'] * 100:.2f}%, control {base['control'] * 100:.2f}%, "
          f"scored {base['scored'] * 100:.2f}% "
          f"(shown {base['scored_rounded'] * 100:.1f}%, {base['points']:.2f} points); fp16 copy "
          f"{base16['overall'] * 100:.2f}% / {base16['nsynth'] * 100:.2f}% / {base16['control'] * 100:.2f}% / "
          f"{base16['scored'] * 100:.2f}%", flush=True)
    chosen = variants(scoring, keys=args.keys, parts=args.parts, part_keys=args.part_keys or args.keys,
                      candidates=candidates, main=not args.candidates_only)
    keys = submission_keys(max(v.keys for v in chosen), seed=args.key_seed)
    results = measure(evaluator, weights, chosen, keys)
    measured = time.perf_counter() - started
    summaries = [summarise(v.name, results[v.name], scoring, split=split) for v in chosen]
    for summary in summaries:
        print(describe(summary, scoring), flush=True)
    if args.candidates_only:
        print(f"held-out spread: {evaluator.forwards} forward passes over {evaluator.n:,} notes in {measured:.0f} s")
        _write_json(args.json, evaluator, args, summaries, results, {})
        return 0
    default, fp16, unscrambled = (results[v.name] for v in chosen[:3])
    effect = paired(default, unscrambled, "overall")
    effect_scored = paired(default, unscrambled, "scored")
    print(f"scrambling effect (default - perturbation only, same keys, {len(default)} keys): accuracy "
          f"{effect['mean']:+.3f} points on average (std {effect['std']:.3f}, min {effect['min']:+.3f}, "
          f"max {effect['max']:+.3f}, mean |change| {effect['mean_abs']:.3f}); "
          f"scored part {effect_scored['mean']:+.3f} "
          f"(mean |change| {effect_scored['mean_abs']:.3f}); goal <= {GOAL_SCRAMBLE_POINTS} on average: "
          f"{'met' if abs(effect['mean']) <= GOAL_SCRAMBLE_POINTS else 'NOT met'}")
    half = paired(fp16, default, "overall")
    d32, d16 = summaries[0], summaries[1]
    lo, hi = d32["overall"]["min"], d32["overall"]["max"]
    within = all(within_spread(d32, d16, part) for part in ("overall", "nsynth", "scored")
                 + (("control",) if evaluator.c else ()))
    half_scored = paired(fp16, default, "scored")
    print(f"fp16 copy vs fp32 (same keys): mean {d16['overall']['mean']:.2f}% vs {d32['overall']['mean']:.2f}% "
          f"({half['mean']:+.3f} points, key by key std {half['std']:.3f}); fp16 range {d16['overall']['min']:.2f}-"
          f"{d16['overall']['max']:.2f} vs fp32 {lo:.2f}-{hi:.2f}; scored {d16['scored']['mean']:.2f}% vs "
          f"{d32['scored']['mean']:.2f}% ({half_scored['mean']:+.3f}, key by key std {half_scored['std']:.3f}), range "
          f"{d16['scored']['min']:.2f}-{d16['scored']['max']:.2f} vs {d32['scored']['min']:.2f}-"
          f"{d32['scored']['max']:.2f}: {'within' if within else 'NOT within'} the spread")
    ok_std = all(d32[part]["std"] <= GOAL_STD_POINTS for part in ("overall", "nsynth", "scored"))
    ok_swing = max(d32["linear_swing"], d16["linear_swing"]) <= GOAL_SWING_RUBRIC
    print(f"goals (default): std <= {GOAL_STD_POINTS} points: {'met' if ok_std else 'NOT met'} "
          f"({d32['overall']['std']:.3f} all notes, {d32['nsynth']['std']:.3f} NSynth part that scores, "
          + (f"{d32['control']['std']:.3f} control split, " if evaluator.c else "")
          + f"{d32['scored']['std']:.3f} scored); largest swing under "
          f"{args.rubric.name} <= {GOAL_SWING_RUBRIC} points: {'met' if ok_swing else 'NOT met'} "
          f"({max(d32['linear_swing'], d16['linear_swing']):.2f} in the linear part, "
          f"{max(d32['points_swing'], d16['points_swing']):.2f} as graded)")
    print(f"held-out spread: {evaluator.forwards} forward passes over {evaluator.n:,} notes in {measured:.0f} s "
          f"({evaluator.forward_seconds / max(evaluator.forwards, 1):.2f} s each)", flush=True)
    if args.verify:
        for line in verify(evaluator, heldout, args.model, args.rubric, scoring, keys[: args.verify], args.work):
            print(line, flush=True)
    _write_json(args.json, evaluator, args, summaries, results,
                {"scramble_effect": effect, "scramble_effect_scored": effect_scored, "fp16_minus_fp32": half,
                 "fp16_minus_fp32_scored": half_scored})
    return 0


def _write_json(path: "pathlib.Path | None", evaluator: Evaluator, args: argparse.Namespace, summaries: list,
                results: dict, extra: dict) -> None:
    if not path:
        return
    payload = {"heldout": str(evaluator.data.path), "model": str(args.model), "rubric": str(args.rubric),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "summaries": summaries, **extra,
               "control_notes": evaluator.c, "control_weight": evaluator.scoring.control_weight,
               "per_key": {name: [{k: v for k, v in s.items() if k not in ("correct", "control_correct")}
                                  for s in scores]
                           for name, scores in results.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=float))


if __name__ == "__main__":
    sys.exit(main())
