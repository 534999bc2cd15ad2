"""What calibrated mistakes cost under another rubric's points, without grading them again.

A check's verdict (the fraction of an item's points a submission earns) does not depend on the
item's points, so a ``calibration.json`` written by ``notegrade calibrate --out`` (each item's check
and params, the fraction the reference and every mistake earned) prices the same mistakes under
any rubric whose items run the same checks with the same params: :func:`reweigh`.  The instructor guide's
table comes from the committed ``docs/calibration.json``, and the tests price it under every
shipped offering rubric (every mistake at least 3 points, the ``free`` ones nothing).

Example
-------
>>> from autograder.instructor.calibrate.calibration import Calibration
>>> from autograder.rubric import RubricItem
>>> calibration = Calibration(items=[("1.1", "counts", 10.0)], baseline=10.0, total_points=10.0, rows=[],
...                           seconds=0.0, runtime={}, checks={"1.1": {"check": "architecture_params", "params": {}}},
...                           reference={"1.1": {"fraction": 1.0, "status": "ran"}})
>>> item = RubricItem(number="A", title="layers", points=4.0, check="architecture_params")
>>> reweigh(calibration, [item], total_points=4.0).items
[('A', 'layers', 4.0)]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from autograder.errors import NotegradeError
from autograder.instructor.calibrate.calibration import FORMAT, Calibration, Row
from autograder.instructor.calibrate.cases import MISTAKES
from autograder.rubric import load_rubric


def load_calibration(path: Path) -> Calibration:
    """A ``calibration.json`` read back; its mistakes must be the ones calibrate grades today."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NotegradeError(f"{path}: not a readable calibration.json ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NotegradeError(f"{path}: not a calibration.json of this notegrade (format {FORMAT!r} expected); "
                             "write one with `notegrade calibrate --out DIR`")
    known = {m.name: m for m in MISTAKES}
    stale = [r["mistake"] for r in data["rows"] if r["mistake"] not in known]
    if stale:
        raise NotegradeError(f"{path}: calibrate no longer has the mistake(s) {', '.join(stale)}; calibrate again")
    rows = [Row(known[r["mistake"]], r["score"], dict(r["lost"]), r["total_lost"], r.get("error", ""),
                items=dict(r["items"])) for r in data["rows"]]
    return Calibration(items=[(i["number"], i["title"], float(i["points"])) for i in data["items"]],
                       baseline=float(data["baseline"]), total_points=float(data["total_points"]), rows=rows,
                       seconds=float(data["seconds"]), runtime=dict(data.get("runtime") or {}),
                       nearly_free=float(data["nearly_free"]), reference=dict(data["reference"]),
                       checks={i["number"]: {"check": i["check"], "params": dict(i.get("params") or {})}
                               for i in data["items"] if "check" in i})


def _calibrated_item(calibration: Calibration, check: str, params: "dict[str, Any]", number: str) -> str:
    matches = [n for n, c in calibration.checks.items() if c["check"] == check and c["params"] == dict(params)]
    if len(matches) != 1:
        raise NotegradeError(f"item {number} runs {check} with params {dict(params)}, which the calibration "
                             f"{'graded under several items' if matches else 'did not grade'}: calibrate under "
                             "this rubric instead")
    return matches[0]


def reweigh(calibration: Calibration, items: "Iterable[Any]", *, total_points: float) -> Calibration:
    """The calibration's mistakes priced under ``items`` (``RubricItem``s: number, title, points, check,
    params); the late penalty plays no part.  An item whose check and params were not calibrated is an error."""
    items = list(items)
    source = {item.number: _calibrated_item(calibration, item.check, item.params, item.number) for item in items}

    def earned(fractions: "dict[str, dict]", item: Any) -> float:
        return item.points * float(fractions.get(source[item.number], {}).get("fraction", 0.0))

    baseline = sum(earned(calibration.reference, item) for item in items)
    rows = []
    for row in calibration.rows:
        if row.error or not row.items:
            rows.append(Row(row.mistake, None, error=row.error))
            continue
        lost = {item.number: round(earned(calibration.reference, item) - earned(row.items, item), 2) for item in items}
        score = sum(earned(row.items, item) for item in items)
        rows.append(Row(row.mistake, round(score, 2), lost, round(baseline - score, 2),
                        items={item.number: row.items.get(source[item.number], {}) for item in items}))
    return Calibration(items=[(item.number, item.title, float(item.points)) for item in items],
                       baseline=round(baseline, 2), total_points=float(total_points), rows=rows,
                       seconds=calibration.seconds, runtime=calibration.runtime, nearly_free=calibration.nearly_free,
                       checks={item.number: {"check": item.check, "params": dict(item.params)} for item in items},
                       reference={item.number: calibration.reference.get(source[item.number], {}) for item in items})


def price(calibration_json: Path, rubric: Path, *, nearly_free: "float | None" = None) -> Calibration:
    """``notegrade calibrate --from calibration_json --rubric rubric``: the table under that rubric's points."""
    loaded = load_rubric(rubric)
    priced = reweigh(load_calibration(calibration_json), loaded.items, total_points=loaded.total_points)
    if nearly_free is not None:
        priced.nearly_free = nearly_free
    return priced
