"""Forbidden built-ins seen where they run: at the dispatcher, and in the autograd graph.

UNTRUSTED side.  The Python guards in ``common.py`` wrap public names (``F.cross_entropy`` ...),
but a wrapper can be stepped around (a closure cell, ``torch.ops.aten``, a name computed at run
time).  Whatever the route, the built-in loss and softmax *kernels* pass through the dispatcher,
so while a student loss function runs (forward and backward) a
``torch.utils._python_dispatch.TorchDispatchMode`` records every ATen operator it reaches and
refuses the forbidden ones (:data:`FORBIDDEN_OPS`).  The mode is thread-local, so while a loss probe runs :class:`KernelBan` also refuses the same
kernels process-wide (every thread, native ones included), through ``torch.library``
registrations that are removed again afterwards.  Two more observations cover the ways around
the mode itself:

- the returned tensor must come out of an operator the mode saw (a result computed with Python
  dispatch disabled, ``torch._C._DisableTorchDispatch``, did not; one rebuilt from Python data
  with ``torch.tensor(...)`` was not computed either: such tensors stay unknown);
- the autograd graph behind the result must hold no forbidden backward node
  (:data:`FORBIDDEN_NODES`: ``LogSoftmaxBackward0`` ...), however the forward got there.

Example
-------
>>> x = torch.randn(2, 3, requires_grad=True)
>>> with KernelWatch([x]) as watch:
...     e = (x - x.amax(1, keepdim=True)).exp()
...     y = e / e.sum(1, keepdim=True)
>>> watch.forbidden, watch.produced_outside(y), forbidden_nodes(y)
([], False, [])
>>> with KernelWatch([x]) as watch:
...     try:
...         torch.ops.aten._log_softmax(x, 1, False)
...     except ForbiddenKernel as err:
...         print(err)
aten::_log_softmax is forbidden in losses.py: write it from elementary tensor operations
>>> forbidden_nodes(torch.log_softmax(x, 1))
['LogSoftmaxBackward0']
>>> import threading
>>> def elsewhere():
...     try:
...         torch.ops.aten._log_softmax(x, 1, False)
...     except ForbiddenKernel:
...         pass
>>> with KernelBan() as ban:
...     worker = threading.Thread(target=elsewhere); worker.start(); worker.join()
>>> ban.hits
['aten::_log_softmax (on a thread the submission started)']
>>> torch.log_softmax(x, 1).shape  # the kernels are back once the ban ends
torch.Size([2, 3])
"""
from __future__ import annotations

import threading
import warnings
import weakref
from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ATen operators a hand-written loss never needs (their overloads included).
FORBIDDEN_OPS = frozenset({
    "aten::_softmax", "aten::softmax", "aten::_log_softmax", "aten::log_softmax", "aten::special_softmax",
    "aten::special_log_softmax", "aten::_softmax_backward_data", "aten::_log_softmax_backward_data",
    "aten::logsumexp", "aten::special_logsumexp", "aten::cross_entropy_loss", "aten::nll_loss", "aten::nll_loss_nd",
    "aten::nll_loss_forward", "aten::nll_loss2d", "aten::nll_loss2d_forward", "aten::nll_loss_backward",
    "aten::nll_loss2d_backward", "aten::binary_cross_entropy", "aten::binary_cross_entropy_backward",
    "aten::binary_cross_entropy_with_logits", "aten::mse_loss", "aten::mse_loss_backward", "aten::l1_loss",
    "aten::smooth_l1_loss", "aten::smooth_l1_loss_backward", "aten::huber_loss", "aten::huber_loss_backward",
    "aten::kl_div", "aten::soft_margin_loss", "aten::multi_margin_loss", "aten::multilabel_margin_loss_forward",
    "aten::poisson_nll_loss", "aten::_masked_softmax",
})
FORBIDDEN_NODES = frozenset({
    "SoftmaxBackward0", "LogSoftmaxBackward0", "LogsumexpBackward0", "NllLossBackward0", "NllLoss2DBackward0",
    "BinaryCrossEntropyBackward0", "BinaryCrossEntropyWithLogitsBackward0", "MseLossBackward0", "L1LossBackward0",
    "SmoothL1LossBackward0", "HuberLossBackward0", "KlDivBackward0", "SoftMarginLossBackward0",
    "MultiMarginLossBackward0", "MultilabelMarginLossBackward0", "MaskedSoftmaxBackward0",
})
MAX_NODES = 20000
# Operators that turn Python data into a tensor (``torch.tensor([...])``): their output was not
# computed by anything the watch saw, so it stays unknown.
LIFTS = frozenset({"aten::lift_fresh", "aten::lift", "aten::lift_fresh_copy"})
# Where KernelBan registers its refusals: the backends a student tensor can live on, and the
# composite kernels (ops such as aten::cross_entropy_loss that decompose before any backend).
BAN_KEYS = ("CPU", "CUDA", "CompositeExplicitAutograd", "CompositeImplicitAutograd")


