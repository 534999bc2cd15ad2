"""How the held-out notes reach the worker: a secret order, secret batches, a small perturbation.

TRUSTED side.  The grader decides everything here from keys the worker never sees, and the worker
gets only feature batches (no note ids, no labels, no order it could rely on):

- **Keys.**  ``run key = HMAC-SHA256(secret, submission digest)``: the autograder's secret (made by
  ``notegrade build``, root-only on Gradescope) and the sha256 of the graded files.  The same files
  graded by the same autograder give the same order, batches and perturbation, so a regrade
  reproduces the score; nobody without the secret can predict them.  ``split key = HMAC(secret,
  "split")`` fixes the public/private split for the whole class (one leaderboard).
- **Order and batches.**  A permutation of every note the run evaluates (the public held-out notes
  and, mixed in among them, the labelled training sample of the train-on-test detector and the
  private control split), cut into batches of the item's ``batch_size``: which notes share a batch
  is secret too.  Every part gets the same perturbation and shares the same batches, so a note's
  position, batch and treatment say nothing about which part it belongs to.
- **Perturbation.**  Features are ``(dB + 40) / 40`` log-mel values.  Each note gets a gain offset
  (uniform in +-``gain_db``, a constant shift of its dB values) plus Gaussian noise of
  ``noise_db`` dB (std) on every bin.  Both are far below what changes an instrument family, so a
  trained model's accuracy barely moves, while a lookup of the public test features (exact, or
  within a distance threshold) no longer matches.  The batch is sent as float16, like the file.
- **The control split's perturbation is the class's.**  Its notes get the same gain range and
  noise, drawn per note from ``HMAC(secret, "control")`` instead of the run key: the same for every
  submission.  Nobody has those notes, so a per-submission draw defends nothing there, while it
  was most of what moved the shipped rubrics' score (80% from ~1,000 control notes, one of which
  weighs 10x a public one) for the same weights: 0.9 accuracy points over 100 keys, 0.64 of
  ``fall2024_a2``'s 25 points (issue 17.5).  The public notes' draws are unchanged, and within a
  run the worker still sees one perturbation of one size on every note, in one secret order.
- **Its size is a trade-off** (issue 17.5).  Every key moves a few notes that sit on a decision
  boundary, so the same weights score a little differently per submission; at 1 dB / 0.5 dB the
  trained reference's scored (private) accuracy swung 0.7 points over 100 keys, 0.60 of
  ``fall2024_a2``'s points, above the 0.5 the issue allows.  Gain and noise each drove about as
  much of it (std 0.12 and 0.13 points alone; the weight scrambling 0.06).  Half of each (the
  defaults, 0.5 dB / 0.25 dB): 0.43 points in each of three sets of 100 keys.  Smaller is still
  far above float16's resolution, so an exact lookup misses every note, and a ``cdist < 1e-2``
  lookup of 32 projected features (issue 10's) still misses every note of 1,024 rendered test
  notes by 2.3x or more (median 4.9x; 4.5x and 9.8x at 1 dB / 0.5 dB; a quarter of each would
  leave 1.1x).  A lookup that tolerates the noise (mean-subtracted, projected fingerprints)
  matches through either size: what stops it is that it has nowhere to live (the source and
  checkpoint budgets, ``weight_bits``), and notes no student has (issue 17.1's private control
  split).  Numbers: ``benchmarks/bench_heldout_spread.py``, docs/threat-model.md, "Held-out integrity".

Example
-------
>>> run = HeldoutRun(secret=b"k" * 32, submission_digest="abc", batch_size=4)
>>> plan = presentation(10, run)
>>> sorted(plan.order.tolist()) == list(range(10)), sum(plan.batches)
(True, 10)
>>> presentation(10, run).order.tolist() == plan.order.tolist()          # a regrade: same order
True
>>> presentation(10, HeldoutRun(secret=b"k" * 32, submission_digest="abd")).order.tolist() == plan.order.tolist()
False
>>> other = presentation(10, HeldoutRun(secret=b"k" * 32, submission_digest="abd"), control=3)
>>> bool((presentation(10, run, control=3).gain[7:] == other.gain[7:]).all())  # the last 3: the class's
True
>>> mask = public_mask(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), secret=b"k" * 32, fraction=0.5)
>>> int(mask.sum()), int(mask[:4].sum()), int(mask[4:].sum())            # stratified by family
(5, 2, 3)
"""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from autograder.assignment import ASSIGNMENT_FILES

