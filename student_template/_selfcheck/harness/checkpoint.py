"""The verified checkpoint inside the worker: tensors from the grader, loaded into the student's ``NoteCNN``.

UNTRUSTED side.  The worker never opens ``model.pt``: the grader reads and verifies it
(``autograder/checks/checkpoint.py``: weights_only, the budget, the ``module.`` prefix) and sends
its tensors as ``.npy`` inputs ``checkpoint_0``, ``checkpoint_1``, ... with their keys in
``args["checkpoint_keys"]``.  Here they go into a fresh ``NoteCNN()``; a mismatch is reported key
by key (missing, unexpected, wrong shape), never as PyTorch's truncated error text.

Probe ``checkpoint_forward``: load, then one forward pass on a small synthetic batch.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .common import ProbeFailure, WorkerContext, describe_exception, type_name

MAX_LISTED = 6


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _listed(items: "list[str]") -> str:
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def mismatch(expected: "dict[str, Any]", state: "dict[str, Any]") -> "str | None":
    """Why ``state`` does not fit a model whose ``state_dict()`` is ``expected`` (shapes), or None."""
    missing = [f"{k} {_shape(v.shape)}" for k, v in expected.items() if k not in state]
    unexpected = [f"{k} {_shape(v.shape)}" for k, v in state.items() if k not in expected]
    shapes = [f"{k} is {_shape(state[k].shape)} in model.pt but {_shape(v.shape)} in your NoteCNN"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = ([f"your NoteCNN has {_listed(missing)}, which model.pt lacks"] if missing else []) + \
        ([f"model.pt has {_listed(unexpected)}, which your NoteCNN lacks"] if unexpected else []) + \
        ([_listed(shapes)] if shapes else [])
    if not parts:
        return None
    return ("model.pt does not fit your NoteCNN (was it trained with another version of model.py?): "
            + "; ".join(parts))


def verified_state(args: dict, context: WorkerContext) -> "dict[str, torch.Tensor]":
    """The grader's verified tensors, by key."""
    keys, shapes = args.get("checkpoint_keys"), args.get("checkpoint_shapes")
    if not isinstance(keys, list) or not isinstance(shapes, list) or len(keys) != len(shapes):
        raise ProbeFailure("harness", "the grader sent no checkpoint")
    return {str(key): torch.from_numpy(np.array(context.load(f"checkpoint_{i}")).reshape([int(s) for s in shape]))
            for i, (key, shape) in enumerate(zip(keys, shapes))}


def load_model(args: dict, context: WorkerContext, new_model: Callable[[dict, WorkerContext], torch.nn.Module]
               ) -> torch.nn.Module:
    """A fresh ``NoteCNN()`` holding the verified checkpoint (raises :class:`ProbeFailure`)."""
    state = verified_state(args, context)
    model = new_model(args, context)
    try:
        expected = model.state_dict()
    except BaseException as err:
        raise describe_exception(err, "NoteCNN().state_dict()", context) from None
    problem = mismatch(expected, state)
    if problem:
        raise ProbeFailure("checkpoint", problem)
    try:
        model.load_state_dict(state, strict=True)
    except BaseException as err:
        raise describe_exception(err, "loading model.pt into NoteCNN", context) from None
    return model


def probe_checkpoint_forward(args: dict, context: WorkerContext,
                             new_model: Callable[[dict, WorkerContext], torch.nn.Module]) -> dict:
    """Load the verified checkpoint and run ``forward`` on ``batch_size`` synthetic notes."""
    model = load_model(args, context, new_model)
    n = max(1, int(args.get("batch_size", 4)))
    x = torch.randn(n, 1, 64, 64, generator=torch.Generator().manual_seed(int(args.get("seed", 0))))
    model.train(False)
    try:
        with torch.set_grad_enabled(False):
            out = model(x)
    except BaseException as err:
        raise describe_exception(err, f"NoteCNN.forward with model.pt loaded, on a batch of {n}", context) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, 11) or not out.is_floating_point():
        got = f"shape {tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type_name(out)
        raise ProbeFailure("shape", f"with model.pt loaded, NoteCNN returned {got} for a batch of {n}; expected float "
                                    f"logits of shape ({n}, 11)")
    return {"shape": list(out.shape), "dtype": str(out.dtype).replace("torch.", "")}
