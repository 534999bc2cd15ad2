"""Rubrics as data: parse and validate ``rubrics/*.toml`` into a :class:`Rubric`.

A rubric lists numbered items (title, points, visibility, per-item timeout, the check it runs and
that check's parameters), the late policy, the global time budget, optional sandbox limits, the
grading container's resources (``[container]``: mirror them in Gradescope's settings) and the
leaderboard columns.  Every problem is reported with the file, the item and the reason, all at once::

    rubrics/x.toml: 2 problems: item 1.2: unknown check 'foo' (known: ...); points add up to 95, but total_points is 100

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

import difflib
import hashlib
import json
import math
import pathlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

try:  # Python 3.11+; Gradescope's Ubuntu 22.04 image has 3.10, which needs the tomli backport.
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[no-redef]

from autograder.errors import NotegradeError

VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
# Gradescope kills the whole run at its timeout (10 min by default) and shows no tests at all,
# so the default budget leaves ~2 minutes for start-up, the report and results.json.
DEFAULT_TIME_BUDGET_S = 480.0
GRADESCOPE_MAX_TIMEOUT_S = 40 * 60
DEFAULT_ITEM_TIMEOUT_S = 60.0
CONTAINER_STARTUP_MARGIN_S = 120.0  # container start-up, the report and results.json, beyond the budget
MIN_CONTAINER_MEMORY_MB = 512  # the grader and the worker each import torch (~370 MB together)
_NUMBER_RE = re.compile(r"^\d+(\.\d+)*$")


@dataclass(frozen=True)
class RubricItem:
    """One gradebook line: ``points`` x the check's fraction (0..1) is the score."""

    number: str
    title: str
    points: float
    check: str
    params: dict[str, Any] = field(default_factory=dict)
    visibility: str = "visible"
    timeout_s: float = DEFAULT_ITEM_TIMEOUT_S
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LatePolicy:
    """How lateness turns into a deduction (see ``autograder/late.py``).

    ``amount`` points (``unit="points"``) or percent (``unit="percent"``, of the points earned or of
    the total, ``percent_of``) per started ``per`` (day | hour; ``rounding`` ceil | floor | none);
    no deduction within ``grace_minutes`` of the due date; the deduction never exceeds ``cap`` (same
    unit as ``amount``); after the late due date the score is 0 when ``zero_after_late_due``.
    """

    amount: float = 0.0
    unit: str = "points"
    per: str = "day"
    grace_minutes: float = 0.0
    rounding: str = "ceil"
    cap: float | None = None
    zero_after_late_due: bool = True
    percent_of: str = "earned"


@dataclass(frozen=True)
class LeaderboardColumn:
    """A leaderboard column filled from one item's check data (e.g. item 4.1's ``accuracy``)."""

    name: str
    item: str
    field: str
    order: str = "desc"


@dataclass(frozen=True)
class ContainerSettings:
    """What one grading container gets: memory (MB, no swap), CPUs, and a wall-clock limit (s).

    Gradescope's defaults are 768 MB and a 10-minute timeout; ``notegrade grade --docker`` applies
    these, and the instructor sets the same in Gradescope's autograder settings.  Without
    ``timeout_s`` it is the time budget + 120 s (start-up and reporting), at most 2400 s.
    """

    memory_mb: int = 768
    cpus: float = 1.0
    timeout_s: float = DEFAULT_TIME_BUDGET_S + CONTAINER_STARTUP_MARGIN_S

    @classmethod
    def default_for(cls, time_budget_s: float) -> "ContainerSettings":
        return cls(timeout_s=min(time_budget_s + CONTAINER_STARTUP_MARGIN_S, GRADESCOPE_MAX_TIMEOUT_S))


