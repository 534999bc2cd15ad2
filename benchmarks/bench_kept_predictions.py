"""Benchmark (issue 20.1): how many of the held-out predictions grading keeps differ from a clean pass.

Grading keeps the predictions of its scored, perturbed presentation (``checks/integrity_probe.py``).
With the grader's own functions (``testkit/heldout_spread.py``), this compares, for the trained
reference on a held-out file, the predictions under ``--keys`` submission keys against an unperturbed,
unscrambled pass, and two keys against each other (two students submitting one model.pt).

Run: ``.venv/bin/python benchmarks/bench_kept_predictions.py --heldout H --model M [--keys 10]``
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import torch

    from testkit.heldout_spread import Evaluator, Scoring, checkpoint_arrays, submission_keys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", type=pathlib.Path, required=True, help="a held-out file (notegrade heldout)")
    parser.add_argument("--model", type=pathlib.Path, required=True, help="a trained model.pt")
    parser.add_argument("--rubric", type=pathlib.Path, default=REPO / "rubrics" / "fall2024_a2.toml")
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    evaluator = Evaluator(args.heldout, Scoring.from_rubric(args.rubric))
    arrays = checkpoint_arrays(args.model)
    keys = submission_keys(args.keys, seed=7)
    clean_run = evaluator.run(keys[0], perturb=False)
    plan, sent = evaluator.presented(clean_run)
    clean = evaluator.logits(evaluator.model(arrays, clean_run, scrambled=False), plan, sent).argmax(1)
    against_clean, between_keys, previous = [], [], None
    for key in keys:
        run = evaluator.run(key)
        plan, sent = evaluator.presented(run)
        kept = evaluator.logits(evaluator.model(arrays, run), plan, sent).argmax(1)
        against_clean.append(int((kept != clean).sum()))
        if previous is not None:
            between_keys.append(int((kept != previous).sum()))
        previous = kept
    n = evaluator.n
    print(f"{n:,} held-out notes; clean accuracy {np.mean(clean == evaluator.labels):.4f}")
    print(f"kept (graded) vs clean: notes that differ per key {against_clean} "
          f"(mean {np.mean(against_clean):.1f} = {np.mean(against_clean) / n:.2%})")
    if between_keys:
        print(f"two keys of the same weights: {between_keys} (mean {np.mean(between_keys):.1f} = "
              f"{np.mean(between_keys) / n:.2%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
