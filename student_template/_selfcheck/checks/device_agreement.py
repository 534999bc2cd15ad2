"""GPU held-out logits, checked against the CPU before they count.

TRUSTED side.  On a GPU node (``notegrade regrade --slurm --gpus 1``) the worker computes the
held-out logits with CUDA: cuDNN's kernels differ from the CPU's in the last bits, so a note whose
two best logits are nearly tied can flip.  The rubric allows that only within a tolerance: the
``heldout_accuracy`` item's ``gpu_min_agreement`` (default 0.995: the GPU's argmax must agree with
the CPU's on at least 99.5% of the notes).  :func:`cross_check_on_cpu` re-runs
``gpu_verify_notes`` evenly spaced held-out notes (default 512; 0 = all) on the CPU in the same
worker: at or above the tolerance the GPU logits are graded; below it, the whole held-out set is
evaluated on the CPU and graded from there, so a grade never depends on the GPU.  The item's data
then says ``device`` ("cpu" | "cuda", copied to results.json's ``extra_data["heldout_device"]``),
``gpu_agreement`` and ``gpu_verified_notes``.

Example
-------
>>> a = np.eye(11, dtype=np.float32)[[0, 1, 2, 3]]
>>> b = a.copy(); b[3] = np.eye(11)[4]
>>> argmax_agreement(a, b)
0.75
>>> verification_indices(10, 4).tolist()
[0, 3, 6, 9]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from _selfcheck.checks.common import Budget, call

DEFAULT_MIN_AGREEMENT = 0.995
DEFAULT_VERIFY_NOTES = 512


def argmax_agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Share of rows whose argmax is the same in both (1.0 for no rows)."""
    if len(first) == 0:
        return 1.0
    return float(np.mean(np.argmax(first, axis=1) == np.argmax(second, axis=1)))


def verification_indices(n: int, count: int) -> np.ndarray:
    """``count`` evenly spaced note indices of ``n`` (all of them when ``count`` is 0 or >= n)."""
    if count <= 0 or count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def _cpu_logits(sandbox: Any, budget: Budget, features: np.ndarray, name: str, batch_size: int,
                checkpoint: "tuple[dict, dict]") -> "np.ndarray | None":
    shared = sandbox.share_input(name, features)
    args, inputs = checkpoint  # the grader's verified model.pt (autograder/checks/checkpoint.py)
    result = call(sandbox, budget, "heldout_logits", {"batch_size": batch_size, "device": "cpu", **args},
                  {"features": shared, **inputs})
    logits = result.arrays.get("logits") if result.ok else None
    if logits is None or logits.shape != (len(features), 11) or not np.isfinite(logits).all():
        return None
    return logits


def cross_check_on_cpu(sandbox: Any, budget: Budget, features: np.ndarray, logits: np.ndarray, device: str,
                       params: dict, checkpoint: "tuple[dict, dict]" = ({}, {})) -> "tuple[np.ndarray, dict]":
    """The logits to grade and what the item's data records about the device.

    ``device`` is where ``logits`` were computed (the probe's answer).  CPU logits pass unchanged.
    ``checkpoint``: the verified model.pt's probe args and inputs, sent with every re-run.
    """
    if device != "cuda":
        return logits, {"device": "cpu"}
    minimum = float(params.get("gpu_min_agreement", DEFAULT_MIN_AGREEMENT))
    batch_size = int(params.get("batch_size", 64))
    picked = verification_indices(len(features), int(params.get("gpu_verify_notes", DEFAULT_VERIFY_NOTES)))
    sample = _cpu_logits(sandbox, budget, np.asarray(features[picked]), "heldout_verify", batch_size, checkpoint)
    if sample is None:  # the CPU re-run failed or ran out of time: the GPU's answer is all there is
        return logits, {"device": "cuda", "gpu_agreement": None, "gpu_verified_notes": 0}
    agreement = argmax_agreement(logits[picked], sample)
    info = {"gpu_agreement": agreement, "gpu_verified_notes": int(len(picked))}
    if agreement >= minimum:
        return logits, {"device": "cuda", **info}
    everything = sample if len(picked) == len(features) else \
        _cpu_logits(sandbox, budget, np.asarray(features), "heldout_features", batch_size, checkpoint)
    if everything is None:
        return logits, {"device": "cuda", **info}
    return everything.astype(logits.dtype, copy=False), {"device": "cpu", **info}
