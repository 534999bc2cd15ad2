"""Training probes: the student's train.py driving a harness-owned model and torch's own loss.

UNTRUSTED side.  The model is a tiny MLP whose initial weights come from the grader (so the
grader can recompute every step with its own oracle), and the loss is
``torch.nn.functional.cross_entropy``: a broken model.py or losses.py cannot fail these.
Each probe returns raw observations (returned values, train/eval mode and grad mode seen in
``forward``, optimizer steps) and the resulting weights as flat ``.npy`` vectors, in
``named_parameters()`` order: hidden.weight, hidden.bias, out.weight, out.bias.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .common import (ProbeFailure, WorkerContext, as_number, describe_exception, import_student,
                     jsonable, student_attribute, type_name)

PARAM_NAMES = ("hidden.weight", "hidden.bias", "out.weight", "out.bias")
# Bound when the harness is imported, before any student code: replacing F.cross_entropy later
# cannot change the loss these probes train with.
CROSS_ENTROPY = F.cross_entropy


class HarnessMLP(torch.nn.Module):
    """flatten -> Linear -> ReLU -> Linear; records (training, grad enabled) per forward.

    With ``mode_shifts`` (the grader's ``eval_shift`` and ``nograd_shift``, one value per logit),
    the output itself tells the mode: ``eval_shift`` is added in eval mode and ``nograd_shift``
    when gradients are off, so the loss a function computes from it shows which modes were used
    (a verdict from behaviour; the ``seen`` record is only a fallback, and code can rewrite it).
    """

    def __init__(self, init: "dict[str, torch.Tensor]", mode_shifts: "dict[str, torch.Tensor] | None" = None) -> None:
        super().__init__()
        self._mode_shifts = mode_shifts
        hidden_w, out_w = init["hidden.weight"], init["out.weight"]
        self.hidden = torch.nn.Linear(hidden_w.shape[1], hidden_w.shape[0])
        self.out = torch.nn.Linear(out_w.shape[1], out_w.shape[0])
        with torch.set_grad_enabled(False):  # = no_grad(), spelled unlike the solution (assign's leak check)
            for name, param in self.named_parameters():
                param.copy_(init[name])
        self.seen: "list[list[bool]]" = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.seen) < 1000:
            self.seen.append([bool(self.training), bool(torch.is_grad_enabled())])
        out = self.out(torch.relu(self.hidden(x.flatten(1))))
        if self._mode_shifts is not None:
            if not self.training:
                out = out + self._mode_shifts["eval_shift"]
            if not torch.is_grad_enabled():
                out = out + self._mode_shifts["nograd_shift"]
        return out

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])


class _State:
    current: "str | None" = None


class _Loader:
    """An iterable of batches that tells ``_State`` which loader produced the last batch."""

    def __init__(self, batches: list, tag: str, state: _State, on_iter: Any = None) -> None:
        self.batches, self.tag, self.state, self.on_iter = batches, tag, state, on_iter

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        if self.on_iter is not None:
            self.on_iter()
        for batch in self.batches:
            self.state.current = self.tag
            yield batch


def _init(context: WorkerContext) -> "dict[str, torch.Tensor]":
    return {name: context.tensor(f"init.{name}") for name in PARAM_NAMES}


def _train_function(name: str, context: WorkerContext) -> Any:
    return student_attribute(import_student("train", context), name, "function")


def _count_calls(optimizer: torch.optim.Optimizer, method: str, counts: dict) -> None:
    original = getattr(optimizer, method)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[method] = counts.get(method, 0) + 1
        return original(*args, **kwargs)

    setattr(optimizer, method, counted)


def probe_train_step(args: dict, context: WorkerContext) -> dict:
    """``train_one_epoch`` with SGD on two batches (model left in eval mode) and on one batch."""
    train_one_epoch = _train_function("train_one_epoch", context)
    scenarios = {"two_batches": [("xa", "ya"), ("xb", "yb")], "one_batch": [("xc", "yc")]}
    shifts = {"eval_shift": context.tensor("eval_shift"), "nograd_shift": context.tensor("nograd_shift")}
    results = {}
    for name, pairs in scenarios.items():
        model = HarnessMLP(_init(context), shifts)
        model.eval()  # train_one_epoch must switch to train mode itself
        optimizer = torch.optim.SGD(model.parameters(), lr=float(args["lr"]))
        counts: dict = {}
        _count_calls(optimizer, "step", counts)
        _count_calls(optimizer, "zero_grad", counts)
        batches = [(context.tensor(x), context.tensor(y)) for x, y in pairs]
        entry: dict = {}
        try:
            returned = train_one_epoch(model, batches, optimizer, CROSS_ENTROPY, "cpu")
            entry.update(returned=as_number(returned), returned_type=type_name(returned))
        except BaseException as err:
            entry["error"] = describe_exception(err, "train_one_epoch", context).to_dict()
        entry.update(seen=model.seen[:50], steps=counts.get("step", 0), zero_grads=counts.get("zero_grad", 0))
        context.save(f"{name}.params", model.flat())
        results[name] = entry
    return results


def probe_train_overfit(args: dict, context: WorkerContext) -> dict:
    """``train_one_epoch`` on one tiny batch, ``epochs`` times, with Adam."""
    train_one_epoch = _train_function("train_one_epoch", context)
    model = HarnessMLP(_init(context))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(args["lr"]))
    batch = [(context.tensor("x"), context.tensor("y"))]
    losses: "list[float | None]" = []
    error = None
    for epoch in range(int(args["epochs"])):
        try:
            losses.append(as_number(train_one_epoch(model, batch, optimizer, CROSS_ENTROPY, "cpu")))
        except BaseException as err:
            error = describe_exception(err, f"train_one_epoch (call {epoch + 1})", context).to_dict()
            break
    context.save("final.params", model.flat())
    return {"losses": losses, "error": error}


def probe_evaluate_modes(args: dict, context: WorkerContext) -> dict:
    """``evaluate`` on two batches, starting once in train mode and once in eval mode."""
    evaluate = _train_function("evaluate", context)
    shifts = {"eval_shift": context.tensor("eval_shift"), "nograd_shift": context.tensor("nograd_shift")}
    results = {}
    for name, start_training in (("from_train", True), ("from_eval", False)):
        model = HarnessMLP(_init(context), shifts)
        model.train(start_training)
        before = model.flat().clone()
        batches = [(context.tensor("x1"), context.tensor("y1")), (context.tensor("x2"), context.tensor("y2"))]
        entry: dict = {}
        try:
            returned = evaluate(model, batches, CROSS_ENTROPY, "cpu")
            entry.update(returned=jsonable(returned), returned_type=type_name(returned))
        except BaseException as err:
            entry["error"] = describe_exception(err, "evaluate", context).to_dict()
        entry.update(seen=model.seen[:50], training_after=bool(model.training),
                     grads_computed=any(p.grad is not None for p in model.parameters()),
                     weights_changed=not torch.equal(before, model.flat()))
        # Outputs the grader decides from: the weights, and one forward (gradients off) that shows
        # which mode evaluate left the model in.
        context.save(f"{name}.final", model.flat())
        try:
            with torch.set_grad_enabled(False):
                context.save(f"{name}.after", model(context.tensor("x1")))
        except BaseException as err:
            entry["after_error"] = describe_exception(err, "NoteCNN after evaluate", context).to_dict()
        results[name] = entry
    return results


def probe_fit_early_stopping(args: dict, context: WorkerContext) -> dict:
    """``fit`` with scripted validation losses; snapshots the weights as each evaluation starts."""
    fit = _train_function("fit", context)
    results = {}
    for scenario in list(args["scenarios"])[:4]:
        name, script = str(scenario["name"]), [float(v) for v in scenario["script"]]
        model = HarnessMLP(_init(context))
        optimizer = torch.optim.SGD(model.parameters(), lr=float(scenario["lr"]))
        state = _State()
        snapshots: "list[torch.Tensor]" = []

        def start_validation() -> None:
            if len(snapshots) < 100:
                snapshots.append(model.flat().clone())

        def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            loss = CROSS_ENTROPY(logits, labels)
            if state.current == "valid" and snapshots:
                # The validation loss of epoch k is script[k-1], whatever the weights are.
                return loss * 0.0 + script[min(len(snapshots), len(script)) - 1]
            return loss

        train_loader = _Loader([(context.tensor("xt"), context.tensor("yt"))], "train", state)
        valid_loader = _Loader([(context.tensor("xv"), context.tensor("yv"))], "valid", state, start_validation)
        entry: dict = {}
        try:
            history = fit(model, train_loader, valid_loader, optimizer=optimizer, loss_fn=loss_fn, device="cpu",
                          epochs=int(scenario["epochs"]), patience=int(scenario["patience"]))
            entry.update(history=jsonable(history), returned_type=type_name(history))
        except BaseException as err:
            entry["error"] = describe_exception(err, "fit", context).to_dict()
        entry["validations"] = len(snapshots)
        if snapshots:
            context.save(f"{name}.snapshots", torch.stack(snapshots))
        context.save(f"{name}.final", model.flat())
        results[name] = entry
    if not results:
        raise ProbeFailure("harness", "no fit scenarios were sent")
    return results
