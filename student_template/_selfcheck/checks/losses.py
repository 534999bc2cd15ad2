"""Loss checks: values, gradients, SoftmaxCrossEntropy's backward and numerical stability.

TRUSTED side.  Inputs are seeded here, the student's functions run in the worker (under the
forbidden-built-in guards), and every verdict compares against a public torch oracle computed
here in float64: ``F.l1_loss``, ``F.mse_loss``, ``torch.softmax``, ``F.binary_cross_entropy``
(which clamps each log at -100), ``F.cross_entropy`` and the penalties' definitions (sums over
parameters whose name ends in "weight", no 1/2).  A function that uses a forbidden built-in
(runtime guard or static scan) fails its sub-checks.

Example
-------
>>> cases = value_cases(np.random.default_rng(0))
>>> [c.fn for c in cases][:3]
['l1_loss', 'mse_loss', 'softmax']
>>> round(float(oracle(cases[0])), 4) >= 0
True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from _selfcheck.checks.common import Budget, call, close, describe, outcome_for_failure, prerequisites
from _selfcheck.checks.outcome import ItemOutcome, SubCheck
from _selfcheck.checks.static_scan import forbidden_uses

ORACLE_NAMES = {"l1_loss": "torch.nn.functional.l1_loss", "mse_loss": "torch.nn.functional.mse_loss",
                "softmax": "torch.softmax", "binary_cross_entropy": "torch.nn.functional.binary_cross_entropy",
                "cross_entropy": "torch.nn.functional.cross_entropy",
                "SoftmaxCrossEntropy": "torch.nn.functional.cross_entropy",
                "l1_penalty": "the sum of |w| over parameters named *weight",
                "l2_penalty": "the sum of w**2 over parameters named *weight"}
PENALTY_SHAPES = {"conv.weight": (2, 1, 3, 3), "conv.bias": (2,), "fc.weight": (3, 8), "fc.bias": (3,)}


@dataclass
class Case:
    """One call of a student loss function, with what the oracle needs."""

    key: str
    fn: str
    label: str
    args: "list[np.ndarray]" = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    grad: "list[int]" = field(default_factory=list)
    upstream: "np.ndarray | None" = None
    grad_scale: float = 1.0
    gradcheck: bool = False
    model: "dict[str, np.ndarray] | None" = None


def _torch(array: np.ndarray, grad: bool = False) -> torch.Tensor:
    # torch is imported on first use, not with this module: the rubric's validation imports the checks
    # before the worker is spawned, and the grader's torch import then overlaps the worker's.
    import torch

    tensor = torch.from_numpy(np.array(array))
    if tensor.is_floating_point():
        tensor = tensor.double()
    return tensor.requires_grad_(grad)


def oracle(case: Case) -> np.ndarray:
    """The torch value of ``case`` in float64."""
    return oracle_with_grads(case)[0]


def oracle_with_grads(case: Case) -> "tuple[np.ndarray, dict[str, np.ndarray]]":
    """(value, gradients by label) of the public oracle, in float64."""
    import torch
    import torch.nn.functional as F

    if case.model is not None:
        params = {name: _torch(value, True) for name, value in case.model.items()}
        weights = [p for name, p in params.items() if name.endswith("weight")]
        value = sum((p.abs() if case.fn == "l1_penalty" else p**2).sum() for p in weights)
        value.backward()
        grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).numpy() for name, p in params.items()}
        return value.detach().numpy(), grads
    args = [_torch(a, i in case.grad) for i, a in enumerate(case.args)]
    fn = {"l1_loss": F.l1_loss, "mse_loss": F.mse_loss, "binary_cross_entropy": F.binary_cross_entropy,
          "cross_entropy": F.cross_entropy, "SoftmaxCrossEntropy": F.cross_entropy,
          "softmax": lambda x, dim=-1: torch.softmax(x, dim=dim)}[case.fn]
    value = fn(*args, **case.kwargs)
    grads = {}
    if case.grad:
        # A scalar backward() without an explicit grad tensor: passing one makes torch import
        # sympy (seconds, ~60 MB) in the grader.
        if value.dim() == 0:
            (value * case.grad_scale).backward()
        else:
            (value * _torch(case.upstream)).sum().backward()
        grads = {str(i): args[i].grad.numpy() for i in case.grad}
    return value.detach().numpy(), grads


def value_cases(rng: np.random.Generator) -> "list[Case]":
    """Seeded float64 inputs for every loss function (also used for gradients)."""
    pred, target = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    logits = rng.normal(scale=2.0, size=(6, 11))
    labels = rng.integers(0, 11, size=6).astype(np.int64)
    prob = rng.uniform(0.05, 0.95, size=8)
    binary = rng.integers(0, 2, size=8).astype(np.float64)
    params = {name: rng.normal(size=shape) for name, shape in PENALTY_SHAPES.items()}
    return [
        Case("l1", "l1_loss", "l1_loss", [pred, target], grad=[0], gradcheck=True),
        Case("mse", "mse_loss", "mse_loss", [pred, target], grad=[0], gradcheck=True),
        Case("softmax", "softmax", "softmax", [logits[:4]], grad=[0], gradcheck=True,
             upstream=rng.normal(size=(4, 11))),
        Case("softmax_dim0", "softmax", "softmax(dim=0)", [rng.normal(size=(5, 3))], kwargs={"dim": 0}),
        Case("bce", "binary_cross_entropy", "binary_cross_entropy", [prob, binary], grad=[0], gradcheck=True),
        Case("ce", "cross_entropy", "cross_entropy", [logits, labels], grad=[0], gradcheck=True),
        Case("l1_penalty", "l1_penalty", "l1_penalty", model=params, grad=[0]),
        Case("l2_penalty", "l2_penalty", "l2_penalty", model=params, grad=[0]),
    ]


def run_cases(sandbox: Any, budget: Budget, cases: "list[Case]") -> "tuple[dict[str, dict], ItemOutcome | None]":
    """Run the cases in the worker; entries by key with their arrays attached."""
    blocked = prerequisites(sandbox, budget, files=("losses.py",), modules=("losses",))
    if blocked:
        return {}, blocked
    inputs: "dict[str, np.ndarray]" = {}
    calls = []
    for case in cases:
        spec: dict = {"key": case.key, "fn": case.fn, "kwargs": case.kwargs, "grad_scale": case.grad_scale,
                      "gradcheck": case.gradcheck}
        if case.model is not None:
            spec["model"] = {}
            for name, value in case.model.items():
                inputs[f"{case.key}.{name}"] = value
                spec["model"][name] = f"{case.key}.{name}"
        else:
            spec["args"] = []
            for i, value in enumerate(case.args):
                inputs[f"{case.key}.arg{i}"] = value
                spec["args"].append(f"{case.key}.arg{i}")
            spec["requires_grad"] = case.grad
            if case.upstream is not None:
                inputs[f"{case.key}.upstream"] = case.upstream
                spec["upstream"] = f"{case.key}.upstream"
        calls.append(spec)
    result = call(sandbox, budget, "loss_calls", {"calls": calls}, inputs)
    if not result.ok:
        return {}, outcome_for_failure(result, "calling the functions of losses.py")
    entries = {}
    for entry in result.value.get("calls", []):
        if isinstance(entry, dict):
            entry = dict(entry)
            entry["arrays"] = {k: v for k, v in result.arrays.items() if k.startswith(f"{entry.get('key')}.")}
            entries[str(entry.get("key"))] = entry
    static = forbidden_uses(sandbox.source_text("losses.py") or "")
    for entry in entries.values():
        entry["static_forbidden"] = static.get(str(entry.get("fn")), []) + static.get("*", [])
    return entries, None


def problem_with(entry: "dict | None", case: Case) -> "str | None":
    """Why the call produced nothing usable (crash, forbidden built-in), or None."""
    if entry is None:
        return f"{case.label} was not run"
    static = [str(s) for s in entry.get("static_forbidden") or []]
    seen = {s.split(" (line")[0] for s in static}  # the static scan adds line numbers to the same names
    forbidden = static + [str(h) for h in entry.get("forbidden") or [] if str(h) not in seen]
    if forbidden:
        return (f"{case.fn} uses {', '.join(dict.fromkeys(forbidden))}, which the assignment forbids: write it from "
                "elementary tensor operations (exp, log, sum, max, indexing)")
    if not entry.get("ok"):
        error = entry.get("error") or {}
        where = f" (at {error['where']})" if error.get("where") else ""
        return f"{error.get('message', case.fn + ' failed')}{where}"
    return None


def value_subcheck(entry: "dict | None", case: Case, *, rtol: float, atol: float, name: "str | None" = None) -> SubCheck:
    name = name or f"{case.label} value"
    problem = problem_with(entry, case)
    if problem:
        return SubCheck(name, False, 1.0, problem)
    got = entry["arrays"].get(f"{case.key}.value")
    expected = oracle(case)
    if got is None:
        return SubCheck(name, False, 1.0, f"{case.label} returned no value")
    if close(got, expected, rtol=rtol, atol=atol):
        return SubCheck(name, True, 1.0, f"{case.label} matches {ORACLE_NAMES[case.fn]} ({describe(expected)})")
    hint = ""
    if np.size(got) != np.size(expected):
        hint = f": it returned shape {tuple(np.shape(got))}; losses are mean-reduced to a scalar"
    elif case.args and np.size(expected) == 1 and close(got, expected * case.args[0].size, rtol=rtol, atol=atol):
        hint = ": that is the sum; return the mean"
    elif case.fn == "softmax" and case.args[0].ndim == 2:
        import torch

        other = 1 if case.kwargs.get("dim", -1) in (0, -2) else 0
        if close(got, torch.softmax(_torch(case.args[0]), dim=other).numpy(), rtol=rtol, atol=atol):
            hint = ": that is the softmax over the other dimension; use the dim argument"
    return SubCheck(name, False, 1.0, f"{case.label} returned {describe(got)}, expected {describe(expected)} "
                                      f"({ORACLE_NAMES[case.fn]}){hint}")


def gradient_subcheck(entry: "dict | None", case: Case, *, rtol: float, atol: float) -> SubCheck:
    name = f"{case.label} gradient"
    problem = problem_with(entry, case)
    if problem:
        return SubCheck(name, False, 1.0, problem)
    _, expected = oracle_with_grads(case)
    grads = entry.get("grads") or {}
    for label, want in expected.items():
        got = entry["arrays"].get(grads[label]) if label in grads else None
        if got is None:
            if case.model is not None and not np.any(want):
                continue  # a bias outside the penalty's graph has no gradient, as expected
            return SubCheck(name, False, 1.0, f"{case.label}: no gradient reached the input "
                                              f"{label if case.model is not None else ''}".rstrip())
        if not close(got, want, rtol=rtol, atol=atol):
            where = f" for {label}" if case.model is not None else ""
            return SubCheck(name, False, 1.0, f"{case.label}'s gradient{where} is {describe(got)}, expected "
                                              f"{describe(want)} (autograd of {ORACLE_NAMES[case.fn]})")
    return SubCheck(name, True, 1.0, f"{case.label}'s gradient matches autograd of {ORACLE_NAMES[case.fn]}")


def gradcheck_subcheck(entry: "dict | None", case: Case) -> SubCheck:
    name = f"{case.label} gradcheck"
    problem = problem_with(entry, case)
    if problem:
        return SubCheck(name, False, 1.0, problem)
    result = entry.get("gradcheck") or {}
    if result.get("passed"):
        return SubCheck(name, True, 1.0, f"torch.autograd.gradcheck passes for {case.label} in float64")
    return SubCheck(name, False, 1.0, f"torch.autograd.gradcheck fails for {case.label} in float64: "
                                      f"{result.get('message') or 'no result'}")


def seeded_tolerances(params: dict) -> "tuple[np.random.Generator, float, float]":
    """A loss item's seeded generator and its ``rtol``/``atol`` (the loss checks' parameters, with their defaults)."""
    return np.random.default_rng(int(params.get("seed", 0))), float(params.get("rtol", 1e-4)), float(
        params.get("atol", 1e-6))


def run_values(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """Each loss and penalty against its torch oracle on seeded float64 inputs."""
    rng, rtol, atol = seeded_tolerances(params)
    cases = value_cases(rng)
    entries, blocked = run_cases(sandbox, Budget(timeout_s, sandbox), cases)
    if blocked:
        return blocked
    return ItemOutcome.from_subchecks([value_subcheck(entries.get(c.key), c, rtol=rtol, atol=atol) for c in cases])


def run_gradients(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """Gradients against autograd of the oracles, and the student's gradcheck in float64."""
    rng, rtol, atol = seeded_tolerances(params)
    cases = [c for c in value_cases(rng) if c.grad]
    entries, blocked = run_cases(sandbox, Budget(timeout_s, sandbox), cases)
    if blocked:
        return blocked
    subchecks = []
    for case in cases:
        subchecks.append(gradient_subcheck(entries.get(case.key), case, rtol=rtol, atol=atol))
        if case.gradcheck:
            subchecks.append(gradcheck_subcheck(entries.get(case.key), case))
    return ItemOutcome.from_subchecks(subchecks)
