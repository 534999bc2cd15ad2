"""The loss probe: call the student's loss functions on the grader's inputs, under the guards.

UNTRUSTED side.  One request holds many calls, each isolated: a crash in ``softmax`` does not
hide a correct ``l1_loss``.  Per call it returns the value, the gradients (``backward`` on the
value, or ``backward(upstream)`` for non-scalar outputs), the student's own
``torch.autograd.gradcheck`` result in float64, and which forbidden built-ins were attempted.

Call spec (from the grader)::

    {"key": "ce", "fn": "cross_entropy", "args": ["logits", "target"], "kwargs": {},
     "requires_grad": [0], "grad_scale": 1.0, "upstream": null, "gradcheck": true}
    {"key": "l2", "fn": "l2_penalty", "model": {"conv.weight": "pen_conv.weight", ...}}

``fn`` is a function of losses.py, or ``SoftmaxCrossEntropy`` (called as ``.apply``).
"""
from __future__ import annotations

from typing import Any

import torch

from .common import (ProbeFailure, WorkerContext, describe_exception, forbidden_zone, import_student,
                     type_name)
from .kernels import KernelBan, KernelWatch, forbidden_nodes
from .spawn_guard import no_new_tasks

GRADCHECK = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}


class _ParamTree(torch.nn.Module):
    """A module whose ``named_parameters()`` are exactly the grader's dotted names."""

    def __init__(self, params: "dict[str, torch.Tensor]") -> None:
        super().__init__()
        for dotted, value in params.items():
            owner: torch.nn.Module = self
            *parents, leaf = dotted.split(".")
            for part in parents:
                if not hasattr(owner, part):
                    owner.add_module(part, torch.nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, torch.nn.Parameter(value))


class _BackwardCounter:
    """Counts calls of a Function's ``backward`` (autograd looks it up at call time)."""

    def __init__(self, function_class: Any) -> None:
        self.function_class, self.calls = function_class, 0
        self.original = function_class.__dict__.get("backward")

    def __enter__(self) -> "_BackwardCounter":
        if isinstance(self.original, staticmethod):
            inner = self.original.__func__

            def counting(ctx: Any, *grads: Any) -> Any:
                self.calls += 1
                return inner(ctx, *grads)

            self.function_class.backward = staticmethod(counting)
        return self

    def __exit__(self, *exc: Any) -> None:
        if isinstance(self.original, staticmethod):
            self.function_class.backward = self.original


def _resolve(losses: Any, name: str) -> "tuple[Any, Any]":
    value = getattr(losses, name, None)
    if value is None:
        raise ProbeFailure("missing", f"losses.py has no {name}")
    if name == "SoftmaxCrossEntropy":
        if not (isinstance(value, type) and issubclass(value, torch.autograd.Function)):
            raise ProbeFailure("type", "SoftmaxCrossEntropy must be a subclass of torch.autograd.Function")
        return value.apply, value
    if not callable(value):
        raise ProbeFailure("type", f"losses.{name} is a {type_name(value)}, not a function")
    return value, None


