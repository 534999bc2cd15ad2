"""Build the held-out file the autograder ships (``notegrade heldout``).

The held-out file is a feature file of kind ``heldout`` (:mod:`autograder.featurefile`): the
front-end's float16 features, the family labels and the NSynth note ids of one split (usually
the test split, whose instruments the students never train on).  It holds no audio.

Two optional parts serve the grader's train-on-test detector:

- ``--train-sample nsynth-train`` packs a labelled random sample of the training split
  (``--sample-size``, default 1,024 notes).  The grader evaluates it mixed in with the held-out
  notes, so an honest model shows its usual gap between training and unseen instruments, and a
  model that learnt the public test labels does not.
- ``--reference-model model.pt`` records the reference's accuracy and loss on every part, so the
  detectors can compare a submission's gaps with the reference's (and thresholds can be set
  relative to the reference).

``--control DIR`` packs a private control split (notes no student can have: see
:mod:`reference.heldout_control`), which the grader presents mixed with the public notes and the
rubric's ``[heldout] control_weight`` scores; the lookup detector compares the two parts.

After writing, the file is read back and validated by the check ``notegrade build`` makes too
(:func:`autograder.featurefile.validate_heldout`: the toolkit's front-end hash, not empty, no note
id twice, no note shared between the sample and the held-out notes, a control split with notes,
none twice, no audio shared with the other parts), and the per-family counts
are reported (a family with no notes is named, since the grader's per-family accuracy will be
missing for it).

Example
-------
(Skipped by the doctest run: it needs NSynth-format splits on disk.)

>>> summary = main(nsynth="data/rendered/nsynth-test", out="heldout.safetensors",          # doctest: +SKIP
...                train_sample="data/rendered/nsynth-train", sample_size=1024)
>>> summary["notes"], summary["train_sample"]                                               # doctest: +SKIP
(4855, 1024)
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES, read_feature_file, write_heldout_with_sample
from autograder.featurefile import validate_heldout as check_heldout_file
from reference.features import frontend_hash
from reference.heldout_control import build_control
from reference.heldout_control import notes_about as control_notes
from reference.make_features import BATCH_SIZE, build_feature_file

DEFAULT_SAMPLE_SIZE = 1024
NEEDS_A_PART = ("--reference-model needs --train-sample or --control: the detectors compare the reference's "
                "numbers on those parts with the held-out notes")

EXAMPLES = """examples:
  notegrade heldout --nsynth data/rendered/nsynth-test --out heldout.safetensors \\
      --train-sample data/rendered/nsynth-train --reference-model runs/ref/model.pt
  # the official NSynth test split (4,096 notes, no synth_lead) with 1,024 training notes
  notegrade heldout --nsynth nsynth-test --out heldout-nsynth.safetensors --train-sample nsynth-train
  # ... and a private control split (docs/threat-model.md: "A private control split"), the reference's numbers on every
  # part, and other honest models (more seeds, fewer and more epochs) that calibrate the lookup detector
  notegrade heldout --nsynth nsynth-test --out heldout.safetensors --train-sample nsynth-train \\
      --control private/render/nsynth-private --reference-model runs/ref/model.pt \\
      --honest-model runs/seed1/model.pt --honest-model runs/seed2/model.pt \\
      --honest-model runs/ep5/model.pt --honest-model runs/ep20/model.pt
