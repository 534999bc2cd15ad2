"""results.json from rubric items and their check outcomes, built with gradescope-utils.

The checks have already run (in the sandbox, under timeouts) when this module is called; it turns
each ``(RubricItem, ItemOutcome)`` into one ``unittest`` test decorated with gradescope-utils'
``@weight``/``@number``/``@visibility``/``@tags``/``@partial_credit`` (plus one ``@leaderboard`` test
per column) and runs them with ``JSONTestRunner(post_processor=...)``.  The post-processor adds what
gradescope-utils leaves out: the late penalty as its own test line, the clamped total, the Markdown
report (``output_format: "md"``), ``extra_data`` and a numeric ``execution_time``.
:func:`error_results` builds results.json without gradescope-utils for when grading itself failed.

Example
-------
>>> from autograder.checks.outcome import ItemOutcome, SubCheck
>>> from autograder.rubric import RubricItem, Rubric
>>> item = RubricItem(number="1.1", title="Parameter counts", points=10.0, check="architecture_params")
>>> rubric = Rubric(title="Demo", total_points=10.0, items=(item,))
>>> outcome = ItemOutcome.from_subchecks([SubCheck("conv1", True), SubCheck("conv3", False, message="no bias")])
>>> results = build_results(rubric=rubric, graded=[GradedItem(item, outcome)], metadata=None)
>>> data = results.to_gradescope_dict()
>>> data["score"], data["tests"][0]["score"], data["tests"][0]["status"], data["output_format"]
(5.0, 5.0, 'failed', 'md')
"""
from __future__ import annotations

import io
import json
import math
import pathlib
import unittest
from dataclasses import dataclass
from typing import Any, Callable

from gradescope_utils.autograder_utils.decorators import (
    leaderboard,
    number,
    partial_credit,
    tags,
    visibility,
)
from gradescope_utils.autograder_utils.json_test_runner import JSONTestRunner

from autograder import __version__
from autograder.atomic import write_json_atomically  # noqa: F401  (re-exported)
from autograder.items import NOT_RUN_BUDGET, GradedItem, item_output, not_run_outcome  # noqa: F401  (re-exported)
from autograder.items import SCORE_DIGITS as _SCORE_DIGITS
from autograder.late import LatePenalty, assess_late_penalty
from autograder.report import markdown_report
from autograder.rubric import Rubric


@dataclass
class Results:
    """A finished results.json; :meth:`to_gradescope_dict` is what Gradescope reads."""

    data: dict[str, Any]

    def to_gradescope_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data))

    @property
    def score(self) -> float:
        return float(self.data["score"])

    def write(self, path: str | pathlib.Path) -> None:
        write_json_atomically(path, self.data)


