"""Rubrics as data: parse and validate ``rubrics/*.toml`` into a :class:`Rubric`.

A rubric lists numbered items (title, points, visibility, per-item timeout, the check it runs and
that check's parameters), the late policy, the global time budget, optional sandbox limits, the
grading container's resources (``[container]``: mirror them in Gradescope's settings), the
leaderboard columns and the Slurm profile for cluster grading (``[cluster]``, optional).  Every problem is reported with the file, the item and the reason, all at once::

    rubrics/x.toml: 2 problems: item 1.2: unknown check 'foo' (known: ...); points add up to 95, but total_points is 100

This module is the entry point: it reads the TOML and checks the top-level keys; the data classes
live in ``rubric_model.py`` and the checks of each table in ``rubric_tables.py``, both re-exported here.

Example
-------
>>> rubric = parse_rubric('''
... title = "Demo"
... total_points = 10
... [[items]]
... number = "1"
... title = "Parameter counts"
... points = 10
... check = "architecture_params"
... ''', source="demo.toml", validate_checks=False)
>>> rubric.items[0].number, rubric.items[0].visibility, rubric.time_budget_s
('1', 'visible', 480.0)
"""
from __future__ import annotations

import math
import pathlib
from typing import Any, Mapping

try:  # Python 3.11+; Gradescope's Ubuntu 22.04 image has 3.10, which needs the tomli backport.
    import tomllib  # novermin  (guarded: tomli below on 3.10)
except ModuleNotFoundError:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[no-redef]

from autograder.errors import NotegradeError
from autograder.rubric.model import (
    CONTAINER_STARTUP_MARGIN_S,
    DEFAULT_ITEM_TIMEOUT_S,
    DEFAULT_TIME_BUDGET_S,
    GRADESCOPE_MAX_TIMEOUT_S,
    VISIBILITIES,
    ContainerSettings,
    HeldoutSettings,
    LatePolicy,
    LeaderboardColumn,
    Rubric,
    RubricItem,
)
from autograder.rubric.tables import (
    MIN_CONTAINER_MEMORY_MB,
    TOP_KEYS,
    check_sandbox,
    check_table,
    is_valid,
    parse_checkpoint,
    parse_cluster,
    parse_container,
    parse_heldout,
    parse_items,
    parse_late_policy,
    parse_leaderboard,
    parse_submission,
)

__all__ = ["CONTAINER_STARTUP_MARGIN_S", "DEFAULT_ITEM_TIMEOUT_S", "DEFAULT_TIME_BUDGET_S", "GRADESCOPE_MAX_TIMEOUT_S",
           "MIN_CONTAINER_MEMORY_MB", "VISIBILITIES", "ContainerSettings", "HeldoutSettings", "LatePolicy", "LeaderboardColumn", "Rubric",
           "RubricItem", "load_rubric", "parse_rubric", "tomllib"]


def _default_registry() -> Mapping[str, Any]:
    """The real checks: ``autograder.checks.REGISTRY``."""
    try:
        from autograder import checks

        return checks.REGISTRY
    except (ImportError, AttributeError) as err:  # incomplete grading code: a packaging bug, say which part
        raise NotegradeError(f"cannot validate rubric checks: autograder.checks.REGISTRY is unavailable ({err})") from err