DB_SCALE = 40.0  # dB per feature unit (the front-end's scaling; the file's frontend_params say so too)
NO_SECRET = b"notegrade: no autograder secret"  # predictable: the grader says so to instructors
_CHUNK = 512  # notes perturbed at a time (bounds the grader's float32 working memory)


@dataclass(frozen=True)
class HeldoutRun:
    """What one grading run needs to present the held-out notes (built by the runner from the rubric).

    ``secret``: the autograder's secret (bytes; :data:`NO_SECRET` when it has none);
    ``submission_digest``: :func:`submission_digest` of the graded files; ``gain_db`` / ``noise_db``:
    the perturbation (``perturb=False`` sends the features as stored); ``public_fraction``: the share
    of held-out notes in the public part (0: no split); ``batch_size``: the typical batch size;
    ``control_weight``: the rubric's share of the private control split in the scored accuracy;
    ``keep_predictions``: the grader keeps each note's predicted family for the class analysis
    (``integrity_probe.py``; the self-check does not).
    """

    secret: bytes = NO_SECRET
    submission_digest: str = ""
    perturb: bool = True
    gain_db: float = 0.5
    noise_db: float = 0.25
    public_fraction: float = 0.0
    batch_size: int = 64
    control_weight: float = 0.0  # share of the scored accuracy from the file's private control split
    keep_predictions: bool = False

    @property
    def has_secret(self) -> bool:
        return bool(self.secret) and self.secret != NO_SECRET


@dataclass(frozen=True)
class Presentation:
    """One run's order (row i of what the worker gets is note ``order[i]``), batch sizes and gains."""

    order: np.ndarray  # int64 permutation
    batches: "list[int]"
    gain: np.ndarray  # float32 per note (feature units), indexed by note, not by position
    noise_seed: int
    control_from: int = -1  # notes from this one on (the control split) take the class's noise; -1: none
    control_seed: int = 0  # ... drawn per note from this seed and the note's index, whatever its position


def submission_digest(directory: "str | os.PathLike", names: Iterable[str] = ASSIGNMENT_FILES) -> str:
    """sha256 over the graded files' names and bytes (a missing file counts as missing)."""
    digest = hashlib.sha256(b"notegrade-submission/1\0")
    for name in names:
        path = os.path.join(os.fspath(directory), name)
        digest.update(name.encode() + b"\0")
        try:
            if os.path.islink(path) or not os.path.isfile(path):
                raise FileNotFoundError(path)
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(hashlib.sha256(block).digest())
            digest.update(b"\1")
        except OSError:
            digest.update(b"\0missing")
    return digest.hexdigest()


def derive_key(secret: bytes, label: str, *parts: str) -> bytes:
    """HMAC-SHA256 of ``label`` and ``parts`` under ``secret``."""
    message = "\0".join(("notegrade-heldout/1", label, *parts)).encode()
    return hmac.new(secret or NO_SECRET, message, hashlib.sha256).digest()


def _rng(key: bytes) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(key[:16], "little"))


def batch_sizes(n: int, batch_size: int) -> "list[int]":
    """``batch_size`` notes per batch (the last one the rest).

    Which notes share a batch is the permutation's secret; the sizes stay fixed, because varying
    sizes fragment the worker's heap (measured: +180 MB peak over 4,096 notes, too much for 768 MB).
    """
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def presentation(n: int, run: HeldoutRun, *, control: int = 0) -> Presentation:
    """The order, batches and per-note gains of ``n`` notes for this (secret, submission).

    ``control``: the last ``control`` notes are the private control split, whose gain and noise are
    the class's (keyed by the secret alone: the same for every submission; see the module's docstring).
    """
    rng = _rng(derive_key(run.secret, "run", run.submission_digest))
    order = rng.permutation(n).astype(np.int64)
    batches = batch_sizes(n, max(1, int(run.batch_size)))
    gain = (rng.uniform(-1.0, 1.0, size=n) * (run.gain_db / DB_SCALE)).astype(np.float32) if run.perturb \
        else np.zeros(n, np.float32)
    noise_seed = int(rng.integers(0, 2**63 - 1))  # drawn before the control part's: the public draws don't move
    control = min(max(0, int(control)), n)
    if not (control and run.perturb):
        return Presentation(order=order, batches=batches, gain=gain, noise_seed=noise_seed)
    fixed = _rng(derive_key(run.secret, "control", str(control)))
    gain[n - control:] = (fixed.uniform(-1.0, 1.0, size=control) * (run.gain_db / DB_SCALE)).astype(np.float32)
    return Presentation(order=order, batches=batches, gain=gain, noise_seed=noise_seed, control_from=n - control,
                        control_seed=int(fixed.integers(0, 2**63 - 1)))