def _one_call(call: dict, losses: Any, context: WorkerContext) -> dict:
    key, name = str(call["key"]), str(call["fn"])
    result: dict = {"key": key, "fn": name, "ok": False, "forbidden": []}
    try:
        fn, function_class = _resolve(losses, name)
    except ProbeFailure as failure:
        result["error"] = failure.to_dict()
        return result
    kwargs = dict(call.get("kwargs") or {})
    if "model" in call:
        module = _ParamTree({p: context.tensor(src) for p, src in dict(call["model"]).items()})
        tensors: "list[torch.Tensor]" = []
        grad_targets = list(module.named_parameters())
        arguments: "list[Any]" = [module]
    else:
        tensors = [context.tensor(src) for src in call.get("args", [])]
        for index in call.get("requires_grad", []):
            tensors[index].requires_grad_(True)
        grad_targets = [(str(i), tensors[i]) for i in call.get("requires_grad", [])]
        arguments = list(tensors)
    counter = _BackwardCounter(function_class) if function_class is not None else None
    doing = f"losses.{name}" + (".apply" if function_class is not None else "")
    known = tensors + [p for _, p in grad_targets]
    # The dispatcher watch covers the call and its backward pass (gradcheck below repeats the
    # same function many times: the Python guards still cover it, and the watch would only cost time).
    kernels = KernelWatch(known)
    # The watch is thread-local; the ban and the task guard hold for every thread of the process.
    with KernelBan() as ban, no_new_tasks() as tasks, forbidden_zone() as zone:
        try:
            with kernels:
                if counter is not None:
                    counter.__enter__()
                out = fn(*arguments, **kwargs)
                result["returned_type"] = type_name(out)
                if not isinstance(out, torch.Tensor):
                    raise ProbeFailure("type", f"{doing} returned a {type_name(out)}, expected a tensor")
                _check_kernels(out, kernels, doing, context)
                result["value_dtype"] = str(out.dtype).replace("torch.", "")
                context.save(f"{key}.value", out)
                result["value"] = f"{key}.value"
                if grad_targets:
                    if not out.requires_grad:
                        raise ProbeFailure("gradient", f"{doing} returned a tensor without a gradient: "
                                                       "the computation left the autograd graph (detach/.item()/numpy?)")
                    if out.dim() == 0:
                        (out * float(call.get("grad_scale", 1.0))).backward()
                    else:
                        upstream = context.tensor(str(call["upstream"])).to(out.dtype)
                        out.backward(upstream)
                    result["grads"] = {}
                    for label, tensor in grad_targets:
                        if tensor.grad is not None:
                            context.save(f"{key}.grad.{label}", tensor.grad)
                            result["grads"][label] = f"{key}.grad.{label}"
                result["ok"] = True
        except ProbeFailure as failure:
            result["error"] = failure.to_dict()
        except BaseException as err:
            result["error"] = describe_exception(err, doing, context).to_dict()
        finally:
            if counter is not None:
                counter.__exit__()
        if result["ok"] and call.get("gradcheck") and tensors:
            result["gradcheck"] = _gradcheck(fn, tensors, call, kwargs, doing, context)
        result["forbidden"] = list(dict.fromkeys(
            list(zone.hits) + [f"{op} (reached at the dispatcher)" for op in kernels.forbidden]
            + [hit if "thread" in hit else f"{hit} (reached at the dispatcher)" for hit in ban.hits] + list(tasks.hits)))
    if counter is not None:
        result["backward_calls"] = counter.calls
    return result


def _check_kernels(out: torch.Tensor, kernels: KernelWatch, doing: str, context: WorkerContext) -> None:
    """Fail a result that the dispatcher did not see being made, or whose graph holds a forbidden node."""
    nodes = forbidden_nodes(out)
    if nodes:
        kernels.forbidden.extend(f"{node} (in the autograd graph)" for node in nodes)
        raise ProbeFailure("forbidden", f"{doing}: its result's autograd graph holds {', '.join(nodes)}: a built-in "
                                        "loss or softmax ran; write it from elementary tensor operations")
    if kernels.produced_outside(out):
        kernels.forbidden.append("a result computed outside the dispatcher's view")
        raise ProbeFailure("forbidden", f"{doing} returned a tensor that no operation the grader could observe "
                                        "produced (was torch's dispatch disabled?): compute it with ordinary "
                                        "tensor operations")
    watcher = getattr(context, "watcher", None)
    if kernels.unknown_inputs and watcher is not None:
        watcher.note("dispatch", f"{doing} used {kernels.unknown_inputs} tensor(s) that no operation the grader saw "
                                 "had produced (tensors made from Python data or at import time, or dispatch bypassed)")


def _gradcheck(fn: Any, tensors: "list[torch.Tensor]", call: dict, kwargs: dict, doing: str,
               context: WorkerContext) -> dict:
    """The student's function through ``torch.autograd.gradcheck`` in float64."""
    wrt = [int(i) for i in call.get("requires_grad", [])]
    base = [t.detach().double() if t.is_floating_point() else t.detach() for t in tensors]
    inputs = tuple(base[i].clone().requires_grad_(True) for i in wrt)

    def wrapped(*variables: torch.Tensor) -> torch.Tensor:
        args = list(base)
        for i, variable in zip(wrt, variables):
            args[i] = variable
        return fn(*args, **kwargs)

    from torch.autograd.gradcheck import GradcheckError

    try:
        passed = bool(torch.autograd.gradcheck(wrapped, inputs, raise_exception=True, **GRADCHECK))
        return {"passed": passed, "message": ""}
    except GradcheckError as err:
        return {"passed": False, "message": " ".join(str(err).split())[:300]}
    except BaseException as err:
        return {"passed": False, "message": describe_exception(err, f"gradcheck of {doing}", context).message}


def probe_loss_calls(args: dict, context: WorkerContext) -> dict:
    """Run every call in ``args["calls"]`` against losses.py; one result per call."""
    with no_new_tasks():  # what losses.py starts at import would run outside the probes' guards
        losses = import_student("losses", context)
    return {"calls": [_one_call(call, losses, context) for call in list(args.get("calls", []))[:100]]}
