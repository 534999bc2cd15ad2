"""A rubric item's check parameters against its :class:`~autograder.checks.outcome.CheckSpec`: the one validator.

The rubric parser (every check a rubric names, the real ones or a test's registry) and the
self-check's plan (:func:`autograder.checks.validate_params`) both call :func:`params_problems`.
The contract: known names only; a ``None`` default means required (its type in
:data:`REQUIRED_TYPES`); a value has the type of its default (an int is accepted where a float is
expected, a bool never counts as a number); numbers within :data:`RANGES`; ``zero_at`` below
``full_at``.

Example
-------
>>> from _selfcheck.checks.outcome import CheckSpec
>>> spec = CheckSpec("demo", ("model.py",), {"zero_at": None, "full_at": None, "epochs": 3}, run=print)
>>> params_problems(spec, {"zero_at": 0.7, "full_at": 0.5})
['demo: zero_at (0.7) must be below full_at (0.5)']
>>> params_problems(spec, {"zero_at": 0.1, "epochs": 2.5})
["demo: parameter 'epochs' must be an integer, not float", "demo: parameter 'full_at' is required"]
"""
from __future__ import annotations

from typing import Any, Mapping

# Types of the parameters whose default is None (required); any other such parameter is a number.
REQUIRED_TYPES = {"zero_at": float, "full_at": float}
RANGES: "dict[str, tuple[float, float]]" = {
    "seed": (0, 2**32 - 1), "rtol": (1e-12, 1.0), "atol": (0.0, 1.0), "lr": (1e-9, 100.0), "epochs": (1, 10000),
    "max_loss": (1e-9, 100.0), "batch_size": (1, 4096), "zero_at": (0.0, 1.0), "full_at": (0.0, 1.0),
    "gpu_min_agreement": (0.5, 1.0), "gpu_verify_notes": (0, 1_000_000)}


def _type_problem(check: str, key: str, value: Any, expected: type) -> "str | None":
    if isinstance(value, bool) or not isinstance(value, (int, float) if expected is float else expected):
        kind = "a number" if expected is float else "an integer" if expected is int else expected.__name__
        return f"{check}: parameter {key!r} must be {kind}, not {type(value).__name__}"
    return None


def params_problems(spec: Any, params: "Mapping[str, Any]") -> "list[str]":
    """Problems with ``params`` for the check ``spec`` (a CheckSpec: ``name``, ``params``); empty: fine."""
    check, problems = spec.name, []
    for key, value in params.items():
        if key not in spec.params:
            known = ", ".join(sorted(spec.params)) or "none"
            problems.append(f"{check}: unknown parameter {key!r} (known: {known})")
            continue
        default = spec.params[key]
        expected = REQUIRED_TYPES.get(key, float) if default is None else type(default)
        problem = _type_problem(check, key, value, expected)
        if problem:
            problems.append(problem)
            continue
        low, high = RANGES.get(key, (float("-inf"), float("inf")))
        if not low <= value <= high:
            problems.append(f"{check}: parameter {key!r} must be between {low:g} and {high:g}, got {value!r}")
    for key, default in spec.params.items():
        if default is None and key not in params:
            problems.append(f"{check}: parameter {key!r} is required")
    if not problems and "zero_at" in params and "full_at" in params and params["zero_at"] >= params["full_at"]:
        problems.append(f"{check}: zero_at ({params['zero_at']}) must be below full_at ({params['full_at']})")
    return problems
