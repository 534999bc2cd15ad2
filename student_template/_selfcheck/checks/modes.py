"""evaluate's modes, decided from what evaluate returns, not from a record the worker keeps.

TRUSTED side.  The worker's probe model (``HarnessMLP`` with mode shifts) adds ``eval_shift`` to
its logits in eval mode and ``nograd_shift`` when gradients are off; both are drawn here, per
run.  So the loss ``evaluate`` returns is a fingerprint of the modes each batch ran in: this
check recomputes the loss of every combination (2 batches x {train, eval} x {grad, no grad}, and
the usual aggregation mistakes) with its own oracle and finds the one that was returned.  Whether
the model was left in train or eval mode shows in one more forward the worker runs afterwards,
and "weights unchanged" compares the returned weights.  Only when the returned numbers match no
combination at all does the verdict fall back to the worker's record (``seen``), and says so.

The loss and accuracy must be the model's in eval mode (what evaluate is for: with dropout or
BatchNorm, train mode gives other numbers), so forgetting ``model.eval()`` also fails them, with
the same advice.  Gradients change no number, so the expected values keep the grad mode found.
Weights (why a mistake costs what it does, see ``notegrade calibrate``): eval mode 3, no
gradients 2 (it costs memory and time, not correctness), each other sub-check 1.

Example
-------
>>> rng = np.random.default_rng(0)
>>> shifts = mode_shifts(rng)
>>> sorted(shifts), shifts["eval_shift"].shape
(['eval_shift', 'nograd_shift'], (11,))
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from _selfcheck.checks.common import close, describe, outcome_for_failure
from _selfcheck.checks.fit_probes import (batch, entry_error, flatten, forward, init_params, mode_shifts,
                                          probe_inputs, returned_weights, start_train_item)
from _selfcheck.checks.outcome import ItemOutcome, SubCheck

MODES = tuple(itertools.product((True, False), (True, False)))  # (training, grad enabled)
EVAL_WEIGHT, NO_GRAD_WEIGHT = 3.0, 2.0


def _logits(flat: np.ndarray, x: np.ndarray, shifts: dict, training: bool, grad: bool) -> np.ndarray:
    logits, _ = forward(flat, x)
    out = logits.detach().numpy()
    if not training:
        out = out + shifts["eval_shift"]
    if not grad:
        out = out + shifts["nograd_shift"]
    return out


def _ce(logits: np.ndarray, y: np.ndarray) -> "tuple[float, float]":
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean()), float((logits.argmax(1) == y).mean())


def candidates(flat: np.ndarray, batches: list, shifts: dict) -> "list[dict]":
    """Every per-batch mode combination with its loss (per example, batch means, sum) and accuracy."""
    per_batch = [{mode: _ce(_logits(flat, x, shifts, *mode), y) for mode in MODES} for x, y in batches]
    sizes = [len(y) for _, y in batches]
    found = []
    for combo in itertools.product(MODES, repeat=len(batches)):
        losses = [per_batch[i][mode][0] for i, mode in enumerate(combo)]
        correct = sum(per_batch[i][mode][1] * sizes[i] for i, mode in enumerate(combo))
        found.append({"modes": combo, "mean": float(np.dot(losses, sizes) / sum(sizes)),
                      "batch_means": float(np.mean(losses)), "sum": float(np.dot(losses, sizes)),
                      "accuracy": correct / sum(sizes)})
    return found


def _decide(returned: Any, found: "list[dict]") -> "tuple[list[dict], str]":
    """The combinations the returned numbers fit, and what they fit by (mean/batch_means/sum/accuracy)."""
    loss = returned.get("loss") if isinstance(returned, dict) else None
    acc = returned.get("accuracy") if isinstance(returned, dict) else None
    for key in ("mean", "batch_means", "sum"):
        if isinstance(loss, float):
            fits = [c for c in found if close(loss, c[key], rtol=1e-4, atol=1e-6)]
            if fits:
                return fits, key
    if isinstance(acc, float):
        fits = [c for c in found if close(acc, c["accuracy"], rtol=1e-6, atol=1e-6)]
        if fits:
            return fits, "accuracy"
    return [], ""


def _unanimous(fits: "list[dict]", index: int) -> "bool | None":
    """True/False when every fitting combination agrees that all batches had mode ``index`` off, else None."""
    verdicts = {all(not mode[index] for mode in c["modes"]) for c in fits}
    return verdicts.pop() if len(verdicts) == 1 else None


def _after_mode(result: Any, name: str, flat: np.ndarray, x: np.ndarray, shifts: dict) -> "bool | None":
    """Whether the forward after evaluate ran in train mode (gradients off), from its logits; None if unknown."""
    after = result.arrays.get(f"{name}.after")
    if after is None or after.shape != (len(x), 11):
        return None
    for training in (True, False):
        if close(after, _logits(flat, x, shifts, training, False), rtol=1e-4, atol=1e-5):
            return training
    return None


def _in_eval_mode(combination: dict, found: "list[dict]") -> dict:
    """The candidate with ``combination``'s grad modes and eval mode in every batch (what evaluate must report)."""
    modes = tuple((False, grad) for _, grad in combination["modes"])
    return next(c for c in found if c["modes"] == modes)