@dataclass(frozen=True)
class Rubric:
    """A validated rubric; ``rubric_hash`` identifies its content (not its formatting)."""

    title: str
    total_points: float
    items: tuple[RubricItem, ...]
    late_policy: LatePolicy = LatePolicy()
    leaderboard: tuple[LeaderboardColumn, ...] = ()
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    sandbox: dict[str, Any] = field(default_factory=dict)
    container: ContainerSettings = ContainerSettings()
    visibility: str = "visible"
    stdout_visibility: str = "hidden"
    source: str = "<string>"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), without the source path."""
        data = asdict(self)
        data.pop("source")
        if self.container == ContainerSettings.default_for(self.time_budget_s):
            data.pop("container")  # so rubrics without [container] keep the hash they had before it existed
        return data

    @property
    def rubric_hash(self) -> str:
        """sha256 of the canonical JSON of the content: comments and key order don't change it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def item(self, number: str) -> RubricItem:
        for item in self.items:
            if item.number == number:
                return item
        raise KeyError(number)


# key -> (accepted types, required)
_NUM, _STR = (int, float), (str,)
_TOP_KEYS = {"title": (_STR, True), "total_points": (_NUM, True), "time_budget_s": (_NUM, False),
             "visibility": (_STR, False), "stdout_visibility": (_STR, False), "items": ((list,), True),
             "late_policy": ((dict,), False), "leaderboard": ((list,), False), "sandbox": ((dict,), False),
             "container": ((dict,), False)}
_ITEM_KEYS = {"number": (_STR, True), "title": (_STR, True), "points": (_NUM, True), "check": (_STR, True),
              "params": ((dict,), False), "visibility": (_STR, False), "timeout_s": (_NUM, False),
              "tags": ((list,), False)}
_LATE_KEYS = {"amount": (_NUM, True), "unit": (_STR, False), "per": (_STR, False), "grace_minutes": (_NUM, False),
              "rounding": (_STR, False), "cap": (_NUM, False), "zero_after_late_due": ((bool,), False),
              "percent_of": (_STR, False)}
_LATE_CHOICES = {"unit": ("points", "percent"), "per": ("day", "hour"),
                 "rounding": ("ceil", "floor", "none"), "percent_of": ("earned", "total")}
_CONTAINER_KEYS = {"memory_mb": (_NUM, False), "cpus": (_NUM, False), "timeout_s": (_NUM, False)}
_LEADERBOARD_KEYS = {"name": ((str,), True), "item": ((str,), True), "field": ((str,), True),
                     "order": ((str,), False)}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join({"str": "a string", "int": "a number", "float": "a number", "list": "a list",
                        "dict": "a table", "bool": "true/false"}[t.__name__] for t in types[:1])


def _check_table(table: Mapping[str, Any], schema: dict, where: str, problems: list[str]) -> None:
    """Unknown keys (with a did-you-mean), missing required keys and wrong types."""
    for key, value in table.items():
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(schema)})"
            problems.append(f"{where}unknown key {key!r}{hint}")
            continue
        types, _ = schema[key]
        # bool is an int in Python; a rubric saying `points = true` is a mistake, not 1 point.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            problems.append(f"{where}{key!r} must be {_type_name(types)}, got {type(value).__name__} {value!r}")
    for key, (_, required) in schema.items():
        if required and key not in table:
            problems.append(f"{where}missing required key {key!r}")


def _valid(table: Mapping[str, Any], schema: dict, key: str) -> bool:
    types = schema[key][0]
    value = table.get(key)
    return key in table and isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _default_registry() -> tuple[Mapping[str, Any], Callable[[str, dict], list[str]] | None]:
    """The real checks: ``(REGISTRY, validate_params)`` from ``autograder.checks``."""
    try:
        from autograder import checks

        return checks.REGISTRY, getattr(checks, "validate_params", None)
    except (ImportError, AttributeError) as err:  # incomplete grading code: a packaging bug, say which part
        raise NotegradeError(f"cannot validate rubric checks: autograder.checks.REGISTRY is unavailable ({err})") from err