def json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays -> Python, NaN/inf -> None (Gradescope rejects NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _test_method(graded: GradedItem) -> Callable:
    item, text = graded.item, item_output(graded)

    def test(self: unittest.TestCase, set_score: Callable[[float], None] = None) -> None:
        if text:
            print(text)
        set_score(graded.score)

    test.__doc__ = f"{item.number} {item.title}"  # the test's name in results.json
    test = partial_credit(item.points)(test)
    test = number(item.number)(test)
    test = visibility(item.visibility)(test)
    return tags(*item.tags)(test) if item.tags else test


def _leaderboard_method(name: str, order: str, value: Any) -> Callable:
    def test(self: unittest.TestCase, set_leaderboard_value: Callable[[Any], None] = None) -> None:
        if value is not None:
            set_leaderboard_value(value)

    test.__doc__ = f"leaderboard: {name}"
    return leaderboard(name, order)(test)


def _leaderboard_values(rubric: Rubric, graded: list[GradedItem]) -> list[tuple[str, str, Any]]:
    by_number = {g.item.number: g for g in graded}
    columns = []
    for column in rubric.leaderboard:
        found = by_number.get(column.item)
        value = json_safe(found.outcome.data.get(column.field)) if found and found.outcome.status == "ran" else None
        columns.append((column.name, column.order, value if isinstance(value, (int, float, str)) else None))
    return columns


def _accuracy_data(graded: list[GradedItem]) -> dict[str, Any]:
    # The held-out item is the one whose data has a confusion matrix (train_overfit also reports
    # an "accuracy": on its tiny training batch, which must not pass for the held-out accuracy).
    for g in graded:
        data = g.outcome.data or {}
        if "accuracy" in data and "confusion" in data and g.outcome.status == "ran":
            return {"heldout_item": g.item.number, "heldout_accuracy": json_safe(data["accuracy"]),
                    "heldout_count": json_safe(data.get("count")), "per_family": json_safe(data.get("per_family")),
                    "confusion": json_safe(data.get("confusion")), "heldout_device": data.get("device")}
    return {"heldout_item": None, "heldout_accuracy": None, "heldout_count": None, "per_family": None, "confusion": None,
            "heldout_device": None}


def _late_test(late: LatePenalty) -> dict[str, Any]:
    return {"name": "Late penalty", "score": -round(late.penalty, _SCORE_DIGITS) or 0.0, "max_score": 0.0,
            "status": "failed" if late.penalty > 0 else "passed", "output": late.line, "visibility": "visible",
            "extra_data": {"kind": "late_penalty"}}


def _extra_data(rubric: Rubric, graded: list[GradedItem], late: LatePenalty | None, note: str = "") -> dict[str, Any]:
    late_data = {"created_at": None, "due_date": None, "late_seconds": 0.0, "penalty": 0.0, "note": note} \
        if late is None else {"created_at": late.created_at, "due_date": late.due_date, "late_due_date": late.late_due_date,
                              "late_seconds": late.late_seconds, "units": late.units, "penalty": late.penalty,
                              "zeroed": late.zeroed, "line": late.line, "note": late.note}
    return {"rubric_title": rubric.title, "total_points": rubric.total_points, **_accuracy_data(graded),
            "toolkit_version": __version__, "rubric_hash": rubric.rubric_hash, "late": late_data,
            # Filled in by the per-submission held-out guard (autograder/heldout_guard); this default keeps
            # the key present in every results.json, error results included.
            "integrity": {"train_on_test": None, "tampering": [], "lookup": None}}


def _finish(data: dict[str, Any], rubric: Rubric, *, execution_time: float) -> dict[str, Any]:
    data["score"] = round(min(max(data["score"], 0.0), rubric.total_points), _SCORE_DIGITS)
    data["execution_time"] = round(float(execution_time), 3)
    data["visibility"] = rubric.visibility
    data["stdout_visibility"] = rubric.stdout_visibility
    data["output_format"] = "md"
    data["test_output_format"] = "text"
    clean = json_safe(data)
    clean["output"] = markdown_report(clean, audience="student")
    return clean


def build_results(*, rubric: Rubric, graded: list[GradedItem], metadata: dict | None, metadata_note: str = "",
                  execution_time: float | None = None, guard: Any = None) -> Results:
    """Run one gradescope-utils test per graded item and post-process into the full results.json.

    ``guard``: the per-submission held-out guard, an ``autograder.heldout_guard.session.Session``
    (run_autograder's), whose ``apply`` adds the held-out lines (public part, per family, the hidden
    "Integrity (instructors only)" line) and ``extra_data["integrity"]``."""
    by_number = {g.item.number: g for g in graded}
    columns = _leaderboard_values(rubric, graded)
    methods = {f"test_{i:04d}": _test_method(g) for i, g in enumerate(graded)}
    methods.update({f"test_lb_{i:02d}": _leaderboard_method(*c) for i, c in enumerate(columns)})
    case = type("RubricItems", (unittest.TestCase,), methods)
    suite = unittest.TestSuite(case(name) for name in methods)  # rubric order, not alphabetical

    def post_process(data: dict[str, Any]) -> None:
        for test in data["tests"]:
            g = by_number.get(test.get("number"))
            if g is None:  # a test that crashed before its decorators ran: keep gradescope-utils' record
                continue
            test["score"] = g.score
            test["status"] = "passed" if g.outcome.status == "ran" and g.outcome.fraction >= 1.0 else "failed"
            test["extra_data"] = {"kind": "item", "check": g.item.check, "status": g.outcome.status,
                                  "fraction": g.outcome.fraction, "duration_s": round(g.duration_s, 3),
                                  "subchecks": [{"name": s.name, "passed": s.passed, "weight": s.weight}
                                                for s in g.outcome.subchecks]}
        earned = sum(t.get("score", 0.0) for t in data["tests"])
        late = assess_late_penalty(metadata=metadata, policy=rubric.late_policy, earned=max(earned, 0.0),
                                   total=rubric.total_points, metadata_note=metadata_note)
        data["tests"].append(_late_test(late))
        data["score"] = earned - late.penalty
        data["leaderboard"] = [e for e in data["leaderboard"] if e.get("value") is not None]
        data["extra_data"] = _extra_data(rubric, graded, late)
        if guard is not None:
            guard.apply(data, graded)

    stream = io.StringIO()  # JSONTestRunner also dumps the JSON here; the file is written by the caller
    runner = JSONTestRunner(stream=stream, visibility=rubric.visibility, stdout_visibility=rubric.stdout_visibility,
                            post_processor=post_process, failure_prefix="")
    runner.run(suite)
    elapsed = float(runner.json_data["execution_time"]) if execution_time is None else execution_time
    return Results(_finish(runner.json_data, rubric, execution_time=elapsed))


def error_results(*, rubric: Rubric | None, graded: list[GradedItem], error: str, details: str,
                  execution_time: float) -> Results:
    """results.json when grading itself failed: items graded so far keep their scores, the others are
    "not run", a visible "Autograder error" test explains, and a hidden test holds ``details``."""
    from autograder.heldout_guard.results_lines import points_visibility

    fallback_rubric = rubric or Rubric(title="Autograder", total_points=0.0, items=())
    tests: list[dict[str, Any]] = []
    done = {g.item.number for g in graded}
    pending = [GradedItem(item, not_run_outcome("not run: the autograder failed before this item"))
               for item in (rubric.items if rubric else ()) if item.number not in done]
    for g in list(graded) + pending:
        tests.append({"name": f"{g.item.number} {g.item.title}", "number": g.item.number, "score": g.score,
                      "max_score": g.item.points, "status": "passed" if g.outcome.fraction >= 1 else "failed",
                      "output": item_output(g), "visibility": points_visibility(fallback_rubric, g.item),
                      "extra_data": {"kind": "item", "check": g.item.check, "status": g.outcome.status}})
    tests.append({"name": "Autograder error", "score": 0.0, "max_score": 0.0, "status": "failed", "visibility": "visible",
                  "output": "The autograder itself failed while grading this submission; this is not a problem "
                            f"with your code. Your instructor has the details and will regrade.\n({error})",
                  "extra_data": {"kind": "autograder_error"}})
    tests.append({"name": "Autograder error details (instructors only)", "score": 0.0, "max_score": 0.0,
                  "status": "failed", "visibility": "hidden", "output": details,
                  "extra_data": {"kind": "autograder_error_details"}})
    fallback = rubric or Rubric(title="Autograder", total_points=0.0, items=())
    data = {"score": sum(t["score"] for t in tests), "tests": tests, "leaderboard": [],
            "extra_data": _extra_data(fallback, list(graded), None, note=f"autograder error: {error}")}
    if rubric is None:  # the rubric itself could not be read: nothing to score
        data["extra_data"].update(rubric_title="Autograder error", total_points=None, rubric_hash=None)
    return Results(_finish(data, fallback, execution_time=execution_time))


def is_autograder_error(results: dict) -> bool:
    """True when grading itself failed (the line :func:`error_results` adds), not the student's code:
    such a result is reported as an error, never reused, and graded again by a rerun."""
    return any((t.get("extra_data") or {}).get("kind") == "autograder_error" for t in results.get("tests", []))
