"""Validation of each table of a rubric's TOML: ``[[items]]``, ``[late_policy]``, ``[container]``,
``[sandbox]``, ``[checkpoint]``, ``[submission]``, ``[[leaderboard]]``, ``[heldout]`` and ``[cluster]`` (the
Slurm profile, also read from its own file).

Each function appends every problem it finds (prefixed with where it is, e.g. ``item 1.2: ``) to a
shared list instead of raising, so that :func:`autograder.rubric.parse_rubric` can report them all at
once; a table with problems yields a default (or no) value so that one mistake doesn't cascade.
The generic key/type checks live in :mod:`autograder.rubric.schema` and ``[cluster]`` in
:mod:`autograder.rubric.cluster`; both are re-exported here, so every table's parser is importable
from this module.
"""
from __future__ import annotations

import difflib
import math
import re
from typing import Any, Mapping

from autograder.assignment import ASSIGNMENT_FILES, DEFAULT_CHECKPOINT_POLICY
from autograder.rubric.model import (DEFAULT_ITEM_TIMEOUT_S, GRADESCOPE_MAX_TIMEOUT_S, VISIBILITIES,
                                     ContainerSettings, HeldoutSettings, LatePolicy, LeaderboardColumn, LookupDetector,
                                     Perturbation, RateLimit, RubricItem, TrainOnTest)
from autograder.rubric.cluster import parse_cluster, slurm_memory, slurm_minutes
from autograder.rubric.schema import check_table, is_valid

__all__ = ["INTEGRITY_LINES", "MIN_CONTAINER_MEMORY_MB", "TOP_KEYS",
           "check_sandbox", "check_table", "is_valid", "parse_checkpoint", "parse_cluster", "parse_container",
           "parse_heldout", "parse_items", "parse_late_policy", "parse_leaderboard", "parse_submission",
           "slurm_memory", "slurm_minutes"]

MIN_CONTAINER_MEMORY_MB = 512  # the grader and the worker each import torch (~370 MB together)
_NUMBER_RE = re.compile(r"^\d+(\.\d+)*$")

# key -> (accepted types, required)
_NUM, _STR = (int, float), (str,)
TOP_KEYS = {"title": (_STR, True), "total_points": (_NUM, True), "time_budget_s": (_NUM, False),
            "visibility": (_STR, False), "stdout_visibility": (_STR, False), "items": ((list,), True),
            "late_policy": ((dict,), False), "leaderboard": ((list,), False), "sandbox": ((dict,), False),
            "container": ((dict,), False), "checkpoint": ((dict,), False), "submission": ((dict,), False),
            "cluster": ((dict,), False), "heldout": ((dict,), False)}
_ITEM_KEYS = {"number": (_STR, True), "title": (_STR, True), "points": (_NUM, True), "check": (_STR, True),
              "params": ((dict,), False), "visibility": (_STR, False), "timeout_s": (_NUM, False),
              "tags": ((list,), False)}
_LATE_KEYS = {"amount": (_NUM, True), "unit": (_STR, False), "per": (_STR, False), "grace_minutes": (_NUM, False),
              "rounding": (_STR, False), "cap": (_NUM, False), "zero_after_late_due": ((bool,), False),
              "percent_of": (_STR, False)}
_LATE_CHOICES = {"unit": ("points", "percent"), "per": ("day", "hour"),
                 "rounding": ("ceil", "floor", "none"), "percent_of": ("earned", "total")}
_CONTAINER_KEYS = {"memory_mb": (_NUM, False), "cpus": (_NUM, False), "timeout_s": (_NUM, False)}
_CHECKPOINT_KEYS = {"buffer_budget": ((int,), False), "module_prefix": (_STR, False)}
_SUBMISSION_KEYS = {"files": ((list,), False)}
_LEADERBOARD_KEYS = {"name": ((str,), True), "item": ((str,), True), "field": ((str,), True),
                     "order": ((str,), False)}


