"""The probe MLP's oracle and the plumbing the training and evaluate-mode checks share.

TRUSTED side.  The worker drives the student's train.py with a harness-owned MLP
(16 -> 24 -> ReLU -> 11, :data:`SHAPES`); its initial weights, data and mode shifts are drawn
here from a seed, and every verdict replays the weights the worker returns through this
module's float64 oracle of the same MLP.  :mod:`autograder.checks.training` and
:mod:`autograder.checks.modes` both use it.

Example
-------
>>> rng = np.random.default_rng(0)
>>> flat = flatten(init_params(rng))
>>> x, y = batch(rng, 8)
>>> loss, grad = loss_and_grad(flat, x, y)
>>> grad.shape == flat.shape == (N_PARAMS,) and loss > 0
True
"""
from __future__ import annotations

from typing import Any

import numpy as np

from _selfcheck.checks.common import Budget, prerequisites
from _selfcheck.checks.outcome import ItemOutcome

SHAPES = {"hidden.weight": (24, 16), "hidden.bias": (24,), "out.weight": (11, 24), "out.bias": (11,)}
N_PARAMS = sum(int(np.prod(shape)) for shape in SHAPES.values())


def returned_weights(result: Any, name: str, rows: "int | None" = None) -> "np.ndarray | None":
    """A returned weight vector (or ``rows`` x vector matrix) as float64, None if absent or malformed."""
    array = result.arrays.get(name)
    if array is None or array.dtype.kind != "f":
        return None
    if rows is None and array.shape != (N_PARAMS,):
        return None
    if rows is not None and (array.ndim != 2 or array.shape[1] != N_PARAMS):
        return None
    return array.astype(np.float64)


def init_params(rng: np.random.Generator) -> "dict[str, np.ndarray]":
    """Seeded float32 initial weights of the MLP, by parameter name."""
    return {name: (rng.normal(size=shape) / np.sqrt(shape[-1] if len(shape) > 1 else 24)).astype(np.float32)
            for name, shape in SHAPES.items()}


def flatten(params: "dict[str, np.ndarray]") -> np.ndarray:
    """The weights as one float64 vector, in :data:`SHAPES` order (what the worker returns)."""
    return np.concatenate([params[name].reshape(-1) for name in SHAPES]).astype(np.float64)


def batch(rng: np.random.Generator, size: int) -> "tuple[np.ndarray, np.ndarray]":
    """A seeded batch: float32 inputs (size, 1, 4, 4) and int64 labels in 0..10."""
    return rng.normal(size=(size, 1, 4, 4)).astype(np.float32), rng.integers(0, 11, size=size).astype(np.int64)


def forward(flat: np.ndarray, x: np.ndarray, requires_grad: bool = False) -> "tuple[torch.Tensor, torch.Tensor]":
    """The MLP's float64 logits at the flat weights ``flat`` for ``x``, and the weights as a tensor (for autograd)."""
    import torch  # here, not at import: the rubric's validation imports the checks before the worker starts
    import torch.nn.functional as F

    theta = torch.tensor(flat, dtype=torch.float64, requires_grad=requires_grad)
    parts, start = {}, 0
    for name, shape in SHAPES.items():
        size = int(np.prod(shape))
        parts[name] = theta[start : start + size].reshape(shape)
        start += size
    hidden = F.relu(F.linear(torch.from_numpy(x).double().flatten(1), parts["hidden.weight"], parts["hidden.bias"]))
    return F.linear(hidden, parts["out.weight"], parts["out.bias"]), theta


def mode_shifts(rng: np.random.Generator) -> "dict[str, np.ndarray]":
    """Two logit shifts of different sizes on different classes: the worker's probe model adds
    ``eval_shift`` in eval mode and ``nograd_shift`` with gradients off, so outputs tell the mode."""
    first, second = rng.choice(11, size=2, replace=False)
    eval_shift, nograd_shift = np.zeros(11, np.float32), np.zeros(11, np.float32)
    eval_shift[first] = float(rng.uniform(2.0, 3.0))
    nograd_shift[second] = float(rng.uniform(1.0, 1.8))
    return {"eval_shift": eval_shift, "nograd_shift": nograd_shift}


def loss_and_grad(flat: np.ndarray, x: np.ndarray, y: np.ndarray,
                  shift: "np.ndarray | None" = None) -> "tuple[float, np.ndarray]":
    """Mean cross-entropy of the MLP at ``flat`` (logits + ``shift``) and its gradient (float64)."""
    import torch
    import torch.nn.functional as F

    logits, theta = forward(flat, x, True)
    if shift is not None:
        logits = logits + torch.from_numpy(np.asarray(shift, dtype=np.float64))
    loss = F.cross_entropy(logits, torch.from_numpy(y))
    # autograd.grad rather than the solution's `loss.backward()` line, which assign's leak check
    # (this file is vendored into the student template) would flag as solution text.
    (grad,) = torch.autograd.grad(loss, theta)
    return float(loss.detach()), grad.numpy()


def accuracy(flat: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """The MLP's accuracy at ``flat`` on ``(x, y)``."""
    logits, _ = forward(flat, x)
    return float((logits.argmax(1).numpy() == y).mean())


def probe_inputs(params: "dict[str, np.ndarray]", **arrays: np.ndarray) -> "dict[str, np.ndarray]":
    """The worker's inputs: the initial weights as ``init.<name>``, and ``arrays`` (data, shifts)."""
    return {**{f"init.{name}": value for name, value in params.items()}, **arrays}


def start_train_item(sandbox: Any, timeout_s: float) -> "tuple[Budget, ItemOutcome | None]":
    """The item's budget, and the outcome that stops it when train.py is missing or does not import."""
    budget = Budget(timeout_s, sandbox)
    return budget, prerequisites(sandbox, budget, files=("train.py",), modules=("train",))


def entry_error(entry: dict) -> str:
    """The message of a scenario the worker reported as failed, with where it failed."""
    error = entry.get("error") or {}
    where = f" (at {error['where']})" if error.get("where") else ""
    return f"{error.get('message', 'failed')}{where}"
