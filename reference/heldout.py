"""Build the held-out file the autograder ships (``notegrade heldout``).

The held-out file is a feature file of kind ``heldout`` (:mod:`autograder.featurefile`): the
front-end's float16 features, the family labels and the NSynth note ids of one split (usually
the test split, whose instruments the students never train on).  It holds no audio.  After
writing it is read back and validated: not empty, labels in range, the toolkit's front-end
hash, and the per-family counts are reported (a family with no notes is named, since the
grader's per-family accuracy will be missing for it).

Example
-------
>>> summary = main(nsynth="data/rendered/nsynth-test", out="heldout.safetensors")  # doctest: +SKIP
>>> summary["notes"], summary["family_counts"]["vocal"]                             # doctest: +SKIP
(5760, 180)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES, read_feature_file
from reference.features import frontend_hash
from reference.make_features import build_feature_file

EXAMPLES = """examples:
  notegrade heldout --nsynth data/rendered/nsynth-test --out heldout.safetensors
  # the official NSynth test split (4,096 notes, no synth_lead)
  notegrade heldout --nsynth nsynth-test --out heldout-nsynth.safetensors
"""


def validate_heldout(path: str | Path) -> dict:
    """Read a held-out file back and check it; returns ``{"notes": N, "family_counts": {...}, "missing": [...]}``."""
    heldout = read_feature_file(path, expected_frontend_hash=frontend_hash(), mmap=False)
    if heldout.kind != "heldout":
        raise NotegradeError(f"{path}: is a {heldout.kind!r} file, not a held-out file; build one with `notegrade heldout`")
    if len(heldout) == 0:
        raise NotegradeError(f"{path}: the held-out file has no notes")
    if heldout.labels.min() < 0 or heldout.labels.max() >= len(FAMILIES):
        raise NotegradeError(f"{path}: labels outside 0..{len(FAMILIES) - 1}")
    if len(set(heldout.notes.tolist())) != len(heldout):
        raise NotegradeError(f"{path}: duplicate note ids; the split's examples.json repeats notes")
    counts = heldout.family_counts()
    return {"notes": len(heldout), "family_counts": counts, "missing": [f for f, n in counts.items() if n == 0]}


def main(*, nsynth: str | Path, out: str | Path, workers: int | None = None, batch_size: int = 64,
         device: str | None = None, progress: bool = True) -> dict:
    """Write and validate the held-out file ``out`` from the NSynth split ``nsynth``."""
    built = build_feature_file(nsynth=nsynth, out=out, kind="heldout", workers=workers, batch_size=batch_size,
                               device=device, progress=progress)
    return {**built, **validate_heldout(out)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nsynth", required=True, type=Path, metavar="SPLIT_DIR",
                        help="the NSynth split to hold out (usually nsynth-test)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the held-out file to write")
    parser.add_argument("--workers", type=int, default=None, help="worker threads (default: one per core)")
    parser.add_argument("--batch-size", type=int, default=64, help="notes per front-end batch")
    parser.add_argument("--device", default=None, help="front-end device (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    summary = main(nsynth=args.nsynth, out=args.out, workers=args.workers, batch_size=args.batch_size, device=args.device)
    width = max(len(f) for f in FAMILIES)
    print(f"wrote {summary['out']}: {summary['notes']} held-out notes (features, labels, note ids; no audio)")
    for family, n in summary["family_counts"].items():
        print(f"  {family:<{width}}  {n:>6}")
    if summary["missing"]:
        print(f"note: no notes for {', '.join(summary['missing'])}; per-family accuracy will be missing for them")
    return 0
