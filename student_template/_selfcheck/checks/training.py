"""Training checks: train_one_epoch, overfitting a tiny batch, fit's early stopping (evaluate's modes: modes.py).

TRUSTED side.  The worker drives the student's train.py with a harness-owned MLP
(16 -> 24 -> ReLU -> 11) whose initial weights and data are seeded here, and torch's own
cross-entropy, so model.py and losses.py cannot fail these items.  Every verdict is
recomputed from raw data: the weights the worker returns are replayed through an oracle
(:mod:`autograder.checks.fit_probes`: float64 autograd of the same MLP), e.g. two SGD steps must
land exactly where ``p - lr * grad`` twice lands.

Weights (why a mistake costs what it does, see ``notegrade calibrate``): the sub-check that is the
item's point counts double, :data:`CORE_WEIGHT`: in train_step "one SGD step per batch" (the
optimizer loop itself: zero_grad, backward, step), in fit_early_stopping "best weights" in each
scenario.  fit runs three scenarios: it stops early, it improves to the end, and it runs out of
epochs after a worse one (the best weights must come back then too, not only on an early stop).

Example
-------
>>> [(s["name"], s["ran"], s["best"]) for s in _fit_scenarios()]
[('stops', 4, 2), ('improves', 3, 3), ('runs_out', 3, 2)]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from _selfcheck.checks.common import call, close, describe, outcome_for_failure
from _selfcheck.checks.fit_probes import (accuracy, batch, entry_error, flatten, init_params, loss_and_grad,
                                          mode_shifts, probe_inputs, returned_weights, start_train_item)
from _selfcheck.checks.outcome import ItemOutcome, SubCheck

CORE_WEIGHT = 2.0  # the sub-check an item is about; the others weigh 1


def _same(got: "np.ndarray | None", want: np.ndarray) -> bool:
    return got is not None and close(got, want, rtol=1e-3, atol=1e-5)


def run_train_step(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """One SGD step per batch with fresh gradients, the per-example mean loss, train mode, loss goes down."""
    budget, blocked = start_train_item(sandbox, timeout_s)
    if blocked:
        return blocked
    rng, lr = np.random.default_rng(int(params.get("seed", 0))), float(params.get("lr", 0.5))
    init = init_params(rng)
    (xa, ya), (xb, yb), (xc, yc) = batch(rng, 8), batch(rng, 4), batch(rng, 6)
    shifts = mode_shifts(rng)
    result = call(sandbox, budget, "train_step", {"lr": lr},
                  probe_inputs(init, xa=xa, ya=ya, xb=xb, yb=yb, xc=xc, yc=yc, **shifts))
    if not result.ok:
        return outcome_for_failure(result, "train_one_epoch")
    two, one = result.value.get("two_batches") or {}, result.value.get("one_batch") or {}
    p0 = flatten(init)
    loss_a, grad_a = loss_and_grad(p0, xa, ya)
    p1 = p0 - lr * grad_a
    loss_b, grad_b = loss_and_grad(p1, xb, yb)
    p2, accumulated = p1 - lr * grad_b, p1 - lr * (grad_a + grad_b)
    if two.get("error"):
        return ItemOutcome.failed("error", entry_error(two))
    got = returned_weights(result, "two_batches.params")
    # The same two steps with the model left in eval mode (the probe model's eval shift on).
    shift = shifts["eval_shift"]
    q1 = p0 - lr * loss_and_grad(p0, xa, ya, shift)[1]
    in_eval = _same(got, q1 - lr * loss_and_grad(q1, xb, yb, shift)[1])
    if _same(got, p2) or in_eval:
        step = SubCheck("one SGD step per batch", True, CORE_WEIGHT,
                        "two batches gave exactly two SGD steps with fresh gradients")
    else:
        hint = ("the weights did not change: call optimizer.step() after loss.backward()" if _same(got, p0) else
                "gradients accumulate across batches: call optimizer.zero_grad() before each backward()"
                if _same(got, accumulated) else f"optimizer.step() ran {two.get('steps')} times for 2 batches"
                if two.get("steps") != 2 else "the weights after two batches are not those of two SGD steps")
        step = SubCheck("one SGD step per batch", False, CORE_WEIGHT, f"after one epoch of 2 batches: {hint}")
    expected = (loss_a * 8 + loss_b * 4) / 12
    returned = two.get("returned") if isinstance(two.get("returned"), float) else None
    if returned is not None and close(returned, expected, rtol=1e-4, atol=1e-6):
        mean = SubCheck("returns the mean loss per example", True, 1.0, f"returned {returned:.6g}")
    else:
        hint = (f"returned {two.get('returned_type')}, expected a float" if returned is None else
                "that is the mean of the batch means; weight each batch by its size" if close(
                    returned, (loss_a + loss_b) / 2, rtol=1e-4, atol=1e-6) else
                "that is a sum, not a mean" if close(returned, loss_a * 8 + loss_b * 4, rtol=1e-4, atol=1e-6) else "")
        mean = SubCheck("returns the mean loss per example", False, 1.0,
                        f"train_one_epoch returned {describe(returned) if returned is not None else 'nothing usable'}, "
                        f"expected {expected:.6g} (the mean loss over the 12 examples)" + (f": {hint}" if hint else ""))
    seen = two.get("seen") or []
    # From the weights when they tell (train mode and eval mode give different steps); else the record.
    told = _same(got, p2) or in_eval
    train_mode = _same(got, p2) if told else bool(seen) and all(s[0] for s in seen)
    source = "told by the weights it produced" if told else "from the worker's record"
    mode = SubCheck("trains in train mode", train_mode, 1.0,
                    f"forward ran in train mode ({source})" if train_mode else
                    f"forward ran in eval mode or never ran ({source}): call model.train() at the start of "
                    "train_one_epoch")
    if one.get("error"):
        lower = SubCheck("one step lowers the loss", False, 1.0, entry_error(one))
    else:
        before = loss_and_grad(p0, xc, yc)[0]
        after_params = returned_weights(result, "one_batch.params")
        after = loss_and_grad(after_params, xc, yc)[0] if after_params is not None else before
        lower = SubCheck("one step lowers the loss", after < before, 1.0,
                         f"one epoch on a fixed batch took its loss from {before:.4f} to {after:.4f}" +
                         ("" if after < before else ": the weights must move against the gradient"))
    return ItemOutcome.from_subchecks([step, mean, mode, lower])


def run_train_overfit(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """Repeated train_one_epoch calls on 16 examples must drive the loss near 0 and accuracy to 100%."""
    budget, blocked = start_train_item(sandbox, timeout_s)
    if blocked:
        return blocked
    rng = np.random.default_rng(int(params.get("seed", 0)))
    epochs, max_loss = int(params.get("epochs", 150)), float(params.get("max_loss", 0.05))
    init = init_params(rng)
    x, y = batch(rng, 16)
    result = call(sandbox, budget, "train_overfit", {"epochs": epochs, "lr": float(params.get("lr", 0.01))},
                  probe_inputs(init, x=x, y=y))
    if not result.ok:
        return outcome_for_failure(result, "train_one_epoch")
    if result.value.get("error"):
        return ItemOutcome.failed("error", entry_error(result.value))
    final = returned_weights(result, "final.params")
    if final is None:
        return ItemOutcome.failed("error", "the worker returned no usable weights")
    start = loss_and_grad(flatten(init), x, y)[0]
    end = loss_and_grad(final, x, y)[0]
    acc = accuracy(final, x, y)
    data = {"start_loss": round(start, 5), "end_loss": round(end, 5), "accuracy": acc}
    return ItemOutcome.from_subchecks([
        SubCheck("loss falls", end <= max_loss, 1.0, f"after {epochs} epochs (Adam) on 16 examples the loss went from "
                 f"{start:.4f} to {end:.4f}" + ("" if end <= max_loss else f", expected at most {max_loss:g}")),
        SubCheck("fits the tiny batch", acc == 1.0, 1.0, f"training accuracy {acc:.0%} on the 16 examples" +
                 ("" if acc == 1.0 else ", expected 100%")),
    ], data=data)


def _fit_scenarios() -> "list[dict]":
    """What fit is run on (sent to the worker, which reads name, script, epochs, patience and lr):
    scripted validation losses, how many epochs must run and which epoch's weights must be kept."""
    return [{"name": "stops", "title": "stops after patience", "script": [1.0, 0.7, 0.8, 0.75, 0.6, 0.5], "epochs": 6,
             "patience": 2, "lr": 0.1, "ran": 4, "best": 2},
            {"name": "improves", "title": "runs every epoch while improving", "script": [1.0, 0.9, 0.8], "epochs": 3,
             "patience": 2, "lr": 0.1, "ran": 3, "best": 3},
            # The last epoch is worse but patience has not run out: fit ends by running out of epochs,
            # and must restore the best weights then too (not only when it stops early).
            {"name": "runs_out", "title": "runs every epoch while patience lasts", "script": [1.0, 0.6, 0.7],
             "epochs": 3, "patience": 2, "lr": 0.1, "ran": 3, "best": 2}]