def parse_rubric(text: str, *, source: str = "<string>", registry: Mapping[str, Any] | None = None,
                 validate_checks: bool = True) -> Rubric:
    """Parse and validate rubric TOML text; raise :class:`NotegradeError` listing every problem.

    ``registry`` maps check names to ``CheckSpec`` (default: ``autograder.checks.REGISTRY``); every item's
    parameters are checked by the checks' own validator (:mod:`autograder.checks.params`);
    ``validate_checks=False`` skips check names/params (for tools that only read the structure).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # the message carries "(at line L, column C)"
        raise NotegradeError(f"{source}: not valid TOML: {err}") from None
    if validate_checks and registry is None:
        registry = _default_registry()
    problems: list[str] = []
    check_table(raw, TOP_KEYS, "", problems)
    items = parse_items(raw["items"], registry if validate_checks else None, problems) \
        if is_valid(raw, TOP_KEYS, "items") else []
    if is_valid(raw, TOP_KEYS, "items") and not raw["items"]:
        problems.append("the rubric has no items")
    for key in ("visibility", "stdout_visibility"):
        if is_valid(raw, TOP_KEYS, key) and raw[key] not in VISIBILITIES:
            problems.append(f"{key} {raw[key]!r} is not one of {', '.join(VISIBILITIES)}")
    budget = raw.get("time_budget_s", DEFAULT_TIME_BUDGET_S)
    if is_valid(raw, TOP_KEYS, "time_budget_s") and not 0 < budget <= GRADESCOPE_MAX_TIMEOUT_S:
        problems.append(f"time_budget_s must be in (0, {GRADESCOPE_MAX_TIMEOUT_S}] (Gradescope's maximum), got {budget}")
    if is_valid(raw, TOP_KEYS, "total_points") and is_valid(raw, TOP_KEYS, "items") and items \
            and len(items) == len(raw["items"]):  # only when every item parsed, or the sum is meaningless
        declared, summed = float(raw["total_points"]), sum(item.points for item in items)
        if not math.isclose(declared, summed, abs_tol=1e-9):
            problems.append(f"points add up to {summed:g}, but total_points is {declared:g}")
    late = parse_late_policy(raw["late_policy"], problems) if is_valid(raw, TOP_KEYS, "late_policy") else LatePolicy()
    valid_budget = is_valid(raw, TOP_KEYS, "time_budget_s") and 0 < budget <= GRADESCOPE_MAX_TIMEOUT_S
    container = parse_container(raw["container"] if is_valid(raw, TOP_KEYS, "container") else {},
                                float(budget) if valid_budget or "time_budget_s" not in raw else DEFAULT_TIME_BUDGET_S,
                                problems)
    checkpoint = parse_checkpoint(raw["checkpoint"] if is_valid(raw, TOP_KEYS, "checkpoint") else {}, problems)
    submission_files = parse_submission(raw["submission"] if is_valid(raw, TOP_KEYS, "submission") else {}, problems)
    if validate_checks and is_valid(raw, TOP_KEYS, "sandbox"):
        check_sandbox(raw["sandbox"], problems)
    # Declared numbers, even of items rejected above, so one bad item doesn't cascade.
    numbers = {i.get("number") for i in raw["items"] if isinstance(i, dict)} if is_valid(raw, TOP_KEYS, "items") else set()
    columns = parse_leaderboard(raw["leaderboard"], numbers, problems) \
        if is_valid(raw, TOP_KEYS, "leaderboard") else []
    cluster = parse_cluster(raw["cluster"], problems) if is_valid(raw, TOP_KEYS, "cluster") else {}
    heldout = parse_heldout(raw["heldout"], problems) if is_valid(raw, TOP_KEYS, "heldout") else HeldoutSettings()
    if problems:
        count = f"{len(problems)} problems: " if len(problems) > 1 else ""
        raise NotegradeError(f"{source}: {count}" + "; ".join(problems))
    return Rubric(
        title=raw["title"], total_points=float(raw["total_points"]), items=tuple(items), late_policy=late,
        leaderboard=tuple(columns), time_budget_s=float(budget), sandbox=dict(raw.get("sandbox", {})), container=container,
        checkpoint=checkpoint, submission_files=submission_files, cluster=cluster,
        visibility=raw.get("visibility", "visible"), stdout_visibility=raw.get("stdout_visibility", "hidden"),
        source=source, heldout=heldout,
    )


def load_rubric(path: str | pathlib.Path, *, registry: Mapping[str, Any] | None = None,
                validate_checks: bool = True) -> Rubric:
    """Read and validate a rubric file (see :func:`parse_rubric`)."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotegradeError(f"{path}: rubric file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise NotegradeError(f"{path}: cannot read the rubric: {err}") from None
    return parse_rubric(text, source=str(path), registry=registry, validate_checks=validate_checks)


def autograder_rubric_text(autograder: "str | pathlib.Path") -> str:
    """The ``rubric.toml`` of an autograder zip or its unpacked folder, as text.

    Raises what reading it raises (``OSError``, ``KeyError`` for a zip without one,
    ``zipfile.BadZipFile``, ``UnicodeDecodeError``): each caller says what that means for it."""
    import zipfile

    from autograder.layout import RUBRIC_FILE

    autograder = pathlib.Path(autograder)
    if autograder.is_dir():
        return (autograder / RUBRIC_FILE).read_text(encoding="utf-8")
    with zipfile.ZipFile(autograder) as archive:
        return archive.read(RUBRIC_FILE).decode("utf-8")
