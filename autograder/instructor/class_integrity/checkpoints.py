"""Checkpoint similarity for every pair of submissions, vectorised over the class.

Per pair: whether the ``model.pt`` files are byte-identical (sha256), the **cosine** of each
weight tensor's flattened values (per layer; the pair's score is the median over the weight
layers, so one re-initialised layer does not hide a copy), and, for pairs that look alike, the
share of exactly identical values.  One Gram matrix per layer gives all pairs at once.

Calibration (tests/instructor/class_integrity/test_planted_class.py, seeded CPU trainings on the
synthetic splits): two students trained from different seeds score about 0.0 (independent initial
weights stay uncorrelated through training); one epoch of fine-tuning from a shared checkpoint
leaves 0.99; a shared checkpoint is 1.0.  The default threshold, 0.5, sits far from both.

**Shared known starts.**  ``pipeline.py`` seeds the initial weights (``--seed``, default 0), and
every correct ``NoteCNN`` creates its layers in the same order, so students who keep the default
start from the very same weights: on the CPU, honest runs with differently written but correct
code end up with cosines of 0.99 and can even be bit-identical.  Each submission is therefore
compared with the initial weights of a few common seeds (:data:`KNOWN_SEEDS`); a pair that shares
a known start is compared on its *changes* from that start, and flagged only relative to other
pairs that share it (see :mod:`.flags`).  Identical files are always flagged, with that caveat.

``model.pt`` is read with ``torch.load(weights_only=True)`` (no code runs) within
:data:`MAX_CHECKPOINT_MB`; tensors whose name or shape is not the assignment's are ignored.

Example
-------
>>> rng = np.random.default_rng(0)
>>> a = {"fc.weight": rng.normal(size=(11, 2048)).astype(np.float32)}
>>> b = {"fc.weight": a["fc.weight"] + 0.1 * rng.normal(size=(11, 2048)).astype(np.float32)}
>>> pairs = compare_checkpoints([a, b, None], ["x", "y", None], shapes={"fc.weight": (11, 2048)}, starts={})
>>> round(float(pairs.similarity[0, 1]), 2), bool(np.isnan(pairs.similarity[0, 2])), round(float(pairs.identical[0, 1]), 2)
(0.99, True, 0.0)
"""
from __future__ import annotations

import pathlib
import warnings
from dataclasses import dataclass, field

import numpy as np

MAX_CHECKPOINT_MB = 50.0
KNOWN_SEEDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 42, 123, 1234, 2024, 3407)
START_THRESHOLD = 0.25  # median per-layer cosine with a known start's weights; independent weights give ~0.0
CANDIDATE_SIMILARITY = 0.25  # pairs at or above this get their identical values counted

State = dict[str, np.ndarray]


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the assignment's NoteCNN (from the reference, instructor side)."""
    from reference.model import NoteCNN

    return {name: tuple(t.shape) for name, t in NoteCNN().state_dict().items()}


def initial_states(seeds: tuple[int, ...] = KNOWN_SEEDS) -> dict[int, State]:
    """The weights ``pipeline.py`` starts from with ``--seed s`` (``torch.manual_seed(s)``, then ``NoteCNN()``)."""
    import torch

    from reference.model import NoteCNN

    states = {}
    saved = torch.random.get_rng_state()
    try:
        for seed in seeds:
            torch.manual_seed(seed)
            states[seed] = {k: v.numpy().astype(np.float32) for k, v in NoteCNN().state_dict().items()}
    finally:
        torch.random.set_rng_state(saved)
    return states