def parse_items(raw_items: list, registry: Mapping[str, Any] | None, problems: list[str]) -> list[RubricItem]:
    """``[[items]]``; with a ``registry`` (check name -> CheckSpec) each item's check and its parameters too
    (:func:`autograder.checks.params.params_problems`, the checks' own validator)."""
    items: list[RubricItem] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_items, start=1):
        if not isinstance(raw, dict):
            problems.append(f"items[{index}]: must be a table ([[items]]), got {raw!r}")
            continue
        label = raw.get("number") if isinstance(raw.get("number"), str) else f"#{index}"
        where = f"item {label}: "
        before = len(problems)
        check_table(raw, _ITEM_KEYS, where, problems)
        number = raw.get("number")
        if isinstance(number, str):
            if not _NUMBER_RE.match(number):
                problems.append(f"{where}number must look like \"1\" or \"1.2\", got {number!r}")
            elif number in seen:
                problems.append(f"{where}duplicate number {number!r}")
            seen.add(number)
        if is_valid(raw, _ITEM_KEYS, "points") and (raw["points"] < 0 or not math.isfinite(raw["points"])):
            problems.append(f"{where}points must be >= 0, got {raw['points']}")
        if is_valid(raw, _ITEM_KEYS, "timeout_s") and not raw["timeout_s"] > 0:
            problems.append(f"{where}timeout_s must be > 0, got {raw['timeout_s']}")
        if is_valid(raw, _ITEM_KEYS, "visibility") and raw["visibility"] not in VISIBILITIES:
            problems.append(f"{where}visibility {raw['visibility']!r} is not one of {', '.join(VISIBILITIES)}")
        if is_valid(raw, _ITEM_KEYS, "tags") and not all(isinstance(t, str) for t in raw["tags"]):
            problems.append(f"{where}tags must be a list of strings, got {raw['tags']!r}")
        params = raw.get("params", {}) if is_valid(raw, _ITEM_KEYS, "params") or "params" not in raw else {}
        if registry is not None and is_valid(raw, _ITEM_KEYS, "check"):
            spec = registry.get(raw["check"])
            if spec is None:
                close = difflib.get_close_matches(raw["check"], list(registry), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(registry))}"
                problems.append(f"{where}unknown check {raw['check']!r} ({hint})")
            else:
                from autograder.checks.params import params_problems

                problems.extend(where + p for p in params_problems(spec, params))
        if len(problems) == before:
            items.append(RubricItem(
                number=number, title=raw["title"], points=float(raw["points"]), check=raw["check"],
                params=dict(params), visibility=raw.get("visibility", "visible"),
                timeout_s=float(raw.get("timeout_s", DEFAULT_ITEM_TIMEOUT_S)), tags=tuple(raw.get("tags", ())),
            ))
    return items


def parse_late_policy(raw: Mapping[str, Any], problems: list[str]) -> LatePolicy:
    where = "late_policy: "
    before = len(problems)
    check_table(raw, _LATE_KEYS, where, problems)
    for key, choices in _LATE_CHOICES.items():
        if is_valid(raw, _LATE_KEYS, key) and raw[key] not in choices:
            problems.append(f"{where}{key} {raw[key]!r} is not one of {', '.join(choices)}")
    for key in ("amount", "grace_minutes", "cap"):
        if is_valid(raw, _LATE_KEYS, key) and raw[key] < 0:
            problems.append(f"{where}{key} must be >= 0, got {raw[key]}")
    if len(problems) > before:
        return LatePolicy()
    return LatePolicy(**{k: (float(v) if k in ("amount", "grace_minutes", "cap") else v) for k, v in raw.items()})


def check_sandbox(raw: Mapping[str, Any], problems: list[str]) -> None:
    """``[sandbox]`` keys are :class:`autograder.sandbox.SandboxLimits` fields, typed like their defaults."""
    import dataclasses

    from autograder.sandbox import SandboxLimits

    defaults = {f.name: getattr(SandboxLimits(), f.name) for f in dataclasses.fields(SandboxLimits)}
    schema = {name: ((float, int) if isinstance(value, float) else (type(value),), False) for name, value in defaults.items()}
    check_table(raw, schema, "sandbox: ", problems)
    for key, value in raw.items():
        if key in schema and isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            problems.append(f"sandbox: {key} must be >= 0, got {value}")


