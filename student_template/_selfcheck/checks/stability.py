"""SoftmaxCrossEntropy's hand-written backward, and stability at extreme inputs.

TRUSTED side.  The backward is compared with autograd of ``F.cross_entropy`` in float64, i.e.
``(softmax(logits) - one_hot(target)) / N`` times ``grad_output``.  Stability: ``|logits|`` up
to 1e4 (float32, where a naive ``exp`` overflows) and probabilities exactly 0 and 1 (where
``F.binary_cross_entropy`` clamps each log at -100, so the loss is finite and so must be the
gradient).

Example
-------
>>> cases = stability_cases(np.random.default_rng(0))
>>> [c.key for c in cases]
['big_softmax', 'big_ce', 'big_sce', 'bce_edges']
>>> round(float(oracle(cases[-1])), 6)  # mean of 0, 0, 100, 100 and log 2
40.138629
"""
from __future__ import annotations

from typing import Any

import numpy as np

from _selfcheck.checks.common import Budget, describe
from _selfcheck.checks.losses import (Case, gradcheck_subcheck, gradient_subcheck, oracle, problem_with, run_cases,
                                      seeded_tolerances, value_subcheck)
from _selfcheck.checks.outcome import ItemOutcome, SubCheck


def sce_cases(rng: np.random.Generator) -> "list[Case]":
    logits = rng.normal(scale=2.0, size=(6, 11))
    labels = rng.integers(0, 11, size=6).astype(np.int64)
    return [Case("sce", "SoftmaxCrossEntropy", "SoftmaxCrossEntropy", [logits, labels], grad=[0], gradcheck=True),
            Case("sce_scaled", "SoftmaxCrossEntropy", "SoftmaxCrossEntropy (loss x 2.5)", [logits, labels], grad=[0],
                 grad_scale=2.5)]


def run_softmax_ce_backward(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """Forward value, hand-written gradient, grad_output scaling, backward actually used, gradcheck."""
    rng, rtol, atol = seeded_tolerances(params)
    plain, scaled = sce_cases(rng)
    entries, blocked = run_cases(sandbox, Budget(timeout_s, sandbox), [plain, scaled])
    if blocked:
        return blocked
    entry = entries.get(plain.key)
    subchecks = [value_subcheck(entry, plain, rtol=rtol, atol=atol, name="forward value"),
                 gradient_subcheck(entry, plain, rtol=rtol, atol=atol)]
    scaled_check = gradient_subcheck(entries.get(scaled.key), scaled, rtol=rtol, atol=atol)
    scaled_check.name = "backward scales by grad_output"
    if not scaled_check.passed and "expected" in scaled_check.message:
        scaled_check.message += ": multiply your gradient by grad_output"
    subchecks.append(scaled_check)
    problem = problem_with(entry, plain)
    calls = int((entry or {}).get("backward_calls", 0))
    subchecks.append(SubCheck("hand-written backward used", problem is None and calls > 0, 1.0,
                              problem or ("SoftmaxCrossEntropy.backward computed the gradient" if calls else
                                          "SoftmaxCrossEntropy.backward was never called: define it as a "
                                          "@staticmethod backward(ctx, grad_output) returning (grad, None)")))
    subchecks.append(gradcheck_subcheck(entry, plain))
    return ItemOutcome.from_subchecks(subchecks)


def stability_cases(rng: np.random.Generator) -> "list[Case]":
    big = (rng.uniform(-1.0, 1.0, size=(4, 11)) * 1e4).astype(np.float32)
    big[0, :3] = (1e4, -1e4, 0.0)
    big[1, :] = -1e4  # all equal and hugely negative
    labels = np.array([1, 4, 7, 10], dtype=np.int64)
    prob = np.array([0.0, 1.0, 0.0, 1.0, 0.5], dtype=np.float32)
    target = np.array([0.0, 1.0, 1.0, 0.0, 1.0], dtype=np.float32)
    return [Case("big_softmax", "softmax", "softmax at |logits| up to 1e4", [big]),
            Case("big_ce", "cross_entropy", "cross_entropy at |logits| up to 1e4", [big, labels], grad=[0]),
            Case("big_sce", "SoftmaxCrossEntropy", "SoftmaxCrossEntropy at |logits| up to 1e4", [big, labels], grad=[0]),
            Case("bce_edges", "binary_cross_entropy", "binary_cross_entropy at probabilities 0 and 1", [prob, target],
                 grad=[0])]


def _finite_value_and_grad(entry: "dict | None", case: Case, *, rtol: float, atol: float) -> SubCheck:
    check = value_subcheck(entry, case, rtol=rtol, atol=atol, name=case.label)
    if not check.passed:
        got = (entry or {}).get("arrays", {}).get(f"{case.key}.value")
        if got is not None and not np.all(np.isfinite(got)):
            check.message += ": subtract the row maximum before exp (log-sum-exp) so nothing overflows"
        return check
    if case.grad:
        grad_name = ((entry or {}).get("grads") or {}).get("0")
        grad = entry["arrays"].get(grad_name) if grad_name else None
        if grad is None or not np.all(np.isfinite(grad)):
            what = "no gradient" if grad is None else f"a non-finite gradient {describe(grad)}"
            return SubCheck(case.label, False, 1.0, f"{case.label}: finite value but {what}")
    return check


def run_stability(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """Finite, correct values and finite gradients at extreme logits and probabilities."""
    rng, rtol, atol = seeded_tolerances(params)
    cases = stability_cases(rng)
    entries, blocked = run_cases(sandbox, Budget(timeout_s, sandbox), cases)
    if blocked:
        return blocked
    subchecks = [_finite_value_and_grad(entries.get(c.key), c, rtol=rtol, atol=atol) for c in cases[:3]]
    bce = cases[3]
    entry = entries.get(bce.key)
    value = value_subcheck(entry, bce, rtol=rtol, atol=atol, name="binary_cross_entropy value at 0 and 1")
    if not value.passed and "expected" in value.message:
        value.message += ": clamp each log term at -100 as torch does (log(0) would be -inf)"
    subchecks.append(value)
    problem = problem_with(entry, bce)
    grad_name = ((entry or {}).get("grads") or {}).get("0")
    grad = entry["arrays"].get(grad_name) if problem is None and grad_name else None
    finite = grad is not None and bool(np.all(np.isfinite(grad)))
    subchecks.append(SubCheck("binary_cross_entropy gradient at 0 and 1", finite, 1.0, problem or (
        "the gradient is finite at probabilities 0 and 1" if finite else
        f"the gradient at probabilities 0 and 1 is {describe(grad) if grad is not None else 'missing'}: "
        "never take log(0) (clamp the probability before the log)")))
    return ItemOutcome.from_subchecks(subchecks)
