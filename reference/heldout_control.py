"""The private control split of a held-out file (``notegrade heldout --control DIR``): features, checks, metadata.

One job: turn an NSynth-format split the students cannot have (rendered by ``notegrade data render
--single-split private --variation-secret FILE`` from SoundFonts the instructor does not publish,
or the instructor's own recordings) into the held-out file's ``control_*`` tensors and its
``control`` metadata (:data:`autograder.featurefile.CONTROL_FORMAT`: counts, split, where it came
from).  What would not be private (notes shared with the public held-out notes or the training
sample: identical features, the same audio) is refused before anything is written, by the one
held-out validator, :func:`autograder.featureset.check_heldout`, which ``notegrade build`` runs
too.  The grader presents the control notes mixed with the public ones (the worker can't tell them
apart) and the rubric's ``[heldout] control_weight`` decides how much of the held-out item they score.

Example
-------
``build_control(control_dir=..., partial=..., public=read_feature_file("heldout.safetensors"))``
needs a rendered split on disk; what ``notegrade heldout`` then prints about the ``info`` it returns:

>>> notes_about({"count": 2400, "family_counts": {"bass": 0, "organ": 2400}, "render": {"secret_fingerprint": None}})
... # doctest: +NORMALIZE_WHITESPACE
["the control split's render manifest has no secret variation: anyone with the same SoundFonts and --seed
 renders the same notes; render it with --variation-secret FILE (docs/threat-model.md: 'A private control split')",
 'the control split has no notes of bass']
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from autograder.featurefile import CONTROL_FORMAT, FeatureSet, read_feature_file
from autograder.featureset import check_heldout
from reference.features import frontend_hash
from reference.make_features import build_feature_file

NOT_VARIED = ("the control split's render manifest has no secret variation: anyone with the same SoundFonts and "
              "--seed renders the same notes; render it with --variation-secret FILE (docs/threat-model.md: 'A private control split')")


def _render_origin(control_dir: Path) -> "dict | None":
    """What ``render_manifest.json`` beside the split says about it (fonts by name, the variation's fingerprint)."""
    manifest_path = Path(control_dir).resolve().parent / "render_manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    options = manifest.get("options") or {}
    return {"soundfonts": [Path(p).name for p in options.get("soundfonts") or []],
            "secret_fingerprint": (manifest.get("variation") or {}).get("secret_fingerprint")}


def build_control(*, control_dir: "str | Path", partial: "str | Path", public: FeatureSet,
                  sample: "FeatureSet | None" = None, workers: "int | None" = None, batch_size: int = 64,
                  device: "str | None" = None, progress: bool = True) -> "tuple[FeatureSet, dict]":
    """Features of ``control_dir`` (written to ``partial``, read back into memory, removed) and its metadata."""
    partial = Path(partial)
    try:
        built = build_feature_file(nsynth=control_dir, out=partial, workers=workers, batch_size=batch_size,
                                   device=device, progress=progress)
        control = read_feature_file(partial, mmap=False)
    finally:
        partial.unlink(missing_ok=True)
    # The file's own validator, on the file as it will be written: a bad control split never reaches disk.
    check_heldout(dataclasses.replace(public, sample=sample, control=control), frontend_hash=frontend_hash)
    info = {"format": CONTROL_FORMAT, "count": len(control), "split": built["split"],
            "family_counts": control.family_counts(), "render": _render_origin(Path(control_dir))}
    return control, info


def notes_about(info: dict) -> "list[str]":
    """What the instructor should know about a packed control split (printed by ``notegrade heldout``)."""
    notes = []
    render = info.get("render")
    if render is not None and not render.get("secret_fingerprint"):
        notes.append(NOT_VARIED)
    missing = [family for family, count in (info.get("family_counts") or {}).items() if count == 0]
    if missing:
        notes.append(f"the control split has no notes of {', '.join(missing)}")
    if info.get("count", 0) < 2000:
        notes.append(f"{info.get('count', 0):,} control notes: a +5-point public-only gain is flagged about half the "
                     "time with 1,000 and 77% of the time with 2,000 (docs/threat-model.md: 'How large')")
    return notes