def validate_check_params(spec: Any, params: Mapping[str, Any]) -> list[str]:
    """Problems with ``params`` by the :class:`~autograder.checks.outcome.CheckSpec` contract.

    Known names only; a ``None`` default means required; a value has the type of its default
    (an int is accepted where a float is expected).  The real checks refine this with their own
    ``autograder.checks.validate_params`` (value ranges etc.), which :func:`parse_rubric` prefers.
    """
    problems = []
    for name, value in params.items():
        if name not in spec.params:
            problems.append(f"unknown parameter {name!r} for check {spec.name!r} (known: {', '.join(spec.params) or 'none'})")
            continue
        default = spec.params[name]
        if default is None:
            continue
        expected = float if isinstance(default, float) else type(default)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (numeric if expected is float else isinstance(value, expected)):
            problems.append(f"parameter {name!r} must be {type(default).__name__}, got {value!r}")
    for name, default in spec.params.items():
        if default is None and name not in params:
            problems.append(f"check {spec.name!r} needs parameter {name!r}")
    return problems


def _parse_items(raw_items: list, registry: Mapping[str, Any] | None, validator: Callable | None,
                 problems: list[str]) -> list[RubricItem]:
    items: list[RubricItem] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_items, start=1):
        if not isinstance(raw, dict):
            problems.append(f"items[{index}]: must be a table ([[items]]), got {raw!r}")
            continue
        label = raw.get("number") if isinstance(raw.get("number"), str) else f"#{index}"
        where = f"item {label}: "
        before = len(problems)
        _check_table(raw, _ITEM_KEYS, where, problems)
        number = raw.get("number")
        if isinstance(number, str):
            if not _NUMBER_RE.match(number):
                problems.append(f"{where}number must look like \"1\" or \"1.2\", got {number!r}")
            elif number in seen:
                problems.append(f"{where}duplicate number {number!r}")
            seen.add(number)
        if _valid(raw, _ITEM_KEYS, "points") and (raw["points"] < 0 or not math.isfinite(raw["points"])):
            problems.append(f"{where}points must be >= 0, got {raw['points']}")
        if _valid(raw, _ITEM_KEYS, "timeout_s") and not raw["timeout_s"] > 0:
            problems.append(f"{where}timeout_s must be > 0, got {raw['timeout_s']}")
        if _valid(raw, _ITEM_KEYS, "visibility") and raw["visibility"] not in VISIBILITIES:
            problems.append(f"{where}visibility {raw['visibility']!r} is not one of {', '.join(VISIBILITIES)}")
        if _valid(raw, _ITEM_KEYS, "tags") and not all(isinstance(t, str) for t in raw["tags"]):
            problems.append(f"{where}tags must be a list of strings, got {raw['tags']!r}")
        params = raw.get("params", {}) if _valid(raw, _ITEM_KEYS, "params") or "params" not in raw else {}
        if registry is not None and _valid(raw, _ITEM_KEYS, "check"):
            spec = registry.get(raw["check"])
            if spec is None:
                close = difflib.get_close_matches(raw["check"], list(registry), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(registry))}"
                problems.append(f"{where}unknown check {raw['check']!r} ({hint})")
            else:
                found = validator(spec.name, dict(params)) if validator else validate_check_params(spec, params)
                problems.extend(where + p for p in found)
        if len(problems) == before:
            items.append(RubricItem(
                number=number, title=raw["title"], points=float(raw["points"]), check=raw["check"],
                params=dict(params), visibility=raw.get("visibility", "visible"),
                timeout_s=float(raw.get("timeout_s", DEFAULT_ITEM_TIMEOUT_S)), tags=tuple(raw.get("tags", ())),
            ))
    return items


