"""The train-on-test detector: a model that knows NSynth's public test labels, told apart by its numbers.

NSynth's test instruments never occur in training, so an honest model is less accurate, and less
confident, on the held-out (test) notes than on training notes.  The held-out file may carry a
labelled sample of the training split (``notegrade heldout --train-sample``); the held-out check
evaluates it mixed in with the held-out notes (the worker can't tell them apart) and reports the
sample's accuracy re-weighted to the held-out family mix.  A model is flagged when

- it is at least ``min_accuracy`` accurate on the held-out notes, and scores there as well as on
  training notes (within ``same_margin``), or
- the file records the reference's numbers, the model is at least as accurate as the reference on
  the held-out notes, and its held-out/training accuracy ratio exceeds the reference's by
  ``ratio_margin``: far better than the reference relative to its training accuracy.

The flag is an instructor-only line with the numbers; it never changes the score.  A weak honest
model is not flagged (it is below the reference and, usually, ``min_accuracy``), nor is a model
as good as the reference (its generalisation gap is like the reference's).  Calibrated in
``tests/autograder/heldout_guard/test_trained_on_heldout.py`` on rendered data with disjoint instruments.

Example
-------
>>> from autograder.rubric.model import TrainOnTest
>>> honest = detect({"overall_accuracy": 0.71, "loss": 1.0,
...                  "train_sample": {"accuracy_matched": 0.93, "accuracy": 0.92, "loss": 0.2}}, TrainOnTest())
>>> honest["flagged"], honest["heldout_accuracy"], honest["train_accuracy"]
(False, 0.71, 0.93)
>>> detect({"overall_accuracy": 0.99, "loss": 0.02,
...         "train_sample": {"accuracy_matched": 0.80, "accuracy": 0.8, "loss": 0.7}}, TrainOnTest())["flagged"]
True
"""
from __future__ import annotations

import math
from typing import Any

from autograder.rubric.model import TrainOnTest


def _number(value: Any) -> "float | None":
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def detect(data: dict, settings: TrainOnTest, reference: "dict | None" = None) -> "dict | None":
    """The detector's verdict (the ``integrity.train_on_test`` contract), or None when it can't run.

    ``data``: the held-out check's data (``overall_accuracy``, ``loss``, ``train_sample``);
    ``reference``: the reference's ``heldout_accuracy`` and ``train_accuracy`` (re-weighted), if known.
    """
    sample = data.get("train_sample") if isinstance(data, dict) else None
    if not settings.enabled or not isinstance(sample, dict):
        return None
    heldout = _number(data.get("overall_accuracy", data.get("accuracy")))
    train = _number(sample.get("accuracy_matched"))
    train = train if train is not None else _number(sample.get("accuracy"))
    if heldout is None or train is None:
        return None
    verdict = {"flagged": False, "heldout_accuracy": round(heldout, 4), "train_accuracy": round(train, 4),
               "heldout_loss": _round(_number(data.get("loss"))), "train_loss": _round(_number(sample.get("loss"))),
               "reason": ""}
    reasons = []
    if heldout >= settings.min_accuracy and heldout >= train - settings.same_margin:
        reasons.append(f"held-out accuracy {heldout:.1%} is as high as on training notes ({train:.1%}), although the "
                       "held-out instruments are unseen")
    ref_heldout = _number((reference or {}).get("heldout_accuracy"))
    ref_train = _number((reference or {}).get("train_accuracy"))
    if ref_heldout and ref_train and train > 0:
        ratio, ref_ratio = heldout / train, ref_heldout / ref_train
        if heldout >= ref_heldout and ratio >= ref_ratio + settings.ratio_margin:
            reasons.append(f"held-out/training accuracy ratio {ratio:.2f} against the reference's {ref_ratio:.2f} "
                           f"(held-out {heldout:.1%} vs the reference's {ref_heldout:.1%})")
    loss_heldout, loss_train = verdict["heldout_loss"], verdict["train_loss"]
    if reasons and loss_heldout is not None and loss_train is not None and loss_heldout < loss_train:
        reasons.append(f"and it is more confident on held-out notes (loss {loss_heldout:.3f}) than on training notes "
                       f"({loss_train:.3f})")
    if reasons:
        verdict.update(flagged=True, reason="possible training on the test split: " + "; ".join(reasons))
    else:
        verdict["reason"] = (f"held-out {heldout:.1%} vs training notes {train:.1%}: the gap of a model that has not "
                             "seen the test instruments")
    return verdict


def _round(value: "float | None") -> "float | None":
    return None if value is None else round(value, 4)