def _gather(parts: "tuple[np.ndarray, ...]", rows: np.ndarray) -> np.ndarray:
    """Rows of the concatenation of ``parts`` (memmaps are fine), as float32, without concatenating them."""
    out = np.empty((len(rows), *parts[0].shape[1:]), dtype=np.float32)
    offset = 0
    for part in parts:
        inside = (rows >= offset) & (rows < offset + len(part))
        if inside.any():
            local = rows[inside] - offset
            order = np.argsort(local, kind="stable")  # read in file order: sequential memmap pages
            block = np.asarray(part[local[order]], dtype=np.float32)
            out[np.flatnonzero(inside)[order]] = block
        offset += len(part)
    return out


def part_slices(sizes: "list[int] | tuple[int, ...]") -> "list[slice]":
    """Where each part (public notes, training sample, control split, ...) lies in note order.

    >>> part_slices([4, 0, 3])
    [slice(0, 4, None), slice(4, 4, None), slice(4, 7, None)]
    """
    ends = np.cumsum([0, *sizes]).tolist()
    return [slice(start, end) for start, end in zip(ends[:-1], ends[1:])]


def present(features: "np.ndarray | tuple[np.ndarray, ...]", plan: Presentation, run: HeldoutRun, *,
            db_scale: float = DB_SCALE) -> np.ndarray:
    """``features`` (N, 1, 64, 64; a memmap, or a tuple of parts read as one: the public notes, the
    training sample, the control split) in the plan's order, perturbed alike, as float16.

    Works through :data:`_CHUNK` notes at a time, so the grader never holds the whole set in float32.
    """
    parts = tuple(features) if isinstance(features, (tuple, list)) else (features,)
    n = len(plan.order)
    out = np.empty((n, *parts[0].shape[1:]), dtype=np.float16)
    noise_std = float(run.noise_db) / db_scale if run.perturb else 0.0
    rng = np.random.default_rng(plan.noise_seed)
    for start in range(0, n, _CHUNK):
        rows = plan.order[start : start + _CHUNK]
        chunk = _gather(parts, rows)
        if run.perturb:
            chunk += (plan.gain[rows] * (DB_SCALE / db_scale))[:, None, None, None]
            if noise_std > 0:
                noise = rng.standard_normal(chunk.shape, dtype=np.float32)  # every row's draw: the rest don't move
                for at in np.flatnonzero(rows >= plan.control_from) if plan.control_from >= 0 else ():
                    noise[at] = np.random.default_rng((plan.control_seed, int(rows[at]))).standard_normal(
                        chunk.shape[1:], dtype=np.float32)  # the note's own: the same wherever it lands
                chunk += noise * np.float32(noise_std)
        out[start : start + len(rows)] = chunk.astype(np.float16)
    return out


def restore_order(presented: np.ndarray, plan: Presentation) -> np.ndarray:
    """Rows of ``presented`` (the worker's answers, in presented order) put back in note order."""
    restored = np.empty_like(presented)
    restored[plan.order] = presented
    return restored


def public_mask(labels: np.ndarray, *, secret: bytes, fraction: float) -> np.ndarray:
    """Which held-out notes form the public part: ``fraction`` of each family, chosen by the secret.

    The same for every submission graded by one autograder (the leaderboard compares like with like).
    """
    labels = np.asarray(labels, dtype=np.int64)
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    rng = _rng(derive_key(secret, "split", str(len(labels)), f"{fraction:.6f}"))
    for family in np.unique(labels):
        members = np.flatnonzero(labels == family)
        take = int(round(fraction * len(members)))
        mask[rng.permutation(members)[:take]] = True
    return mask