def parse_container(raw: Mapping[str, Any], time_budget_s: float, problems: list[str]) -> ContainerSettings:
    where = "container: "
    before = len(problems)
    check_table(raw, _CONTAINER_KEYS, where, problems)
    if is_valid(raw, _CONTAINER_KEYS, "memory_mb") and not float(raw["memory_mb"]).is_integer():
        problems.append(f"{where}memory_mb must be a whole number of MB, got {raw['memory_mb']}")
    elif is_valid(raw, _CONTAINER_KEYS, "memory_mb") and not MIN_CONTAINER_MEMORY_MB <= raw["memory_mb"] <= 65536:
        problems.append(f"{where}memory_mb must be in [{MIN_CONTAINER_MEMORY_MB}, 65536] (the grader and the "
                        f"worker each import torch), got {raw['memory_mb']}")
    if is_valid(raw, _CONTAINER_KEYS, "cpus") and not 0 < raw["cpus"] <= 64:
        problems.append(f"{where}cpus must be in (0, 64], got {raw['cpus']}")
    if is_valid(raw, _CONTAINER_KEYS, "timeout_s") and not time_budget_s < raw["timeout_s"] <= GRADESCOPE_MAX_TIMEOUT_S:
        problems.append(f"{where}timeout_s must be above time_budget_s ({time_budget_s:g}: the grader needs its whole "
                        f"budget plus start-up) and at most {GRADESCOPE_MAX_TIMEOUT_S} (Gradescope's maximum), "
                        f"got {raw['timeout_s']}")
    default = ContainerSettings.default_for(time_budget_s)
    if len(problems) > before:
        return default
    return ContainerSettings(memory_mb=int(raw.get("memory_mb", default.memory_mb)), cpus=float(raw.get("cpus", default.cpus)),
                             timeout_s=float(raw.get("timeout_s", default.timeout_s)))


def parse_leaderboard(raw_columns: list, item_numbers: set[str], problems: list[str]) -> list[LeaderboardColumn]:
    columns = []
    for index, raw in enumerate(raw_columns, start=1):
        where = f"leaderboard[{index}]: "
        if not isinstance(raw, dict):
            problems.append(f"{where}must be a table ([[leaderboard]]), got {raw!r}")
            continue
        before = len(problems)
        check_table(raw, _LEADERBOARD_KEYS, where, problems)
        if is_valid(raw, _LEADERBOARD_KEYS, "order") and raw["order"] not in ("asc", "desc"):
            problems.append(f"{where}order {raw['order']!r} is not one of asc, desc")
        if is_valid(raw, _LEADERBOARD_KEYS, "item") and raw["item"] not in item_numbers:
            problems.append(f"{where}item {raw['item']!r} is not a rubric item number")
        if len(problems) == before:
            columns.append(LeaderboardColumn(**raw))
    return columns