class ForbiddenKernel(Exception):
    """Raised when a forbidden ATen operator is dispatched inside a :class:`KernelWatch`."""


class KernelWatch(TorchDispatchMode):
    """Records the ATen operators dispatched inside it; refuses :data:`FORBIDDEN_OPS`.

    ``known``: tensors that exist before the call (the grader's inputs, a module's parameters).
    ``forbidden`` lists the refused operators; :meth:`produced_outside` says whether a tensor came
    from somewhere the mode did not see.
    """

    def __init__(self, known: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.forbidden: "list[str]" = []
        self.ops: "set[str]" = set()
        # id -> tensor, weakly: a dead tensor's id leaves the table (so a reused id is never mistaken
        # for it), and the watch keeps nothing alive (gradcheck-sized loops would hold every output).
        self._known: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()
        for tensor in known:
            if isinstance(tensor, torch.Tensor):
                self._known[id(tensor)] = tensor
        self.unknown_inputs = 0  # tensor arguments nobody saw being made (constants from import time, or worse)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: "dict | None" = None) -> Any:
        name = func._schema.name
        if name in LIFTS:
            return func(*args, **(kwargs or {}))  # data from Python: neither an input nor a result we saw made
        if name in FORBIDDEN_OPS:
            if name not in self.forbidden:
                self.forbidden.append(name)
            raise ForbiddenKernel(f"{name} is forbidden in losses.py: write it from elementary tensor operations")
        self.ops.add(name)
        kwargs = kwargs or {}
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and id(value) not in self._known:
                self.unknown_inputs += 1  # 0-dimensional ones too: a loss value rebuilt from Python is one
        out = func(*args, **kwargs)
        for value in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(value, torch.Tensor):
                self._known[id(value)] = value
        return out

    def produced_outside(self, value: Any) -> bool:
        """True when ``value`` is a tensor that no operator inside the mode produced (nor an input)."""
        return isinstance(value, torch.Tensor) and id(value) not in self._known


class KernelBan:
    """Context manager: :data:`FORBIDDEN_OPS` refused on every thread of the process while it is active.

    ``hits`` lists what was refused, marked when it ran on a thread other than the one that
    entered the ban.  The registrations go away on exit, so torch's own kernels serve the grader's
    oracles and the next probes unchanged.
    """

    def __init__(self) -> None:
        self.hits: "list[str]" = []
        self._library: Any = None
        self._owner = threading.get_ident()

    def _refusal(self, name: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            where = "" if threading.get_ident() == self._owner else " (on a thread the submission started)"
            if name + where not in self.hits:
                self.hits.append(name + where)
            raise ForbiddenKernel(f"{name} is forbidden in losses.py: write it from elementary tensor operations")
        return refuse

    def __enter__(self) -> "KernelBan":
        self._owner = threading.get_ident()
        self._library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
            for name in sorted(FORBIDDEN_OPS):
                packet = getattr(torch.ops.aten, name.split("::", 1)[1], None)
                for overload in (packet.overloads() if packet is not None else ()):
                    qualified = packet.__name__.split(".")[-1] + ("" if overload == "default" else f".{overload}")
                    for key in BAN_KEYS:
                        try:
                            self._library.impl(qualified, self._refusal(name), key)
                        except (RuntimeError, ValueError):
                            pass  # a key this build does not have for this operator
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._library is not None:
            self._library._destroy()
            self._library = None


def forbidden_nodes(value: Any) -> "list[str]":
    """Forbidden backward nodes in the autograd graph behind ``value`` (empty for a non-tensor)."""
    if not isinstance(value, torch.Tensor) or value.grad_fn is None:
        return []
    found: "list[str]" = []
    seen: "set[int]" = set()
    stack = [value.grad_fn]
    while stack and len(seen) < MAX_NODES:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        name = type(node).__name__
        if name in FORBIDDEN_NODES and name not in found:
            found.append(name)
        stack.extend(next_node for next_node, _ in getattr(node, "next_functions", ()) or ())
    return found