def load_state(path: pathlib.Path, shapes: dict[str, tuple[int, ...]]) -> tuple[State | None, str]:
    """The assignment's float tensors of a ``model.pt``, or ``(None, why not)``."""
    import torch

    path = pathlib.Path(path)
    if not path.is_file():
        return None, "no model.pt"
    size_mb = path.stat().st_size / 1e6
    if size_mb > MAX_CHECKPOINT_MB:
        return None, f"model.pt is {size_mb:.0f} MB, over the {MAX_CHECKPOINT_MB:.0f} MB limit"
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file is the student's, not ours
        return None, f"model.pt is not a plain state_dict ({type(err).__name__})"
    if not isinstance(raw, dict):
        return None, f"model.pt holds a {type(raw).__name__}, not a state_dict"
    state = {name: t.detach().to(torch.float32).numpy() for name, t in raw.items()
             if isinstance(t, torch.Tensor) and name in shapes and tuple(t.shape) == shapes[name] and t.is_floating_point()}
    if not state:
        return None, "model.pt has none of NoteCNN's tensors with the right shapes"
    return state, ""


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Scales ``matrix``'s rows to unit length in place (no copy of a 300 x 73,728 matrix) and returns it;
    all-zero or non-finite rows become NaN (no cosine)."""
    bad = ~np.isfinite(matrix).all(axis=1)
    matrix[bad] = 0.0
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    bad |= norms == 0
    matrix /= np.where(bad, 1.0, norms).astype(matrix.dtype)[:, None]
    matrix[bad] = np.nan
    return matrix


@dataclass
class CheckpointPairs:
    sha_equal: np.ndarray  # (S, S) bool
    similarity: np.ndarray  # (S, S) median per-layer cosine (of changes from a shared start); NaN: no common layer
    identical: np.ndarray  # (S, S) share of identical values, NaN where not counted
    per_layer: np.ndarray  # (L, S, S) float32 cosines
    layers: list[str]
    start: np.ndarray  # (S,) known seed each submission starts from, -1: none found
    start_similarity: np.ndarray  # (S,) its median per-layer cosine with that start
    shared_start: np.ndarray = field(init=False)  # (S, S) bool: same known start

    def __post_init__(self) -> None:
        self.shared_start = (self.start[:, None] == self.start[None, :]) & (self.start[:, None] >= 0)


def _matrix(states: list[State | None], name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    size = int(np.prod(shape))
    rows = np.zeros((len(states), size), np.float32)
    has = np.zeros(len(states), bool)
    for i, state in enumerate(states):
        if state is not None and name in state:
            rows[i], has[i] = state[name].reshape(-1), True
    return rows, has


def _starts(states: list[State | None], shapes: dict[str, tuple[int, ...]], starts: dict[int, State],
            weights: list[str]) -> tuple[np.ndarray, np.ndarray]:
    n = len(states)
    if not starts or not weights:
        return np.full(n, -1), np.full(n, np.nan)
    seeds = list(starts)
    cos = np.full((len(weights), n, len(seeds)), np.nan, np.float32)
    for layer, name in enumerate(weights):
        rows, has = _matrix(states, name, shapes[name])
        known = np.stack([starts[s][name].reshape(-1) for s in seeds])
        cos[layer][has] = _unit_rows(rows[has]) @ _unit_rows(known).T
    with warnings.catch_warnings():  # members without a model.pt: an all-NaN column, NaN is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(cos, axis=0)
    median = np.nan_to_num(median, nan=-1.0)
    best = median.argmax(axis=1)
    score = median[np.arange(n), best]
    start = np.where(score >= START_THRESHOLD, np.asarray(seeds)[best], -1)
    return start, np.where(score > -1.0, score, np.nan)


def _identical(states: list[State | None], shapes: dict[str, tuple[int, ...]], pairs: np.ndarray,
               chunk: int = 128) -> np.ndarray:
    """Share of identical values over the tensors both members have, for each (i, j) row of ``pairs``."""
    same = np.zeros(len(pairs), np.int64)
    total = np.zeros(len(pairs), np.int64)
    for name, shape in shapes.items():
        rows, has = _matrix(states, name, shape)
        for start in range(0, len(pairs), chunk):
            i, j = pairs[start : start + chunk, 0], pairs[start : start + chunk, 1]
            both = has[i] & has[j]
            same[start : start + chunk] += np.where(both, (rows[i] == rows[j]).sum(axis=1), 0)
            total[start : start + chunk] += np.where(both, rows.shape[1], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, same / np.maximum(total, 1), np.nan)


def compare_checkpoints(states: list[State | None], digests: list[str | None], *,
                        shapes: dict[str, tuple[int, ...]], starts: dict[int, State]) -> CheckpointPairs:
    """All pairs of ``states`` (None: no usable model.pt); ``digests`` are the files' sha256s."""
    n = len(states)
    weights = [name for name, shape in shapes.items() if len(shape) >= 2] or list(shapes)
    start, start_score = _starts(states, shapes, starts, weights)
    per_layer = np.full((len(weights), n, n), np.nan, np.float32)
    shared = (start[:, None] == start[None, :]) & (start[:, None] >= 0)
    for layer, name in enumerate(weights):
        rows, has = _matrix(states, name, shapes[name])
        deltas = None
        if shared.any():  # changes from the known start, for members that have one
            deltas = rows.copy()
            for seed in set(start[start >= 0].tolist()):
                deltas[start == seed] -= starts[seed][name].reshape(1, -1)
            deltas = _unit_rows(deltas)
        raw = _unit_rows(rows)
        gram = raw @ raw.T
        if deltas is not None:
            gram = np.where(shared, deltas @ deltas.T, gram)
        del rows, raw, deltas
        gram[~(has[:, None] & has[None, :])] = np.nan
        per_layer[layer] = gram
    with np.errstate(all="ignore"):
        valid = np.isfinite(per_layer).any(axis=0)
        similarity = np.full((n, n), np.nan)
        if valid.any():
            similarity[valid] = np.nanmedian(per_layer[:, valid], axis=0)
    np.fill_diagonal(similarity, np.nan)
    digest = np.array([d or "" for d in digests], dtype=object)
    sha_equal = (digest[:, None] == digest[None, :]) & (digest[:, None] != "")
    np.fill_diagonal(sha_equal, False)
    pairs = CheckpointPairs(sha_equal=sha_equal, similarity=similarity, identical=np.full((n, n), np.nan),
                            per_layer=per_layer, layers=weights, start=start, start_similarity=start_score)
    upper = np.triu(np.ones((n, n), bool), 1)
    # A copy is similar on the raw weights, or on the changes from a shared start: both are in similarity.
    candidates = np.argwhere(upper & ((np.nan_to_num(similarity, nan=-1) >= CANDIDATE_SIMILARITY) | sha_equal))
    if len(candidates):
        share = _identical(states, shapes, candidates)
        pairs.identical[candidates[:, 0], candidates[:, 1]] = share
        pairs.identical[candidates[:, 1], candidates[:, 0]] = share
    return pairs
