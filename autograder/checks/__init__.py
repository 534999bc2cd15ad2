"""The checks a rubric item can run: ``REGISTRY[name] = CheckSpec(name, needs, params, run, context_fields=...)``.

TRUSTED side: checks never import student code; they send probes to the sandboxed worker
(:class:`autograder.sandbox.Sandbox`) and judge its raw outputs against public oracles
(torch built-ins in float64, ``torch.autograd.gradcheck``, the assignment's numbers),
never the reference solution, so this package also ships with the student self-check.

Calling a check (what ``run_autograder`` does)::

    spec = REGISTRY[item.check]
    params = {**defaults_without_None, **item.params}        # see ``spec.params``
    outcome = spec.run(sandbox, params, timeout_s=seconds_left_for_the_item,
                       **context.for_check(spec.context_fields))  # only heldout_accuracy declares any

- ``sandbox``: an open :class:`~autograder.sandbox.Sandbox` (one per submission; its
  ``use_gpu`` decides whether the held-out probe runs on CUDA).
- ``timeout_s``: wall-clock seconds for the whole item.  Time spent starting a worker
  (python + torch imports, ~1-3 s, again after a crash or timeout) is credited back, so an
  item can take up to one worker start-up longer; importing one student module is capped at
  the sandbox's ``import_timeout_s`` (30 s), and a failed import is remembered, so later
  items needing that module fail at once with the same message.
- ``context``: the run's :class:`~autograder.checks.context.CheckContext` (the held-out file,
  the accuracy's label, the held-out presentation, the source budget, the rubric's
  ``[checkpoint]`` table; each field documented there).  A check declares the fields it takes in
  ``CheckSpec.context_fields`` and gets exactly those as keyword arguments: heldout_accuracy takes
  all five (``heldout_path``'s labels never leave this process); the other checks take none.
- Returns an :class:`~autograder.checks.outcome.ItemOutcome`; student problems (missing files,
  crashes, timeouts, wrong values) are outcomes, never exceptions.  A
  :class:`~autograder.errors.NotegradeError` means the grader is misconfigured (e.g. no
  held-out file); any other exception is a bug in the check.
- heldout_accuracy's ``data``: ``accuracy``, ``count``, ``correct``, ``per_family`` (family ->
  accuracy or None), ``per_family_count``, ``confusion`` (11x11, rows = true family),
  ``families``, ``zero_at``, ``full_at``, ``device`` ("cpu" | "cuda"; on a GPU also ``gpu_agreement``
  and ``gpu_verified_notes``, see ``device_agreement.py``); train_overfit's: ``start_loss``, ``end_loss``,
  ``accuracy``; architecture_params': ``total_params``.

Example
-------
>>> sorted(REGISTRY)[:3]
['architecture_params', 'architecture_shapes', 'evaluate_modes']
>>> validate_params("heldout_accuracy", {"zero_at": 0.7, "full_at": 0.5})
['heldout_accuracy: zero_at (0.7) must be below full_at (0.5)']
>>> validate_params("loss_values", {"rtol": "tight"})
["loss_values: parameter 'rtol' must be a number, not str"]
"""
from __future__ import annotations

from typing import Any, Callable

from autograder.checks import architecture, heldout, losses, modes, stability, training
from autograder.checks.common import tolerate_malformed_answers
from autograder.checks.context import CheckContext
from autograder.checks.outcome import CheckSpec, ItemOutcome, SubCheck
from autograder.checks.params import params_problems

__all__ = ["REGISTRY", "validate_params", "CheckContext", "CheckSpec", "ItemOutcome", "SubCheck"]

_LOSS_PARAMS = {"seed": 0, "rtol": 1e-4, "atol": 1e-6}
# What the held-out check takes from the run's CheckContext (the keyword arguments of heldout.run_heldout).
HELDOUT_CONTEXT = ("heldout_path", "accuracy_label", "heldout_run", "max_source_kb", "checkpoint_policy")


def _spec(name: str, needs: "tuple[str, ...]", params: dict, run: Callable[..., ItemOutcome],
          description: str, context_fields: "tuple[str, ...]" = ()) -> CheckSpec:
    return CheckSpec(name=name, needs=needs, params=params, run=tolerate_malformed_answers(run),
                     description=description, context_fields=context_fields)


REGISTRY: "dict[str, CheckSpec]" = {spec.name: spec for spec in (
    _spec("architecture_params", ("model.py",), {}, architecture.run_params,
          "per-layer parameter counts conv1..conv4, fc (160 / 4,640 / 18,496 / 73,856 / 22,539 = 119,691)"),
    _spec("architecture_shapes", ("model.py",), {"batch_size": 3}, architecture.run_shapes,
          "block outputs (N,16,32,32) (N,32,16,16) (N,64,8,8) (N,128,4,4); float32 logits (N,11); batch of one"),
    _spec("loss_values", ("losses.py",), dict(_LOSS_PARAMS), losses.run_values,
          "l1/mse/softmax/BCE/cross-entropy and the L1/L2 penalties against torch oracles (float64)"),
    _spec("loss_gradients", ("losses.py",), dict(_LOSS_PARAMS), losses.run_gradients,
          "gradients against autograd of the oracles, and torch.autograd.gradcheck in float64"),
    _spec("softmax_ce_backward", ("losses.py",), dict(_LOSS_PARAMS), stability.run_softmax_ce_backward,
          "SoftmaxCrossEntropy: forward value, hand-written backward, grad_output scaling, gradcheck"),
    _spec("loss_stability", ("losses.py",), dict(_LOSS_PARAMS), stability.run_stability,
          "finite, correct values and gradients at |logits| up to 1e4 and probabilities exactly 0 and 1"),
    _spec("train_step", ("train.py",), {"seed": 0, "lr": 0.5}, training.run_train_step,
          "train_one_epoch: one SGD step per batch, fresh gradients, per-example mean loss, train mode"),
    _spec("train_overfit", ("train.py",), {"seed": 0, "epochs": 150, "lr": 0.01, "max_loss": 0.05},
          training.run_train_overfit, "train_one_epoch drives a 16-example batch to ~0 loss and 100% accuracy"),
    _spec("evaluate_modes", ("train.py",), {"seed": 0}, modes.run_evaluate_modes,
          "evaluate: eval mode, no grad, weights untouched, mode restored, correct loss and accuracy"),
    _spec("fit_early_stopping", ("train.py",), {"seed": 0}, training.run_fit_early_stopping,
          "fit: stops after `patience` epochs without improvement and restores the best weights"),
    _spec("heldout_accuracy", ("model.py", "model.pt"), {"zero_at": None, "full_at": None, "batch_size": 64,
                                                        "gpu_min_agreement": 0.995, "gpu_verify_notes": 512},
          heldout.run_heldout, "model.pt on the held-out file: points linear from zero_at to full_at accuracy",
          context_fields=HELDOUT_CONTEXT),
)}

def validate_params(check_name: str, params: "dict[str, Any]") -> "list[str]":
    """Problems with a rubric item's check and params (empty list: fine): for a registered check,
    :func:`autograder.checks.params.params_problems`."""
    spec = REGISTRY.get(check_name)
    if spec is None:
        return [f"unknown check {check_name!r} (known checks: {', '.join(sorted(REGISTRY))})"]
    return params_problems(spec, params)
