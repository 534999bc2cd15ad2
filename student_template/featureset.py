"""A feature file's contents in memory (:class:`FeatureSet`, what a held-out one holds) and its batches.

:class:`FeatureLoader` gives the training batches; :func:`check_heldout` what a held-out file must hold.

The on-disk format, its reader and its writers live in ``featurefile.py`` beside this file, which
re-exports these names (callers import them from there).  They sit apart because they are the
in-memory side: nothing here knows the file layout.  numpy only at import time; torch is imported
inside :class:`FeatureLoader`, so the grader can read held-out files without it.

Example
-------
>>> import numpy as np
>>> fs = FeatureSet(features=np.zeros((3, 1, 64, 64), np.float16), labels=np.array([0, 4, 10]),
...                 notes=np.array([7, 8, 9]), note_strs=["a", "b", "c"], metadata={"kind": "features"})
>>> len(fs), fs.kind, fs.family_counts()["keyboard"]
(3, 'features', 1)
>>> [y.tolist() for _, y in FeatureLoader(fs, batch_size=2)]
[[0, 4], [10]]
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from errors import NotegradeError

# NSynth instrument families; the index is the label id.
FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal")


@dataclass
class FeatureSet:
    """A feature file's contents: ``features`` is a read-only memmap unless read with ``mmap=False``."""

    features: np.ndarray  # float16 (N, 1, 64, 64)
    labels: np.ndarray  # int64 (N,)
    notes: np.ndarray  # int64 (N,)
    note_strs: list[str]
    metadata: dict[str, str]
    path: Path | None = None
    # A held-out file may also carry a labelled sample of the training split (the train-on-test
    # detector's yardstick): tensors ``sample_features``/``sample_labels``/``sample_notes``/
    # ``sample_note_str``.  Readers that only know the four main tensors ignore it.
    sample: "FeatureSet | None" = None
    # ... and a private control split (notes no student can have, scored as the rubric says):
    # tensors ``control_*``, metadata ``control`` (JSON: its format version, counts, origin).
    control: "FeatureSet | None" = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def split(self) -> str:
        return self.metadata["split"]

    @property
    def frontend_hash(self) -> str:
        return self.metadata["frontend_hash"]

    @property
    def frontend_params(self) -> dict:
        return json.loads(self.metadata["frontend_params"])

    @property
    def families(self) -> list[str]:
        return json.loads(self.metadata["families"])

    def family_counts(self) -> dict[str, int]:
        """Notes per family name (every family, zeros included)."""
        counts = np.bincount(self.labels, minlength=len(FAMILIES))
        return {name: int(counts[i]) for i, name in enumerate(FAMILIES)}


def check_heldout(heldout: FeatureSet, *, frontend_hash: Callable[..., str]) -> dict:
    """What makes a feature file a held-out file the toolkit packs (``featurefile.validate_heldout`` reads
    the file with the toolkit's front-end hash, then calls this).

    ``frontend_hash()`` is the toolkit's front-end hash, ``frontend_hash(params)`` that of the file's
    parameters.  Refuses, saying what to do: parameters edited after the hash, a feature file of
    another kind, no notes, a note id more than once, a training sample that shares notes with the
    held-out notes, a control split that is empty, repeats a note or shares audio with either
    (:func:`_check_control`).  Returns ``{"notes", "split", "frontend_hash", "family_counts", "missing",
    "train_sample", "reference_metrics", "control"}``.
    """
    path, expected = heldout.path, frontend_hash()
    try:
        recomputed = frontend_hash(heldout.frontend_params)
    except (TypeError, ValueError):  # not JSON-serialisable parameters: a damaged file
        recomputed = None
    if recomputed != expected:
        raise NotegradeError(f"{path}: its front-end parameters do not match its front-end hash {expected}; "
                             "the file was edited or corrupted: rebuild it with `notegrade heldout`")
    if heldout.kind != "heldout":
        raise NotegradeError(f"{path}: is a {heldout.kind!r} file, not a held-out file; make one with `notegrade heldout`")
    if len(heldout) == 0:
        raise NotegradeError(f"{path}: the held-out file has no notes")
    ids, counts = np.unique(heldout.notes, return_counts=True)
    if (counts > 1).any():
        first = int(ids[counts > 1][0])
        name = heldout.note_strs[int(np.flatnonzero(heldout.notes == first)[0])]
        raise NotegradeError(f"{path}: {int((counts > 1).sum())} note id(s) appear more than once (e.g. note {first}, "
                             f"{name}: the split's examples.json repeats notes); remove the repeated entries from "
                             "examples.json and rebuild the file with `notegrade heldout`")
    sample = heldout.sample
    if sample is not None:
        shared = set(heldout.note_strs) & set(sample.note_strs)
        if shared:
            raise NotegradeError(f"{path}: the training sample shares {len(shared)} note(s) with the held-out notes "
                                 f"(e.g. {sorted(shared)[0]}): --train-sample must be the training split")
    if heldout.control is not None:
        _check_control(heldout)
    family_counts = heldout.family_counts()
    return {"notes": len(heldout), "split": heldout.split, "frontend_hash": expected, "family_counts": family_counts,
            "missing": [f for f, n in family_counts.items() if n == 0],
            "train_sample": len(sample) if sample is not None else 0,
            "reference_metrics": "reference" in heldout.metadata,
            "control": len(heldout.control) if heldout.control is not None else 0}