def run_fit_early_stopping(sandbox: Any, params: dict, *, timeout_s: float) -> ItemOutcome:
    """fit stops after ``patience`` epochs without a new best validation loss and restores the best weights."""
    budget, blocked = start_train_item(sandbox, timeout_s)
    if blocked:
        return blocked
    rng = np.random.default_rng(int(params.get("seed", 0)))
    init = init_params(rng)
    (xt, yt), (xv, yv) = batch(rng, 8), batch(rng, 8)
    scenarios = _fit_scenarios()
    result = call(sandbox, budget, "fit_early_stopping", {"scenarios": scenarios},
                  probe_inputs(init, xt=xt, yt=yt, xv=xv, yv=yv))
    if not result.ok:
        return outcome_for_failure(result, "fit")
    entries = [result.value.get(s["name"]) or {} for s in scenarios]
    for entry in entries:
        if entry.get("error"):
            return ItemOutcome.failed("error", entry_error(entry))
    subchecks = []
    for scenario, entry in zip(scenarios, entries):
        subchecks += _fit_scenario_subchecks(result, scenario, entry)
    stops = entries[0]
    history = stops.get("history") if isinstance(stops.get("history"), list) else []
    keys = {"epoch", "train_loss", "valid_loss", "valid_accuracy"}
    entries_ok = bool(history) and all(isinstance(h, dict) and keys <= set(h) for h in history)
    epochs_ok = entries_ok and [h.get("epoch") for h in history] == [float(i) for i in range(1, len(history) + 1)]
    losses_ok = entries_ok and all(close(h.get("valid_loss"), v, rtol=1e-6, atol=1e-6) if isinstance(
        h.get("valid_loss"), float) else False for h, v in zip(history, scenarios[0]["script"]))
    ok = entries_ok and epochs_ok and losses_ok
    first = history[0] if history else None
    subchecks.append(SubCheck("history", ok, 1.0, "history has one dict per epoch with epoch (from 1), train_loss, "
                              "valid_loss and valid_accuracy" if ok else f"history entries should be dicts with keys "
                              f"{sorted(keys)}, epoch counting from 1 and valid_loss from evaluate; the first is {first}"))
    return ItemOutcome.from_subchecks(subchecks)


