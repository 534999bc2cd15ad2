"""What gets flagged: the pair signals side by side, their class-relative z-scores, and the rules.

A pair is flagged when any of these holds (thresholds in :class:`Thresholds`):

* ``identical-checkpoint``: the two ``model.pt`` files are byte-identical;
* ``similar-weights``: median per-layer cosine >= ``weight_similarity`` for a pair with no shared
  known start; for a pair that starts from the same known initial weights (the pipeline's seed),
  a robust z >= ``z`` of the cosine of their *changes* among all pairs sharing that start;
* ``agreement`` / ``same-errors``: robust z >= ``z`` of the agreement beyond chance, or of the
  wrong-answer agreement, against the pairs of the same kind (no shared start, or the same one);
* ``code:<file>``: copydetect similarity >= ``code_similarity`` *and* robust z >= ``code_z``
  within that file's class distribution (a file everyone writes alike is not evidence).

Pairs sharing a known start are compared only with each other (they are alike by
construction); when fewer than ``min_reference_pairs`` exist, they are not flagged on weights or
predictions, and a note says so.  Nothing here changes a score.

Example
-------
>>> values = np.array([[np.nan, 0.1, 0.9], [0.1, np.nan, 0.12], [0.9, 0.12, np.nan]])
>>> z, stats = stratified_z(values, np.full((3, 3), -1), floor=0.05, min_pairs=2)
>>> round(float(z[0, 2]), 1), stats[-1]["pairs"]
(15.6, 3)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from autograder.instructor.class_integrity.agreement import PairStats, robust_z
from autograder.instructor.class_integrity.checkpoints import CheckpointPairs
from autograder.instructor.class_integrity.code_similarity import FileSimilarity


@dataclass(frozen=True)
class Thresholds:
    weight_similarity: float = 0.5  # median per-layer cosine; different seeds ~0.0, 1 epoch fine-tuned ~0.99
    z: float = 5.0  # robust z-score (MADs scaled to sigma) for predictions and shared-start weights
    code_similarity: float = 0.6  # share of each file's own fingerprints found in the other's (both ways)
    code_z: float = 3.0  # robust z-score within the file's class distribution
    min_both_wrong: int = 10  # notes both got wrong, before wrong-answer agreement means anything
    agreement_floor: float = 0.02  # smallest scale for prediction z-scores (kappa units)
    weight_floor: float = 0.02  # smallest scale for shared-start weight z-scores (cosine units)
    code_floor: float = 0.05  # smallest scale for code z-scores (similarity units)
    min_reference_pairs: int = 10  # fewest comparable pairs for a class-relative z-score

    def as_dict(self) -> dict:
        return asdict(self)


def _embed(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    full = np.full((n, n), np.nan)
    full[np.ix_(index, index)] = values
    return full


def stratified_z(values: np.ndarray, stratum: np.ndarray, *, floor: float, min_pairs: int) -> tuple[np.ndarray, dict]:
    """Robust z of each pair against the pairs of its stratum (-1: no shared start; s: start s).

    Returns the (S, S) z-scores (NaN for strata with fewer than ``min_pairs`` finite pairs) and
    ``{stratum: {"pairs", "median", "scale"}}``.
    """
    upper = np.triu(np.ones(values.shape, bool), 1)
    z = np.full(values.shape, np.nan)
    stats = {}
    for s in np.unique(stratum[upper]) if upper.any() else []:
        members = upper & (stratum == s) & np.isfinite(values)
        count = int(members.sum())
        entry = {"pairs": count, "median": None, "scale": None}
        if count >= min_pairs:
            scores, median, scale = robust_z(values[members], floor=floor)
            z[members] = scores
            entry.update(median=median, scale=scale)
        stats[int(s)] = entry
    z = np.where(np.isnan(z), z.T, z)
    return z, stats


@dataclass
class Signals:
    """Every pair signal as an (S, S) matrix over the members (NaN: not measurable)."""

    checkpoints: CheckpointPairs
    stratum: np.ndarray  # (S, S) int: shared known start seed, -1 otherwise
    agreement: np.ndarray
    expected_agreement: np.ndarray
    agreement_kappa: np.ndarray
    agreement_z: np.ndarray
    both_wrong: np.ndarray
    wrong_agreement: np.ndarray
    expected_wrong_agreement: np.ndarray
    wrong_z: np.ndarray
    weight_z: np.ndarray
    code: dict[str, FileSimilarity]
    code_z: dict[str, np.ndarray]
    accuracy: np.ndarray  # (S,) held-out accuracy of the logits used here (NaN: none)
    distributions: dict = field(default_factory=dict)  # what each z-score was relative to
    notes: list[str] = field(default_factory=list)


def build_signals(*, n: int, logits_index: np.ndarray, stats: PairStats | None, checkpoints: CheckpointPairs,
                  code: dict[str, FileSimilarity], thresholds: Thresholds) -> Signals:
    """Put the three analyses on one (S, S) grid and compute their class-relative z-scores."""
    t = thresholds
    start = checkpoints.start
    stratum = np.where(checkpoints.shared_start, start[:, None], -1)
    if stats is not None and len(logits_index):
        embed = {name: _embed(getattr(stats, name), logits_index, n) for name in
                 ("agreement", "expected_agreement", "agreement_kappa", "both_wrong", "wrong_agreement",
                  "expected_wrong_agreement", "wrong_excess")}
        accuracy = np.full(n, np.nan)
        accuracy[logits_index] = stats.accuracy
    else:
        embed = {name: np.full((n, n), np.nan) for name in
                 ("agreement", "expected_agreement", "agreement_kappa", "both_wrong", "wrong_agreement",
                  "expected_wrong_agreement", "wrong_excess")}
        accuracy = np.full(n, np.nan)
    agreement_z, agreement_dist = stratified_z(embed["agreement_kappa"], stratum, floor=t.agreement_floor,
                                               min_pairs=t.min_reference_pairs)
    wrong_z, wrong_dist = stratified_z(embed["wrong_excess"], stratum, floor=t.agreement_floor,
                                       min_pairs=t.min_reference_pairs)
    shared_only = np.where(checkpoints.shared_start, checkpoints.similarity, np.nan)
    weight_z, weight_dist = stratified_z(shared_only, stratum, floor=t.weight_floor, min_pairs=t.min_reference_pairs)
    code_z, code_dist = {}, {}
    for name, sims in code.items():
        code_z[name], dist = stratified_z(sims.similarity, np.full((n, n), -1), floor=t.code_floor,
                                          min_pairs=t.min_reference_pairs)
        code_dist[name] = dist.get(-1, {"pairs": 0, "median": None, "scale": None})
    notes = []
    for seed, entry in sorted(weight_dist.items()):
        if seed < 0:
            continue
        who = int((start == seed).sum())
        if entry["median"] is None:
            notes.append(f"{who} submissions start from the initial weights of seed {seed} (the pipeline's --seed): "
                         f"alike by construction, and with {entry['pairs']} such pair(s) (fewer than "
                         f"{t.min_reference_pairs}) too few to compare among themselves, so their weights and "
                         "predictions are not flagged (identical files still are)")
        else:
            notes.append(f"{who} submissions start from the initial weights of seed {seed} (the pipeline's --seed): "
                         f"their {entry['pairs']} pairs are compared among themselves, on the change from that start")
    return Signals(checkpoints=checkpoints, stratum=stratum, agreement=embed["agreement"],
                   expected_agreement=embed["expected_agreement"], agreement_kappa=embed["agreement_kappa"],
                   agreement_z=agreement_z, both_wrong=embed["both_wrong"], wrong_agreement=embed["wrong_agreement"],
                   expected_wrong_agreement=embed["expected_wrong_agreement"], wrong_z=wrong_z, weight_z=weight_z,
                   code=code, code_z=code_z, accuracy=accuracy,
                   distributions={"agreement": agreement_dist, "same_errors": wrong_dist, "shared_start_weights": weight_dist,
                                  "code": code_dist},
                   notes=notes)


def pair_flags(signals: Signals, thresholds: Thresholds) -> dict[tuple[int, int], list[str]]:
    """``{(i, j): [kinds]}`` for every flagged pair, i < j."""
    t = thresholds
    ck = signals.checkpoints
    n = len(ck.start)
    upper = np.triu(np.ones((n, n), bool), 1)
    ge = lambda m, v: np.nan_to_num(m, nan=-np.inf) >= v  # noqa: E731 -- NaN never passes
    rules = {
        "identical-checkpoint": ck.sha_equal,
        "similar-weights": ~ck.sha_equal & ((~ck.shared_start & ge(ck.similarity, t.weight_similarity))
                                            | (ck.shared_start & ge(signals.weight_z, t.z))),
        "agreement": ge(signals.agreement_z, t.z),
        "same-errors": ge(signals.wrong_z, t.z),
    }
    for name, sims in signals.code.items():
        rules[f"code:{name}"] = ge(sims.similarity, t.code_similarity) & ge(signals.code_z[name], t.code_z)
    flagged: dict[tuple[int, int], list[str]] = {}
    for kind, matrix in rules.items():
        for i, j in np.argwhere(upper & matrix):
            flagged.setdefault((int(i), int(j)), []).append(kind)
    return flagged