def _parse_late(raw: Mapping[str, Any], problems: list[str]) -> LatePolicy:
    where = "late_policy: "
    before = len(problems)
    _check_table(raw, _LATE_KEYS, where, problems)
    for key, choices in _LATE_CHOICES.items():
        if _valid(raw, _LATE_KEYS, key) and raw[key] not in choices:
            problems.append(f"{where}{key} {raw[key]!r} is not one of {', '.join(choices)}")
    for key in ("amount", "grace_minutes", "cap"):
        if _valid(raw, _LATE_KEYS, key) and raw[key] < 0:
            problems.append(f"{where}{key} must be >= 0, got {raw[key]}")
    if len(problems) > before:
        return LatePolicy()
    return LatePolicy(**{k: (float(v) if k in ("amount", "grace_minutes", "cap") else v) for k, v in raw.items()})


def _check_sandbox(raw: Mapping[str, Any], problems: list[str]) -> None:
    """``[sandbox]`` keys are :class:`autograder.sandbox.SandboxLimits` fields, typed like their defaults."""
    import dataclasses

    from autograder.sandbox import SandboxLimits

    defaults = {f.name: getattr(SandboxLimits(), f.name) for f in dataclasses.fields(SandboxLimits)}
    schema = {name: ((float, int) if isinstance(value, float) else (type(value),), False) for name, value in defaults.items()}
    _check_table(raw, schema, "sandbox: ", problems)
    for key, value in raw.items():
        if key in schema and isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            problems.append(f"sandbox: {key} must be >= 0, got {value}")


def _parse_container(raw: Mapping[str, Any], time_budget_s: float, problems: list[str]) -> ContainerSettings:
    where = "container: "
    before = len(problems)
    _check_table(raw, _CONTAINER_KEYS, where, problems)
    if _valid(raw, _CONTAINER_KEYS, "memory_mb") and not float(raw["memory_mb"]).is_integer():
        problems.append(f"{where}memory_mb must be a whole number of MB, got {raw['memory_mb']}")
    elif _valid(raw, _CONTAINER_KEYS, "memory_mb") and not MIN_CONTAINER_MEMORY_MB <= raw["memory_mb"] <= 65536:
        problems.append(f"{where}memory_mb must be in [{MIN_CONTAINER_MEMORY_MB}, 65536] (the grader and the "
                        f"worker each import torch), got {raw['memory_mb']}")
    if _valid(raw, _CONTAINER_KEYS, "cpus") and not 0 < raw["cpus"] <= 64:
        problems.append(f"{where}cpus must be in (0, 64], got {raw['cpus']}")
    if _valid(raw, _CONTAINER_KEYS, "timeout_s") and not time_budget_s < raw["timeout_s"] <= GRADESCOPE_MAX_TIMEOUT_S:
        problems.append(f"{where}timeout_s must be above time_budget_s ({time_budget_s:g}: the grader needs its whole "
                        f"budget plus start-up) and at most {GRADESCOPE_MAX_TIMEOUT_S} (Gradescope's maximum), "
                        f"got {raw['timeout_s']}")
    default = ContainerSettings.default_for(time_budget_s)
    if len(problems) > before:
        return default
    return ContainerSettings(memory_mb=int(raw.get("memory_mb", default.memory_mb)), cpus=float(raw.get("cpus", default.cpus)),
                             timeout_s=float(raw.get("timeout_s", default.timeout_s)))


def _parse_leaderboard(raw_columns: list, item_numbers: set[str], problems: list[str]) -> list[LeaderboardColumn]:
    columns = []
    for index, raw in enumerate(raw_columns, start=1):
        where = f"leaderboard[{index}]: "
        if not isinstance(raw, dict):
            problems.append(f"{where}must be a table ([[leaderboard]]), got {raw!r}")
            continue
        before = len(problems)
        _check_table(raw, _LEADERBOARD_KEYS, where, problems)
        if _valid(raw, _LEADERBOARD_KEYS, "order") and raw["order"] not in ("asc", "desc"):
            problems.append(f"{where}order {raw['order']!r} is not one of asc, desc")
        if _valid(raw, _LEADERBOARD_KEYS, "item") and raw["item"] not in item_numbers:
            problems.append(f"{where}item {raw['item']!r} is not a rubric item number")
        if len(problems) == before:
            columns.append(LeaderboardColumn(**raw))
    return columns


