"""Prediction agreement and wrong-answer agreement on the held-out notes, for every pair at once.

Models trained the same way agree a lot, and two strong models agree more than two weak ones,
so raw agreement says little.  Each pair is compared with what two *independent* models with the
same per-family behaviour would give: if model i predicts family k for a note of family y with
probability ``Q_i[y, k]`` (its row-normalised confusion matrix), independent models agree on a
note of family y with probability ``sum_k Q_i[y, k] Q_j[y, k]``.  Two statistics per pair:

* ``agreement_kappa = (observed - expected) / (1 - expected)``: agreement beyond that;
* ``wrong_excess``: among the notes both get wrong, the share where they predict the *same* wrong
  family, minus its expectation (the error-consistency signal: independent models err
  differently; a copy errs identically).  NaN below ``min_both_wrong`` shared errors.

Both become robust z-scores against the class's own distribution (median and MAD, see
:func:`robust_z`), so a class whose models are all alike does not flag everyone.  Everything is a
handful of (S x N*C) matrix products: 300 submissions x 4,096 notes takes about a second.

Example
-------
>>> labels = np.array([0, 0, 1, 1, 2, 2])
>>> predictions = np.array([[0, 1, 1, 2, 2, 0], [0, 1, 1, 2, 2, 0], [0, 0, 1, 1, 2, 1]])
>>> stats = pair_statistics(predictions, labels, classes=3, min_both_wrong=1)
>>> float(stats.agreement[0, 1]), float(stats.same_wrong[0, 1]), int(stats.both_wrong[0, 2])
(1.0, 3.0, 1)
>>> z, median, scale = robust_z(np.array([0.1, 0.12, 0.11, 0.13, 0.9]), floor=0.01)
>>> round(float(median), 2), bool(z[-1] > 10)
(0.12, True)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD x this estimates the standard deviation of a normal distribution


def robust_z(values: np.ndarray, reference: np.ndarray | None = None, *, floor: float) -> tuple[np.ndarray, float, float]:
    """``(z, median, scale)``: ``(values - median) / max(1.4826 * MAD, floor)`` of ``reference`` (default: values).

    ``floor`` keeps a tight class (MAD near 0) from turning noise into large z-scores.
    """
    ref = np.asarray(values if reference is None else reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.full(np.shape(values), np.nan), float("nan"), float("nan")
    median = float(np.median(ref))
    scale = max(MAD_TO_SIGMA * float(np.median(np.abs(ref - median))), floor)
    return (np.asarray(values, dtype=np.float64) - median) / scale, median, scale


@dataclass
class PairStats:
    agreement: np.ndarray  # (S, S) share of notes with the same predicted family
    expected_agreement: np.ndarray  # (S, S) the same for independent models with these confusion matrices
    agreement_kappa: np.ndarray  # (S, S) (agreement - expected) / (1 - expected); NaN when expected is 1
    both_wrong: np.ndarray  # (S, S) notes both got wrong
    same_wrong: np.ndarray  # (S, S) ... of which with the same wrong family
    wrong_agreement: np.ndarray  # (S, S) same_wrong / both_wrong (NaN below min_both_wrong)
    expected_wrong_agreement: np.ndarray  # (S, S) its expectation for independent models
    wrong_excess: np.ndarray  # (S, S) wrong_agreement - expected_wrong_agreement
    accuracy: np.ndarray  # (S,)
    notes: int


def _one_hot(predictions: np.ndarray, classes: int) -> np.ndarray:
    """(S, N) predictions -> (S, N * classes) float32 indicator matrix."""
    s, n = predictions.shape
    out = np.zeros((s, n, classes), np.float32)
    np.put_along_axis(out, np.clip(predictions, 0, classes - 1)[..., None], 1.0, axis=2)
    return out.reshape(s, n * classes)


def pair_statistics(predictions: np.ndarray, labels: np.ndarray, *, classes: int = 11,
                    min_both_wrong: int = 10) -> PairStats:
    """All pairwise statistics for ``predictions`` (S, N) against ``labels`` (N,)."""
    predictions = np.asarray(predictions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    s, n = predictions.shape
    onehot = _one_hot(predictions, classes)
    agree_counts = onehot @ onehot.T
    # The same indicator with each note's true family zeroed: matches there are shared *wrong* answers.
    truth = np.zeros((n, classes), np.float32)
    truth[np.arange(n), labels] = 1.0
    wrong_onehot = onehot * (1.0 - truth.reshape(1, -1))
    same_wrong = wrong_onehot @ wrong_onehot.T
    wrong = (predictions != labels[None, :]).astype(np.float32)
    both_wrong = wrong @ wrong.T
    # Per-family prediction rates Q[i, y, k] and the family sizes n_y.
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    confusion = np.zeros((s, classes, classes))
    for y in range(classes):
        if counts[y]:
            rows = predictions[:, labels == y]
            confusion[:, y] = np.stack([(rows == k).mean(axis=1) for k in range(classes)], axis=1)
    weighted = confusion * np.sqrt(counts)[None, :, None]
    expected_agree = (weighted.reshape(s, -1) @ weighted.reshape(s, -1).T) / n
    off_diagonal = weighted * (1.0 - np.eye(classes))[None]
    expected_same_wrong = off_diagonal.reshape(s, -1) @ off_diagonal.reshape(s, -1).T
    miss = (1.0 - np.einsum("syy->sy", confusion)) * np.sqrt(counts)[None, :]
    expected_both_wrong = miss @ miss.T
    agreement = agree_counts / n
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(expected_agree < 1 - 1e-9, (agreement - expected_agree) / (1 - expected_agree), np.nan)
        enough = both_wrong >= max(min_both_wrong, 1)
        wrong_rate = np.where(enough, same_wrong / np.maximum(both_wrong, 1), np.nan)
        expected_rate = np.where(expected_both_wrong > 0, expected_same_wrong / expected_both_wrong, np.nan)
    for matrix in (kappa, wrong_rate):
        np.fill_diagonal(matrix, np.nan)
    return PairStats(agreement=agreement, expected_agreement=expected_agree, agreement_kappa=kappa,
                     both_wrong=both_wrong, same_wrong=same_wrong, wrong_agreement=wrong_rate,
                     expected_wrong_agreement=expected_rate, wrong_excess=wrong_rate - expected_rate,
                     accuracy=1.0 - wrong.mean(axis=1), notes=n)