def run_evaluate_modes(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """evaluate: eval mode, no grad, weights untouched, mode restored, per-example loss and accuracy."""
    budget, blocked = start_train_item(sandbox, timeout_s)
    if blocked:
        return blocked
    rng = np.random.default_rng(int(params.get("seed", 0)))
    init = init_params(rng)
    (x1, y1), (x2, y2) = batch(rng, 5), batch(rng, 3)
    shifts = mode_shifts(rng)
    result = sandbox.call("evaluate_modes", {}, timeout_s=budget.left(),
                          inputs=probe_inputs(init, x1=x1, y1=y1, x2=x2, y2=y2, **shifts))
    if not result.ok:
        return outcome_for_failure(result, "evaluate")
    from_train, from_eval = result.value.get("from_train") or {}, result.value.get("from_eval") or {}
    if from_train.get("error"):
        return ItemOutcome.failed("error", entry_error(from_train))
    p0 = flatten(init)
    found = candidates(p0, [(x1, y1), (x2, y2)], shifts)
    honest = next(c for c in found if all(mode == (False, False) for mode in c["modes"]))
    returned = from_train.get("returned")
    fits, fitted_by = _decide(returned, found)
    seen = from_train.get("seen") or []
    eval_ok, no_grad_ok = _unanimous(fits, 0), _unanimous(fits, 1)
    source = "from the loss evaluate returned" if fitted_by in ("mean", "batch_means", "sum") else \
        "from the accuracy evaluate returned" if fitted_by else "from the worker's record (the returned numbers fit no mode)"
    if eval_ok is None:
        eval_ok = bool(seen) and not any(s[0] for s in seen)
    if no_grad_ok is None:
        no_grad_ok = bool(seen) and not any(s[1] for s in seen)
    final, final_eval = returned_weights(result, "from_train.final"), returned_weights(result, "from_eval.final")
    unchanged = final is not None and bool(np.allclose(final, p0, rtol=0, atol=0))
    after_train = _after_mode(result, "from_train", final, x1, shifts) if final is not None else None
    after_eval = _after_mode(result, "from_eval", final_eval, x1, shifts) if final_eval is not None else None
    got_loss = returned.get("loss") if isinstance(returned, dict) else None
    got_acc = returned.get("accuracy") if isinstance(returned, dict) else None
    shape_hint = "" if isinstance(returned, dict) else f": evaluate returned {from_train.get('returned_type')}, " \
                                                       "expected {'loss': float, 'accuracy': float}"
    in_eval = [c for c in fits if all(not mode[0] for mode in c["modes"])]
    target = min(in_eval or fits, key=lambda c: c["modes"] != honest["modes"]) if fits else honest
    expected = _in_eval_mode(target, found)
    train_hint = ": that is the model in train mode; evaluate reports it in eval mode: call model.eval() inside evaluate"
    loss_ok = fitted_by == "mean" and bool(in_eval)
    loss_hint = ": that is the mean of the batch means; weight each batch by its size" if fitted_by == "batch_means" \
        else ": that is a sum, not a mean" if fitted_by == "sum" else train_hint if fitted_by == "mean" else shape_hint
    acc_ok = isinstance(got_acc, float) and close(got_acc, expected["accuracy"], rtol=1e-6, atol=1e-6)
    acc_hint = ": return a fraction between 0 and 1" if isinstance(got_acc, float) and close(
        got_acc, expected["accuracy"] * 100, rtol=1e-6, atol=1e-6) else train_hint if isinstance(got_acc, float) and \
        close(got_acc, target["accuracy"], rtol=1e-6, atol=1e-6) else shape_hint
    eval_after = from_eval.get("error")
    return ItemOutcome.from_subchecks([
        SubCheck("eval mode", eval_ok, EVAL_WEIGHT, f"forward ran in eval mode (told {source})" if eval_ok else
                 f"forward ran in train mode (told {source}): call model.eval() inside evaluate"),
        SubCheck("no gradients", no_grad_ok, NO_GRAD_WEIGHT, f"forward ran without gradients (told {source})" if no_grad_ok else
                 f"gradients were tracked (told {source}): wrap the loop in torch.no_grad()"),
        SubCheck("weights unchanged", unchanged, 1.0, "the weights were not changed" if unchanged else
                 "evaluate changed the weights: it must not train"),
        SubCheck("restores train mode", after_train is True, 1.0,
                 "a model in train mode is back in train mode afterwards" if after_train is True else
                 "a model that was in train mode is left in eval mode: restore model.training at the end"),
        SubCheck("keeps eval mode", not eval_after and after_eval is False, 1.0,
                 entry_error(from_eval) if eval_after else "a model in eval mode stays in eval mode"
                 if after_eval is False else
                 "a model that was in eval mode is left in train mode: restore the previous mode, do not force train()"),
        SubCheck("mean loss", loss_ok, 1.0, f"loss {got_loss:.6g}" if loss_ok else
                 f"loss {describe(got_loss) if isinstance(got_loss, float) else 'missing'}, expected "
                 f"{expected['mean']:.6g} (mean over the 8 examples in eval mode){loss_hint}"),
        SubCheck("accuracy", acc_ok, 1.0, f"accuracy {got_acc:.4g}" if acc_ok else
                 f"accuracy {describe(got_acc) if isinstance(got_acc, float) else 'missing'}, expected "
                 f"{expected['accuracy']:.4g} (in eval mode){acc_hint}"),
    ], data={"modes_decided_by": fitted_by or "record"})
