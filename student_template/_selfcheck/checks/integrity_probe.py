"""Grade-time integrity predictions: what grading keeps so the class analysis need not run a model again.

TRUSTED side.  While a submission is graded its model answers every held-out note (perturbed,
shuffled, in secret batches: ``heldout_presentation.py``) and the grader puts the answers back in
file order.  :func:`make_record` packs the predicted family of each held-out note (public notes
only, file order: the same notes in the same order for every submission) into a small record,
which the grader stores instructor-only in ``results.json`` ``extra_data["integrity"]["probe"]``.
``notegrade integrity`` and ``regrade --integrity`` read it back with :func:`read_record` instead
of starting a sandbox per submission, and compute only what is missing.

The record is keyed by the probe set (:func:`probe_digest`: which notes, in which order, with
which labels and front end) and the sha256 of the ``model.pt`` that was graded; a record whose
keys differ from the analysis's, or that is malformed in any way, is not used (the analysis then
runs the model itself, clean).  Why the scored answers and not a separate clean pass: a second
forward pass over the held-out notes would cost about as much again as the held-out item, and
presenting the notes unperturbed to a worker that is still being scored would undo the
perturbation (a clean copy matches the public split and pairs with its perturbed twin).  The
scored answers cost nothing and cannot differ from what the student was graded on, so a model
cannot answer the integrity probe one way and the scored notes another.  The perturbation moves a
prediction on few notes (docs/benchmarks.md measures how many); the analysis compares predictions
statistically, so a handful of flips does not matter.

Example
-------
>>> digest = probe_digest(np.array([7, 8, 9]), np.array([0, 1, 2]), "abc")
>>> record = make_record(np.array([0, 1, 1]), probe=digest, model_sha256="f" * 64, perturbed=True)
>>> record["format"], record["count"], len(record["predictions"])
('notegrade-probe/1', 3, 4)
>>> predictions, why = read_record(record, probe=digest, model_sha256="f" * 64, count=3, classes=11)
>>> predictions.tolist(), why
([0, 1, 1], '')
>>> read_record(record, probe=digest, model_sha256="0" * 64, count=3, classes=11)[1]
'graded with another model.pt'
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import numpy as np

FORMAT = "notegrade-probe/1"


def probe_digest(notes: np.ndarray, labels: np.ndarray, frontend_hash: str) -> str:
    """The probe set's identity: its note ids in order, their labels and the front-end that made them."""
    digest = hashlib.sha256(FORMAT.encode() + b"\0" + str(frontend_hash).encode() + b"\0")
    digest.update(np.ascontiguousarray(notes, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


def make_record(predictions: np.ndarray, *, probe: str, model_sha256: str, perturbed: bool) -> dict:
    """The JSON record of ``predictions`` (one family id per note, file order)."""
    packed = np.asarray(predictions, dtype=np.int64)
    if packed.ndim != 1 or (len(packed) and (packed.min() < 0 or packed.max() > 255)):
        raise ValueError("predictions must be one family id in 0..255 per note")
    return {"format": FORMAT, "probe": probe, "model_sha256": model_sha256, "count": int(len(packed)),
            "perturbed": bool(perturbed), "predictions": base64.b64encode(packed.astype(np.uint8).tobytes()).decode()}


def read_record(raw: Any, *, probe: str, model_sha256: "str | None", count: int,
                classes: int) -> "tuple[np.ndarray | None, str]":
    """``(predictions, "")`` from a record that matches exactly, else ``(None, why not)``.

    The record comes from a results.json: written by the grader, but treat it as any input."""
    if not isinstance(raw, dict):
        return None, "no grade-time predictions" if raw is None else "a malformed record"
    if raw.get("format") != FORMAT:
        return None, f"a record of format {str(raw.get('format'))[:40]!r}, expected {FORMAT}"
    if raw.get("probe") != probe:
        return None, "graded with another held-out file"
    if model_sha256 is None or raw.get("model_sha256") != model_sha256:
        return None, "graded with another model.pt"
    text = raw.get("predictions")
    if raw.get("count") != count or not isinstance(text, str) or len(text) > 4 * (count // 3 + 1):
        return None, "a record of another size"
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None, "a record that is not base64"
    predictions = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if len(predictions) != count:
        return None, "a record of another size"
    if len(predictions) and predictions.max() >= classes:
        return None, f"a prediction outside the {classes} families"
    return predictions, ""