def _feature_digests(part: FeatureSet) -> set:
    return {hashlib.sha256(np.ascontiguousarray(row).tobytes()).digest() for row in part.features}


def _check_control(heldout: FeatureSet) -> None:
    """A control split must be private: notes, none twice, no audio shared with the public notes or the sample.

    Shared audio is found by identical features; names alone may coincide (two renders name notes by
    family, number, pitch and velocity), so they are only quoted as an example.
    """
    path, control = heldout.path, heldout.control
    if len(control) == 0:
        raise NotegradeError(f"{path}: its private control split has no notes; rebuild it with "
                             "`notegrade heldout --control DIR` from a split that has some")
    if len(set(control.note_strs)) != len(control):
        raise NotegradeError(f"{path}: its private control split repeats note names (its examples.json repeats "
                             "notes); remove the repeated entries and rebuild it with `notegrade heldout --control DIR`")
    mine = _feature_digests(control)
    for label, other in (("held-out notes", heldout), ("training sample", heldout.sample)):
        if other is None:
            continue
        same = mine & _feature_digests(other)
        if same:
            named = sorted(set(control.note_strs) & set(other.note_strs))
            example = f" (e.g. {named[0]})" if named else ""
            raise NotegradeError(f"{path}: the private control split shares {len(same)} note(s) with the {label}"
                                 f"{example}: the same audio; a control split must hold notes no student can have: "
                                 "render it from other SoundFonts with a secret variation (docs/threat-model.md: 'A private "
                                 "control split') and rebuild with `notegrade heldout --control DIR`")


class FeatureLoader:
    """Batches ``(float32 features (B, 1, 64, 64), int64 labels (B,))`` as torch tensors on ``device``.

    On a CUDA device with room for it, the whole fp16 feature tensor is copied there once and
    indexed per batch (no host round trips); otherwise batches are gathered from the memmap.
    ``shuffle`` draws a new permutation per epoch from a generator seeded with ``seed``, so two
    loaders with the same seed yield the same sequence of epochs.  ``len()`` is the batch count.
    """

    def __init__(self, feature_set: FeatureSet, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                 device: Any = "cpu", drop_last: bool = False, channels_last: bool = False) -> None:
        import torch  # lazily: reading files must work with numpy alone

        if batch_size < 1:
            raise NotegradeError(f"batch_size must be >= 1, got {batch_size}")
        self.feature_set, self.batch_size, self.shuffle = feature_set, batch_size, shuffle
        self.drop_last, self.channels_last = drop_last, channels_last
        self.device = torch.device(device)
        self._rng = np.random.default_rng(seed)
        self._resident: tuple | None = None
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if feature_set.features.nbytes < 0.5 * free:  # leave room for the model and activations
                self._resident = (torch.from_numpy(np.ascontiguousarray(feature_set.features)).to(self.device),
                                  torch.from_numpy(np.asarray(feature_set.labels)).to(self.device))

    @property
    def resident(self) -> bool:
        """True when the features live on the device (CUDA) rather than being gathered per batch."""
        return self._resident is not None

    def __len__(self) -> int:
        n = len(self.feature_set)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple]:
        import torch

        n = len(self.feature_set)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        if self._resident is not None:
            order_dev = torch.from_numpy(order).to(self.device)
        for b in range(len(self)):
            if self._resident is not None:
                idx = order_dev[b * self.batch_size : (b + 1) * self.batch_size]
                x, y = self._resident[0][idx].float(), self._resident[1][idx]
            else:
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                # The shuffle decides which notes share a batch; reading them in file order keeps
                # memmap page faults sequential (the order inside a batch does not matter).
                sorted_idx = np.sort(idx) if self.shuffle else idx
                x = torch.from_numpy(self.feature_set.features[sorted_idx].astype(np.float32))
                y = torch.from_numpy(self.feature_set.labels[sorted_idx])
                x, y = x.to(self.device), y.to(self.device)
            yield x.contiguous(memory_format=memory_format), y
