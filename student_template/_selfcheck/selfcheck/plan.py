"""The self-check's plan: the visible rubric items exported to JSON, and read back and validated.

``notegrade assign`` writes :func:`export_rubric` of the course rubric to ``_selfcheck/rubric.json``
in the student template (only items visible at submission time, the time budget, the sandbox
limits, the late policy and the front-end hash of the held-out features), because the vendored
self-check must run without the toolkit's TOML rubric parser (Python 3.10 has no tomllib).
:func:`load_plan` reads that export, or with the toolkit installed a rubric ``.toml`` directly.

Example
-------
>>> plan = plan_from_export({"format": EXPORT_FORMAT, "title": "Demo", "total_points": 10,
...     "items": [{"number": "1.1", "title": "Parameter counts", "points": 10, "check": "architecture_params"}]})
>>> [(item.number, item.points, item.timeout_s) for item in plan.items]
[('1.1', 10.0, 60.0)]
>>> late_summary({"amount": 3, "unit": "points", "per": "day", "grace_minutes": 10, "zero_after_late_due": True})
'3 points per started day late (10 min grace), 0 points after the late due date'
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _selfcheck.assignment import ASSIGNMENT_FILES
from _selfcheck.errors import NotegradeError
from _selfcheck.layout import CHECKOUT_REQUIREMENTS, REQUIREMENTS_FILE, RUBRIC_FILE

EXPORT_FORMAT = "notegrade-selfcheck-rubric/1"
EXPORT_NAME = "rubric.json"  # next to this module in the vendored copy
DEFAULT_ITEM_TIMEOUT_S = 60.0  # the rubric's default, for exports that leave it out


@dataclass(frozen=True)
class PlanItem:
    """One visible rubric item (the fields of ``RubricItem`` that grading uses)."""

    number: str
    title: str
    points: float
    check: str
    params: dict
    timeout_s: float = DEFAULT_ITEM_TIMEOUT_S
    visibility: str = "visible"


@dataclass(frozen=True)
class Plan:
    """What the self-check runs: the visible items, the budget, the sandbox limits, the late policy."""

    title: str
    total_points: float
    items: "tuple[PlanItem, ...]"
    time_budget_s: float = 480.0
    sandbox: dict = dataclasses.field(default_factory=dict)
    late_policy: dict = dataclasses.field(default_factory=dict)
    frontend_hash: "str | None" = None  # the front-end the held-out features were made with
    not_shown_items: int = 0
    not_shown_points: float = 0.0
    source: str = "<export>"
    # How the grader presents the held-out notes (the perturbation) and the source budget, so the
    # accuracy estimate and the budget message match Gradescope's; nothing secret.
    heldout: dict = dataclasses.field(default_factory=dict)
    checkpoint: dict = dataclasses.field(default_factory=dict)  # the rubric's [checkpoint] (budget, module. prefix)
    submission_files: "tuple[str, ...]" = ASSIGNMENT_FILES
    allowed_imports: "tuple[str, ...] | None" = None  # the grading runtime's packages (requirements.txt); None: any


def export_rubric(rubric: Any, *, frontend_hash: "str | None" = None,
                  allowed_imports: "list[str] | tuple[str, ...] | None" = None) -> dict:
    """A validated ``Rubric`` -> the JSON the vendored self-check reads: visible items only.

    ``allowed_imports``: top-level modules of the grading runtime (the autograder's requirements.txt)."""
    visible = [item for item in rubric.items if item.visibility == "visible"]
    others = [item for item in rubric.items if item.visibility != "visible"]
    return {"format": EXPORT_FORMAT, "title": rubric.title, "total_points": rubric.total_points,
            "rubric_hash": rubric.rubric_hash, "time_budget_s": rubric.time_budget_s, "sandbox": dict(rubric.sandbox),
            "late_policy": dataclasses.asdict(rubric.late_policy), "frontend_hash": frontend_hash,
            "items": [{"number": i.number, "title": i.title, "points": i.points, "check": i.check,
                       "params": dict(i.params), "timeout_s": i.timeout_s} for i in visible],
            "not_shown": {"items": len(others), "points": sum(i.points for i in others)},
            "heldout": _heldout_export(rubric),
            "checkpoint": dict(getattr(rubric, "checkpoint", {}) or {}),
            "submission_files": list(getattr(rubric, "submission_files", ()) or ()),
            "allowed_imports": sorted(allowed_imports) if allowed_imports is not None else None}


def _heldout_export(rubric: Any) -> dict:
    settings = getattr(rubric, "heldout", None)
    if settings is None:
        return {}
    return {"perturbation": dataclasses.asdict(settings.perturbation), "max_source_kb": settings.max_source_kb}


def plan_from_export(data: Any, *, source: str = "<export>") -> Plan:
    """Validate an exported rubric (see :func:`export_rubric`) against this copy's checks."""
    from _selfcheck.checks import REGISTRY, validate_params

    stale = "regenerate it with `notegrade assign`, or get a fresh copy of the starter folder"
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise NotegradeError(f"{source}: not a self-check rubric ({EXPORT_FORMAT}); {stale}")
    problems, items = [], []
    for raw in data.get("items") or []:
        try:
            item = PlanItem(number=str(raw["number"]), title=str(raw["title"]), points=float(raw["points"]),
                            check=str(raw["check"]), params=dict(raw.get("params") or {}),
                            timeout_s=float(raw.get("timeout_s", DEFAULT_ITEM_TIMEOUT_S)))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            problems.append(f"malformed item {raw!r} ({type(err).__name__}: {err})")
            continue
        problems += [f"item {item.number}: {p}" for p in validate_params(item.check, item.params)]
        items.append(item)
    if problems or not items:
        raise NotegradeError(f"{source}: " + ("; ".join(problems) or "no visible items") + f"; {stale}")
    not_shown = data.get("not_shown") or {}
    return Plan(title=str(data.get("title", "")), total_points=float(data.get("total_points", 0.0)), items=tuple(items),
                time_budget_s=float(data.get("time_budget_s", 480.0)), sandbox=dict(data.get("sandbox") or {}),
                late_policy=dict(data.get("late_policy") or {}), frontend_hash=data.get("frontend_hash"),
                not_shown_items=int(not_shown.get("items", 0)), not_shown_points=float(not_shown.get("points", 0.0)),
                source=source, heldout=dict(data.get("heldout") or {}), checkpoint=dict(data.get("checkpoint") or {}),
                submission_files=tuple(data.get("submission_files") or Plan.submission_files),
                allowed_imports=tuple(data["allowed_imports"]) if data.get("allowed_imports") is not None else None)


def default_rubric(directory: "Path | None" = None) -> Path:
    """The rubric the self-check uses without ``--rubric``/``--autograder``: the student folder's own
    ``_selfcheck/rubric.json`` (what its template was generated with), else this vendored copy's.
    Never a course offering picked by the toolkit: that is how a demo once scored 14/30 here and
    30/30 on its autograder."""
    candidates = ([Path(directory) / "_selfcheck" / EXPORT_NAME] if directory is not None else []) + \
        [Path(__file__).with_name(EXPORT_NAME)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise NotegradeError(f"{directory or 'this folder'} has no _selfcheck/{EXPORT_NAME} (it was not made by "
                         "`notegrade assign`): pass --autograder autograder.zip to check against that autograder's "
                         "rubric, or --rubric FILE")


def toolkit_allowed_imports() -> "list[str] | None":
    """The toolkit's grading runtime (autograder/gradescope/requirements.txt) as import names; None when absent."""
    from _selfcheck.import_policy import import_names

    requirements = Path(__file__).resolve().parents[2] / CHECKOUT_REQUIREMENTS
    return import_names(requirements.read_text(encoding="utf-8")) if requirements.is_file() else None


def plan_from_autograder(path: "str | os.PathLike") -> Plan:
    """The plan of an autograder zip (or its unpacked folder): its rubric.toml and its requirements.txt."""
    import tempfile
    import zipfile

    path = Path(path)
    try:
        if path.is_dir():
            from _selfcheck.import_policy import requirements_of

            rubric_text = (path / RUBRIC_FILE).read_text(encoding="utf-8")
            requirements = requirements_of(path)
            req_text = requirements.read_text(encoding="utf-8") if requirements is not None else None
        else:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                rubric_text = archive.read(RUBRIC_FILE).decode("utf-8")
                found = [n for n in (REQUIREMENTS_FILE, CHECKOUT_REQUIREMENTS) if n in names]
                req_text = archive.read(found[0]).decode("utf-8") if found else None
    except FileNotFoundError:
        raise NotegradeError(f"--autograder {path}: no such file or folder") from None
    except KeyError:
        raise NotegradeError(f"--autograder {path}: not an autograder zip (no {RUBRIC_FILE} at its root)") from None
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as err:
        raise NotegradeError(f"--autograder {path}: cannot read it ({err})") from None
    with tempfile.TemporaryDirectory(prefix="notegrade-rubric-") as tmp:
        (Path(tmp) / RUBRIC_FILE).write_text(rubric_text, encoding="utf-8")
        plan = load_plan(Path(tmp) / RUBRIC_FILE)
    from _selfcheck.import_policy import import_names

    return dataclasses.replace(plan, source=f"{path} ({RUBRIC_FILE})",
                               allowed_imports=tuple(import_names(req_text)) if req_text is not None else None)


def load_plan(path: "str | os.PathLike") -> Plan:
    """A rubric ``.toml`` (needs the instructor toolkit) or an exported ``rubric.json``, as a :class:`Plan`."""
    path = Path(path)
    if path.suffix == ".toml":
        try:  # the toolkit's rubric parser; the vendored package has none (and needs no tomllib)
            from _selfcheck import rubric as rubric_module
        except ImportError:
            raise NotegradeError(f"{path}: reading a .toml rubric needs the instructor toolkit (notegrade); "
                                 f"this copy reads its {EXPORT_NAME}") from None
        allowed = toolkit_allowed_imports()
        return dataclasses.replace(plan_from_export(export_rubric(rubric_module.load_rubric(path), allowed_imports=allowed)),
                                   source=str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotegradeError(f"{path}: rubric file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise NotegradeError(f"{path}: cannot read the rubric: {err}") from None
    return plan_from_export(data, source=str(path))


def late_summary(policy: dict) -> str:
    """One line for the late policy of an exported rubric."""
    amount = float(policy.get("amount") or 0.0)
    if amount <= 0:
        return "no late penalty"
    points = policy.get("unit", "points") == "points"
    unit = "points" if points else f"% of the {'points earned' if policy.get('percent_of', 'earned') == 'earned' else 'total'}"
    started = {"ceil": "started ", "floor": "full "}.get(policy.get("rounding", "ceil"), "")
    text = f"{amount:g} {'point' if points and amount == 1 else unit} per {started}{policy.get('per', 'day')} late"
    if policy.get("grace_minutes"):
        text += f" ({float(policy['grace_minutes']):g} min grace)"
    if policy.get("cap") is not None:
        text += f", at most {float(policy['cap']):g} {unit}"
    if policy.get("zero_after_late_due"):
        text += ", 0 points after the late due date"
    return text