def parse_checkpoint(raw: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """``[checkpoint]``: ``buffer_budget`` (values model.pt may hold beyond NoteCNN's parameters) and
    ``module_prefix`` ("accept": read DataParallel's ``module.`` keys with a note; "refuse": fail with the fix)."""
    where = "checkpoint: "
    before = len(problems)
    check_table(raw, _CHECKPOINT_KEYS, where, problems)
    if is_valid(raw, _CHECKPOINT_KEYS, "buffer_budget") and not 0 <= raw["buffer_budget"] <= 1_000_000:
        problems.append(f"{where}buffer_budget must be in [0, 1000000] values, got {raw['buffer_budget']}")
    if is_valid(raw, _CHECKPOINT_KEYS, "module_prefix") and raw["module_prefix"] not in ("accept", "refuse"):
        problems.append(f"{where}module_prefix {raw['module_prefix']!r} is not one of accept, refuse")
    return dict(DEFAULT_CHECKPOINT_POLICY) if len(problems) > before else {**DEFAULT_CHECKPOINT_POLICY, **raw}


def parse_submission(raw: Mapping[str, Any], problems: list[str]) -> tuple[str, ...]:
    """``[submission] files``: the only files of an upload copied next to the grader (default the four
    the assignment names); anything else is ignored with a note, so no data file reaches student code."""
    where = "submission: "
    before = len(problems)
    check_table(raw, _SUBMISSION_KEYS, where, problems)
    files = raw.get("files", list(ASSIGNMENT_FILES))
    if is_valid(raw, _SUBMISSION_KEYS, "files"):
        bad = [f for f in files if not isinstance(f, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", f)
               or f.startswith(".")]
        if bad or not files:
            problems.append(f"{where}files must be a non-empty list of plain file names (no folders), got {files!r}")
    return ASSIGNMENT_FILES if len(problems) > before else tuple(files)



INTEGRITY_LINES = ("always", "flagged", "never")
_HELDOUT_KEYS = {"public_fraction": (_NUM, False), "details_visibility": (_STR, False), "max_source_kb": (_NUM, False),
                 "integrity_line": (_STR, False), "control_weight": (_NUM, False),
                 "perturbation": ((dict,), False), "rate_limit": ((dict,), False), "train_on_test": ((dict,), False),
                 "lookup": ((dict,), False)}
# sub-table -> (data class, key -> (types, (low, high) or None))
_HELDOUT_TABLES = {
    "perturbation": (Perturbation, {"enabled": ((bool,), None), "gain_db": (_NUM, (0.0, 6.0)),
                                    "noise_db": (_NUM, (0.0, 3.0))}),
    "rate_limit": (RateLimit, {"max_evaluations": ((int,), (0, 1000)), "window_hours": (_NUM, (0.01, 24.0 * 366))}),
    "train_on_test": (TrainOnTest, {"enabled": ((bool,), None), "min_accuracy": (_NUM, (0.0, 1.0)),
                                    "same_margin": (_NUM, (-1.0, 1.0)), "ratio_margin": (_NUM, (0.0, 10.0))}),
    "lookup": (LookupDetector, {"enabled": ((bool,), None), "confidence": (_NUM, (0.5, 0.9999)),
                                "margin": (_NUM, (0.0, 0.5))}),
}


def _heldout_subtable(name: str, raw: Mapping[str, Any], problems: list[str]) -> Any:
    cls, keys = _HELDOUT_TABLES[name]
    where = f"heldout.{name}: "
    before = len(problems)
    check_table(raw, {key: (types, False) for key, (types, _) in keys.items()}, where, problems)
    for key, (types, bounds) in keys.items():
        value = raw.get(key)
        if bounds is not None and key in raw and isinstance(value, types) and not isinstance(value, bool) \
                and not bounds[0] <= value <= bounds[1]:
            problems.append(f"{where}{key} must be between {bounds[0]:g} and {bounds[1]:g}, got {value!r}")
    if len(problems) > before:
        return cls()
    return cls(**{k: (float(v) if isinstance(getattr(cls(), k), float) else v) for k, v in raw.items()})


def parse_heldout(raw: Mapping[str, Any], problems: list[str]) -> HeldoutSettings:
    """``[heldout]``: perturbation, public/private split, the control split's weight, what students see, rate
    limit, the train-on-test and lookup detectors."""
    where = "heldout: "
    before = len(problems)
    check_table(raw, _HELDOUT_KEYS, where, problems)
    if is_valid(raw, _HELDOUT_KEYS, "public_fraction") and not 0 <= raw["public_fraction"] < 1:
        problems.append(f"{where}public_fraction must be in [0, 1) (0: no public/private split), got {raw['public_fraction']}")
    if is_valid(raw, _HELDOUT_KEYS, "details_visibility") and raw["details_visibility"] not in VISIBILITIES:
        problems.append(f"{where}details_visibility {raw['details_visibility']!r} is not one of {', '.join(VISIBILITIES)}")
    if is_valid(raw, _HELDOUT_KEYS, "integrity_line") and raw["integrity_line"] not in INTEGRITY_LINES:
        problems.append(f"{where}integrity_line {raw['integrity_line']!r} is not one of {', '.join(INTEGRITY_LINES)}")
    if is_valid(raw, _HELDOUT_KEYS, "control_weight") and not 0 <= raw["control_weight"] <= 1:
        problems.append(f"{where}control_weight must be between 0 and 1: the share of the held-out item's accuracy "
                        "taken from the private control split (`notegrade heldout --control`); 0 scores the public "
                        f"notes only, 1 the control notes only; got {raw['control_weight']}")
    if is_valid(raw, _HELDOUT_KEYS, "max_source_kb") and raw["max_source_kb"] < 0:
        problems.append(f"{where}max_source_kb must be >= 0 (0: no budget), got {raw['max_source_kb']}")
    tables = {name: _heldout_subtable(name, raw[name], problems) for name in _HELDOUT_TABLES
              if is_valid(raw, _HELDOUT_KEYS, name)}
    if len(problems) > before:
        return HeldoutSettings()
    return HeldoutSettings(public_fraction=float(raw.get("public_fraction", 0.0)),
                           details_visibility=raw.get("details_visibility", "after_due_date"),
                           max_source_kb=float(raw.get("max_source_kb", HeldoutSettings.max_source_kb)),
                           integrity_line=raw.get("integrity_line", "always"),
                           control_weight=float(raw.get("control_weight", 0.0)), **tables)