def _fit_scenario_subchecks(result: Any, scenario: dict, entry: dict) -> "list[SubCheck]":
    """How many epochs fit ran in one scenario, and whether it kept the best epoch's weights."""
    ran = int(entry.get("validations", 0))
    history = entry.get("history")
    length = len(history) if isinstance(history, list) else None
    ok = ran == scenario["ran"] and length == scenario["ran"]
    script = ", ".join(f"{v:g}" for v in scenario["script"])
    checks = [SubCheck(scenario["title"], ok, 1.0, f"validation losses [{script}], patience {scenario['patience']}, "
                       f"{scenario['epochs']} epochs: ran {ran} epochs, history has {length} entries" + (
                           "" if ok else f", expected {scenario['ran']} and {scenario['ran']}: stop once "
                           f"{scenario['patience']} epochs in a row bring no new best validation loss"))]
    name = f"best weights ({scenario['name'].replace('_', ' ')})"
    snapshots = returned_weights(result, f"{scenario['name']}.snapshots", rows=0)
    final = returned_weights(result, f"{scenario['name']}.final")
    best = scenario["best"]
    if snapshots is None or final is None or len(snapshots) < best:
        return checks + [SubCheck(name, False, CORE_WEIGHT, "fit did not evaluate enough epochs to tell which "
                                  "weights it kept")]
    restored = bool(np.allclose(final, snapshots[best - 1], rtol=0, atol=1e-6))
    last = "the last epoch's weights" if np.allclose(final, snapshots[-1], rtol=0, atol=1e-6) else "other weights"
    when = " (also when the epochs run out before patience does)" if scenario["ran"] == scenario["epochs"] else ""
    return checks + [SubCheck(name, restored, CORE_WEIGHT, f"the weights after fit are those of epoch {best}, the best"
                              if restored else f"validation losses [{script}]: fit ended with {last}, expected those "
                              f"of epoch {best} (best validation loss): keep a copy of the best state_dict and load it "
                              f"back at the end{when}")]