"""


def validate_heldout(path: str | Path) -> dict:
    """Read a held-out file back and check it (:func:`autograder.featurefile.validate_heldout`, the same check
    ``notegrade build`` makes); returns ``{"notes": N, "family_counts": {...}, "missing": [...], "train_sample": n, ...}``."""
    return check_heldout_file(path, frontend_hash=frontend_hash)


def _sampler(size: int, seed: int):
    def select(notes: list) -> list:
        if size >= len(notes):
            return list(notes)
        rows = np.random.default_rng(seed).choice(len(notes), size=size, replace=False)
        return [notes[i] for i in sorted(rows)]
    return select


def reference_metrics(checkpoint: str | Path, heldout_path: str | Path) -> dict:
    """The reference's accuracy and loss on the held-out notes, the training sample and the control split
    (unperturbed; each part the file has)."""
    import torch

    from autograder.checks.heldout import mean_cross_entropy, train_sample_metrics
    from reference.evaluation import load_state_dict
    from reference.model import NoteCNN

    data = read_feature_file(heldout_path, mmap=False)
    if data.sample is None and data.control is None:
        raise NotegradeError(NEEDS_A_PART)
    model = NoteCNN()
    model.load_state_dict(load_state_dict(Path(checkpoint)))
    model.eval()

    def logits(features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.cat([model(torch.from_numpy(np.asarray(features[i:i + 256], dtype=np.float32)))
                              for i in range(0, len(features), 256)]).numpy()

    held = logits(data.features)
    labels = np.asarray(data.labels, dtype=np.int64)
    metrics = {"heldout_accuracy": round(float((held.argmax(1) == labels).mean()), 4),
               "heldout_loss": round(mean_cross_entropy(held, labels), 4), "heldout_count": len(labels),
               "model_sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()}
    if data.sample is not None:
        sample = train_sample_metrics(logits(data.sample.features), np.asarray(data.sample.labels, dtype=np.int64),
                                      np.bincount(labels, minlength=len(FAMILIES)))
        metrics.update(train_accuracy=round(sample["accuracy_matched"], 4), train_loss=round(sample["loss"], 4))
    if data.control is not None:
        control, control_labels = logits(data.control.features), np.asarray(data.control.labels, dtype=np.int64)
        metrics.update(control_accuracy=round(float((control.argmax(1) == control_labels).mean()), 4),
                       control_loss=round(mean_cross_entropy(control, control_labels), 4),
                       control_count=len(control_labels))
    return metrics


def main(*, nsynth: str | Path, out: str | Path, workers: int | None = None, batch_size: int = BATCH_SIZE,
         device: str | None = None, progress: bool = True, train_sample: str | Path | None = None,
         sample_size: int = DEFAULT_SAMPLE_SIZE, sample_seed: int = 0,
         reference_model: str | Path | None = None, control: str | Path | None = None,
         honest_models: "list[str | Path] | tuple" = ()) -> dict:
    """Write and validate the held-out file ``out`` from the NSynth split ``nsynth`` (see the module doc).

    ``honest_models``: other honest checkpoints (seeds, epochs, data sizes) whose accuracies on the
    public notes and the control split calibrate the lookup detector (needs ``reference_model`` and
    ``control``)."""
    out = Path(out)
    if sample_size < 1:
        raise NotegradeError(f"--sample-size must be at least 1, got {sample_size}")
    if reference_model is not None and train_sample is None and control is None:
        raise NotegradeError(NEEDS_A_PART)
    if control is not None and not Path(control).is_dir():
        raise NotegradeError(f"--control {control}: no such folder (an NSynth-format split: examples.json + audio/; "
                             "render one with `notegrade data render --single-split private --variation-secret FILE`)")
    if reference_model is not None and not Path(reference_model).is_file():
        raise NotegradeError(f"--reference-model {reference_model}: no such file")
    if honest_models and (reference_model is None or control is None):
        raise NotegradeError("--honest-model needs --reference-model and --control: it calibrates the lookup "
                             "detector, which compares the public notes with the control split")
    for path in honest_models:
        if not Path(path).is_file():
            raise NotegradeError(f"--honest-model {path}: no such file")
    built = build_feature_file(nsynth=nsynth, out=out, kind="heldout", workers=workers, batch_size=batch_size,
                               device=device, progress=progress)
    if train_sample is not None:
        partial = out.with_name(out.name + ".sample.partial")
        try:
            sampled = build_feature_file(nsynth=train_sample, out=partial, workers=workers, batch_size=batch_size,
                                         device=device, progress=progress, select=_sampler(sample_size, sample_seed))
            info = {"count": sampled["notes"], "split": sampled["split"], "seed": sample_seed,
                    "family_counts": sampled["family_counts"]}
            write_heldout_with_sample(out, heldout=read_feature_file(out, mmap=False),
                                      sample=read_feature_file(partial, mmap=False),
                                      extra_metadata={"train_sample": json.dumps(info, sort_keys=True)})
        finally:
            partial.unlink(missing_ok=True)
    if control is not None:
        packed = read_feature_file(out, mmap=False)
        control_set, info = build_control(control_dir=control, partial=out.with_name(out.name + ".control.partial"),
                                          public=packed, sample=packed.sample, workers=workers,
                                          batch_size=batch_size, device=device, progress=progress)
        write_heldout_with_sample(out, heldout=packed, sample=packed.sample, control=control_set,
                                  extra_metadata={"control": json.dumps(info, sort_keys=True)})
        built["control_notes"] = control_notes(info)
    if reference_model is not None:
        metrics = reference_metrics(reference_model, out)
        if honest_models:
            metrics["honest"] = [{k: v for k, v in reference_metrics(path, out).items()
                                  if k in ("heldout_accuracy", "control_accuracy", "model_sha256")}
                                 for path in honest_models]
        packed = read_feature_file(out, mmap=False)
        write_heldout_with_sample(out, heldout=packed, sample=packed.sample, control=packed.control,
                                  extra_metadata={"reference": json.dumps(metrics, sort_keys=True)})
        built["reference"] = metrics
    return {**built, **validate_heldout(out)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nsynth", required=True, type=Path, metavar="SPLIT_DIR",
                        help="the NSynth split to hold out (usually nsynth-test)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the held-out file to write")
    parser.add_argument("--train-sample", type=Path, metavar="TRAIN_DIR",
                        help="pack a labelled random sample of this training split (the train-on-test detector's "
                             "yardstick; default: no sample, no detector)")
    parser.add_argument("--sample-size", type=int, default=DEFAULT_SAMPLE_SIZE, help="notes in the training sample")
    parser.add_argument("--sample-seed", type=int, default=0, help="which notes the sample draws")
    parser.add_argument("--reference-model", type=Path, metavar="MODEL_PT",
                        help="record the reference's accuracy and loss on every part (needs --train-sample or "
                             "--control)")
    parser.add_argument("--honest-model", type=Path, action="append", default=None, metavar="MODEL_PT",
                        dest="honest_models",
                        help="another honest model (other seed, epochs or training-set size; repeat: six or so, "
                             "e.g. two more seeds and 1/8 to 2x the reference's epochs): their accuracies calibrate "
                             "the lookup detector's ratio and tolerance to how far honest models stray (needs "
                             "--reference-model and --control)")
    parser.add_argument("--control", type=Path, metavar="PRIVATE_SPLIT_DIR",
                        help="pack this NSynth-format split as the private control split: notes no student can have "
                             "(`notegrade data render --single-split private --variation-secret FILE` from "
                             "SoundFonts you do not publish, or your own recordings); the rubric's [heldout] "
                             "control_weight says how much of the held-out item it scores")
    parser.add_argument("--workers", type=int, default=None, help="worker threads (default: one per core)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="notes per front-end batch")
    parser.add_argument("--device", default=None, help="front-end device (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    summary = main(nsynth=args.nsynth, out=args.out, workers=args.workers, batch_size=args.batch_size, device=args.device,
                   train_sample=args.train_sample, sample_size=args.sample_size, sample_seed=args.sample_seed,
                   reference_model=args.reference_model, control=args.control,
                   honest_models=args.honest_models or ())
    width = max(len(f) for f in FAMILIES)
    print(f"wrote {summary['out']}: {summary['notes']} held-out notes (features, labels, note ids; no audio)")
    for family, n in summary["family_counts"].items():
        print(f"  {family:<{width}}  {n:>6}")
    if summary["missing"]:
        print(f"note: no notes for {', '.join(summary['missing'])}; per-family accuracy will be missing for them")
    if summary["train_sample"]:
        print(f"training sample: {summary['train_sample']:,} labelled notes for the train-on-test detector")
    else:
        print("note: no training sample (--train-sample): the grader's train-on-test detector will not run")
    if summary["control"]:
        print(f"private control split: {summary['control']:,} notes (presented mixed with the public ones; "
              "[heldout] control_weight says what they score)")
        for note in summary.get("control_notes", []):
            print(f"note: {note}")
    if "reference" in summary:
        ref = summary["reference"]
        parts = [f"{ref['heldout_accuracy']:.1%} on the held-out notes"]
        if "train_accuracy" in ref:
            parts.append(f"{ref['train_accuracy']:.1%} on the training sample (family mix of the held-out notes)")
        if "control_accuracy" in ref:
            parts.append(f"{ref['control_accuracy']:.1%} on the private control split (set the held-out item's "
                         "zero_at/full_at relative to these)")
        print("reference: " + ", ".join(parts))
        for model in ref.get("honest", []):
            print(f"honest model {model['model_sha256'][:12]}: {model['heldout_accuracy']:.1%} on the held-out notes, "
                  f"{model['control_accuracy']:.1%} on the control split (calibrates the lookup detector)")
    return 0
