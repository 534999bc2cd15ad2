"""Does the rubric's ``[heldout] control_weight`` fit the held-out file's control split? (``notegrade build``)

One job: before the zip is written, refuse a rubric that scores a private control split the
held-out file does not have (the shipped offering rubrics score mostly on one), and tell the
instructor what the reference scores on the held-out item under the rubric's mix, so thresholds
can be set relative to it.  Returns the notes ``notegrade build`` prints.

Example
-------
>>> from autograder.rubric import Rubric, RubricItem
>>> from autograder.rubric.model import HeldoutSettings
>>> item = RubricItem("4.1", "acc", 30.0, "heldout_accuracy", params={"zero_at": 0.25, "full_at": 0.6})
>>> rubric = Rubric(title="t", total_points=30.0, items=(item,), heldout=HeldoutSettings(control_weight=0.8))
>>> honest = [{"heldout_accuracy": 0.68, "control_accuracy": 0.52}] * 4
>>> check_control(rubric, control_notes=1000, reference={"heldout_accuracy": 0.70, "control_accuracy": 0.55,
...                                                        "honest": honest})
['the reference scores 58.0% on item 4.1 (80% control notes 55.0%, 20% public notes 70.0%): 94.3% of its points']
>>> check_control(rubric, control_notes=0, reference=None)
Traceback (most recent call last):
...
autograder.errors.NotegradeError: the rubric takes 80% of item 4.1 from a private control split ([heldout] control_weight = 0.8), but the held-out file has none: add one with `notegrade heldout --control DIR` (docs/threat-model.md: 'A private control split'), or set control_weight = 0 in the rubric's [heldout] table to score the public notes only
"""
from __future__ import annotations

from typing import Any

from autograder.errors import NotegradeError

HELDOUT_CHECK = "heldout_accuracy"


def _share(value: float) -> str:
    return f"{value:.0%}"


def check_control(rubric: Any, *, control_notes: int, reference: "dict | None") -> "list[str]":
    """Refuse a control_weight without a control split; the notes to print otherwise."""
    weight = rubric.heldout.control_weight
    item = next((i for i in rubric.items if i.check == HELDOUT_CHECK), None)
    label = f"item {item.number}" if item else "the held-out item"
    if weight > 0 and not control_notes:
        raise NotegradeError(
            f"the rubric takes {_share(weight)} of {label} from a private control split ([heldout] control_weight = "
            f"{weight:g}), but the held-out file has none: add one with `notegrade heldout --control DIR` "
            "(docs/threat-model.md: 'A private control split'), or set control_weight = 0 in the rubric's [heldout] table to score the "
            "public notes only")
    notes = []
    reference = reference or {}
    public, control = reference.get("heldout_accuracy"), reference.get("control_accuracy")
    if control_notes and weight == 0:
        notes.append(f"the held-out file has {control_notes:,} control notes, which feed the lookup detector but score "
                     "nothing ([heldout] control_weight = 0)")
    if control_notes and control is None:
        notes.append("the held-out file records no reference accuracy on its control split, so the lookup detector "
                     "will not run: rebuild it with `notegrade heldout ... --control DIR --reference-model model.pt`")
    if control_notes and control is not None and len(reference.get("honest") or []) < 2:
        notes.append("the lookup detector will compare with the reference's ratio alone, and honest models stray from "
                     "it (docs/threat-model.md: the detector table): record other honest models (more seeds, fewer and more epochs) "
                     "with `notegrade heldout ... --honest-model model.pt`")
    if item is None or public is None or (weight > 0 and control is None):
        return notes
    scored = (1 - weight) * public + weight * control if weight > 0 else public
    zero_at, full_at = item.params.get("zero_at"), item.params.get("full_at")
    parts = (f"{_share(weight)} control notes {control:.1%}, {_share(1 - weight)} public notes {public:.1%}"
             if 0 < weight < 1 else ("control notes" if weight >= 1 else "public notes"))
    points = ""
    if isinstance(zero_at, (int, float)) and isinstance(full_at, (int, float)) and full_at > zero_at:
        points = f": {min(1.0, max(0.0, (scored - zero_at) / (full_at - zero_at))):.1%} of its points"
    notes.append(f"the reference scores {scored:.1%} on {label} ({parts}){points}")
    return notes


def reference_numbers(heldout_path: Any) -> "dict | None":
    """The reference's numbers recorded in a held-out file (``notegrade heldout --reference-model``), or None."""
    import json

    from autograder.featurefile import read_feature_file

    raw = read_feature_file(heldout_path).metadata.get("reference")
    try:
        value = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
