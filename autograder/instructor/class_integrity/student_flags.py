"""Train-on-test, lookup and harness-tampering flags, read from each submission's results.json.

The grader decides these per submission (issue 10) and writes them, instructor-only, as
``extra_data["integrity"]``::

    {"train_on_test": {"flagged": bool, "heldout_accuracy": float, "train_accuracy": float,
                       "heldout_loss": float, "train_loss": float, "reason": str} | null,
     "tampering": [{"kind": str, "detail": str}, ...],
     "lookup": {"flagged": bool, "public_accuracy": float, "control_accuracy": float,
                "expected_public": float, "excess": float, "lower_bound": float, "reason": str} | null}

This module only reads that contract, defensively: a results.json written by an older grader has
no ``integrity`` key (:attr:`StudentFlags.checked` is False and the report says so), and a
malformed value is reported as a problem instead of crashing the analysis.

Example
-------
>>> flags = read_student_flags({"extra_data": {"integrity": {"train_on_test": {
...     "flagged": True, "heldout_accuracy": 0.97, "train_accuracy": 0.95, "heldout_loss": 0.1,
...     "train_loss": 0.2, "reason": "as good on the test split as on training notes"},
...     "tampering": [{"kind": "gc", "detail": "gc.get_objects()"}]}}})
>>> flags.train_on_test_flagged, flags.tampering[0]["kind"], flags.problems
(True, 'gc', [])
>>> read_student_flags({"extra_data": {}}).checked
False
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

NUMBERS = ("heldout_accuracy", "train_accuracy", "heldout_loss", "train_loss")
LOOKUP_NUMBERS = ("public_accuracy", "control_accuracy", "expected_public", "excess", "lower_bound")
_TEXT_LIMIT = 500  # a detail can quote student code; keep the table readable


@dataclass
class StudentFlags:
    checked: bool = False  # results.json carries the held-out guard's verdicts at all
    train_on_test: dict[str, Any] | None = None  # the contract's dict (numbers may be None), or None
    tampering: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lookup: dict[str, Any] | None = None  # the lookup detector's dict (numbers may be None), or None

    @property
    def lookup_flagged(self) -> bool:
        return bool(self.lookup and self.lookup.get("flagged") is True)

    @property
    def train_on_test_flagged(self) -> bool:
        return bool(self.train_on_test and self.train_on_test.get("flagged") is True)

    @property
    def flagged(self) -> bool:
        return self.train_on_test_flagged or self.lookup_flagged or bool(self.tampering)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _text(value: Any) -> str:
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def _verdict(raw: dict, key: str, numbers: "tuple[str, ...] | list[str]", problems: "list[str]") -> "dict | None":
    """One detector's verdict (``flagged``, ``reason`` and its ``numbers``) from ``extra_data.integrity[key]``,
    or None when absent; what is malformed is read as not flagged and said in ``problems``."""
    found = raw.get(key)
    if found is None:
        return None
    if not isinstance(found, dict):
        problems.append(f"extra_data.integrity.{key} is a {type(found).__name__}; ignored")
        return None
    if not isinstance(found.get("flagged"), bool):
        problems.append(f"extra_data.integrity.{key}.flagged is not true/false; read as not flagged")
    return {"flagged": found.get("flagged") is True, "reason": _text(found.get("reason")),
            **{name: _number(found.get(name)) for name in numbers}}


def read_student_flags(results: dict | None) -> StudentFlags:
    """The per-submission held-out guard's verdicts in one results.json (``None``: not graded)."""
    extra = (results or {}).get("extra_data") if isinstance(results, dict) else None
    if not isinstance(extra, dict) or "integrity" not in extra:
        return StudentFlags()
    raw = extra["integrity"]
    flags = StudentFlags(checked=True)
    if not isinstance(raw, dict):
        flags.problems.append(f"extra_data.integrity is a {type(raw).__name__}, not an object; ignored")
        return flags
    flags.train_on_test = _verdict(raw, "train_on_test", NUMBERS, flags.problems)
    flags.lookup = _verdict(raw, "lookup", LOOKUP_NUMBERS, flags.problems)
    tampering = raw.get("tampering", [])
    if not isinstance(tampering, list):
        flags.problems.append(f"extra_data.integrity.tampering is a {type(tampering).__name__}, not a list; ignored")
        tampering = []
    for i, item in enumerate(tampering):
        if isinstance(item, dict) and item.get("kind"):
            flags.tampering.append({"kind": _text(item.get("kind")), "detail": _text(item.get("detail"))})
        else:
            flags.problems.append(f"extra_data.integrity.tampering[{i}] has no kind; ignored")
    return flags


def describe(flags: StudentFlags) -> str:
    """One sentence of evidence for the flags table."""
    parts = []
    if flags.train_on_test_flagged:
        t = flags.train_on_test
        numbers = [f"{label} {t[name]:.1%}" for name, label in (("heldout_accuracy", "held-out accuracy"),
                                                                ("train_accuracy", "training-sample accuracy"))
                   if t.get(name) is not None]
        losses = [f"{label} {t[name]:.3f}" for name, label in (("heldout_loss", "held-out loss"),
                                                               ("train_loss", "training-sample loss"))
                  if t.get(name) is not None]
        parts.append("trained on the test split? " + ", ".join(numbers + losses)
                     + (f" ({t['reason']})" if t.get("reason") else ""))
    if flags.lookup_flagged:
        t = flags.lookup
        parts.append("looked up the public test labels? " + (t["reason"] or "a public-only gain over the control split"))
    if flags.tampering:
        parts.append("reached into the grading harness: " + "; ".join(
            f"{item['kind']}" + (f" ({item['detail']})" if item["detail"] else "") for item in flags.tampering))
    return ". ".join(parts)