def parse_rubric(text: str, *, source: str = "<string>", registry: Mapping[str, Any] | None = None,
                 validate_checks: bool = True) -> Rubric:
    """Parse and validate rubric TOML text; raise :class:`NotegradeError` listing every problem.

    ``registry`` maps check names to ``CheckSpec`` (default: ``autograder.checks.REGISTRY``, whose
    ``validate_params`` then checks the parameters; a given registry is checked by the CheckSpec contract);
    ``validate_checks=False`` skips check names/params (for tools that only read the structure).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # the message carries "(at line L, column C)"
        raise NotegradeError(f"{source}: not valid TOML: {err}") from None
    validator = None
    if validate_checks and registry is None:
        registry, validator = _default_registry()
    problems: list[str] = []
    _check_table(raw, _TOP_KEYS, "", problems)
    items = _parse_items(raw["items"], registry if validate_checks else None, validator, problems) \
        if _valid(raw, _TOP_KEYS, "items") else []
    if _valid(raw, _TOP_KEYS, "items") and not raw["items"]:
        problems.append("the rubric has no items")
    for key in ("visibility", "stdout_visibility"):
        if _valid(raw, _TOP_KEYS, key) and raw[key] not in VISIBILITIES:
            problems.append(f"{key} {raw[key]!r} is not one of {', '.join(VISIBILITIES)}")
    budget = raw.get("time_budget_s", DEFAULT_TIME_BUDGET_S)
    if _valid(raw, _TOP_KEYS, "time_budget_s") and not 0 < budget <= GRADESCOPE_MAX_TIMEOUT_S:
        problems.append(f"time_budget_s must be in (0, {GRADESCOPE_MAX_TIMEOUT_S}] (Gradescope's maximum), got {budget}")
    if _valid(raw, _TOP_KEYS, "total_points") and _valid(raw, _TOP_KEYS, "items") and items \
            and len(items) == len(raw["items"]):  # only when every item parsed, or the sum is meaningless
        declared, summed = float(raw["total_points"]), sum(item.points for item in items)
        if not math.isclose(declared, summed, abs_tol=1e-9):
            problems.append(f"points add up to {summed:g}, but total_points is {declared:g}")
    late = _parse_late(raw["late_policy"], problems) if _valid(raw, _TOP_KEYS, "late_policy") else LatePolicy()
    valid_budget = _valid(raw, _TOP_KEYS, "time_budget_s") and 0 < budget <= GRADESCOPE_MAX_TIMEOUT_S
    container = _parse_container(raw["container"] if _valid(raw, _TOP_KEYS, "container") else {},
                                 float(budget) if valid_budget or "time_budget_s" not in raw else DEFAULT_TIME_BUDGET_S,
                                 problems)
    if validate_checks and _valid(raw, _TOP_KEYS, "sandbox"):
        _check_sandbox(raw["sandbox"], problems)
    # Declared numbers, even of items rejected above, so one bad item doesn't cascade.
    numbers = {i.get("number") for i in raw["items"] if isinstance(i, dict)} if _valid(raw, _TOP_KEYS, "items") else set()
    columns = _parse_leaderboard(raw["leaderboard"], numbers, problems) \
        if _valid(raw, _TOP_KEYS, "leaderboard") else []
    if problems:
        count = f"{len(problems)} problems: " if len(problems) > 1 else ""
        raise NotegradeError(f"{source}: {count}" + "; ".join(problems))
    return Rubric(
        title=raw["title"], total_points=float(raw["total_points"]), items=tuple(items), late_policy=late,
        leaderboard=tuple(columns), time_budget_s=float(budget), sandbox=dict(raw.get("sandbox", {})), container=container,
        visibility=raw.get("visibility", "visible"), stdout_visibility=raw.get("stdout_visibility", "hidden"),
        source=source,
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
