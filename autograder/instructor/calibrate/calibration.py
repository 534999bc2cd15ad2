"""What each common student mistake costs under an autograder: grade every mistake, tabulate the points lost.

:func:`calibrate` builds the realistic mistakes of :mod:`autograder.instructor.calibrate.cases` from
the reference solution and a trained model (checkpoint mistakes, architecture, losses, training, a
forbidden import, a nested folder; generated at run time, never shipped to students), grades each one
exactly as ``notegrade grade`` does (the Gradescope layout, the grading runtime built from the zip's
requirements.txt; ``jobs`` at a time through the one fan-out,
:mod:`autograder.instructor.grading.fanout`) and returns the table: mistake -> points lost per rubric
item -> total lost, which :func:`render_text`, :func:`render_markdown`, :func:`render_csv` and
:func:`render_json` write out (the JSON also keeps each item's check, params and the fraction every
case earned, so :mod:`autograder.instructor.calibrate.reweigh` can say what the same mistakes cost
under another rubric's points without grading again).  A mistake that costs at most ``nearly_free``
points is marked; one the set marks ``free`` (correct code, a tolerated slip) must cost nothing, and
the legend says when it does not.  The command line is :mod:`autograder.instructor.calibrate.command`.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from autograder.atomic import PRIVATE, copy_atomically, private_dir, write_atomically
from autograder.errors import NotegradeError
from autograder.instructor.calibrate.cases import MISTAKES, Mistake, build, load_state
from autograder.instructor.grading.fanout import Job, check_jobs, grade_each
from autograder.instructor.grading.local import refuse_exposed_secrets, secret_paths
from autograder.instructor.grading.one_submission import BatchGrader
from autograder.layout import RUBRIC_FILE
from autograder.report import fmt_points
from autograder.rubric import autograder_rubric_text, parse_rubric

NEARLY_FREE = 2.0
FORMAT = "notegrade-calibration/1"


@dataclass
class Row:
    """One mistake's grade: points lost per item number against the reference, and in total."""

    mistake: Mistake
    score: "float | None"
    lost: "dict[str, float]" = field(default_factory=dict)
    total_lost: "float | None" = None
    error: str = ""
    outputs: "dict[str, str]" = field(default_factory=dict)  # item number -> what the student reads
    items: "dict[str, dict]" = field(default_factory=dict)  # item number -> {"fraction", "status"} earned


@dataclass
class Calibration:
    """The table: rubric items (number, title, points), the reference's score and one row per mistake."""

    items: "list[tuple[str, str, float]]"
    baseline: float
    total_points: float
    rows: "list[Row]"
    seconds: float
    runtime: dict
    nearly_free: float = NEARLY_FREE
    checks: "dict[str, dict]" = field(default_factory=dict)  # item number -> {"check", "params"}
    reference: "dict[str, dict]" = field(default_factory=dict)  # item number -> the reference's {"fraction", "status"}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _item_scores(results: dict) -> "dict[str, float]":
    return {t["number"]: float(t.get("score", 0.0)) for t in results.get("tests", []) if t.get("number")}


def chosen_mistakes(only: "list[str] | None") -> "list[Mistake]":
    """The reference and the mistakes ``--only`` names, by name or by slug (its ``cases/SLUG.json``), in any case.

    >>> [m.name for m in chosen_mistakes(["EMPTY model.pt", "no_zero_grad"])]
    ['reference', 'empty model.pt', 'no zero_grad']
    >>> chosen_mistakes(["no such thing"])
    Traceback (most recent call last):
    autograder.errors.NotegradeError: unknown mistake 'no such thing'; known (name or slug): reference (reference); ...
    """
    wanted = None if only is None else {slug(name) for name in only}
    unknown = [name for name in only or () if slug(name) not in {slug(m.name) for m in MISTAKES}]
    if unknown:
        raise NotegradeError(f"unknown mistake {'; '.join(map(repr, unknown))}; known (name or slug): "
                             + "; ".join(f"{m.name} ({slug(m.name)})" for m in MISTAKES))
    return [m for m in MISTAKES if wanted is None or slug(m.name) in wanted or m.name == "reference"]


def _item_fractions(results: dict) -> "dict[str, dict]":
    """Item number -> the fraction of its points earned and the check's status (rubric-independent)."""
    found = {}
    for test in results.get("tests", []):
        if test.get("number"):
            extra, top = test.get("extra_data") or {}, float(test.get("max_score") or 0.0)
            # The check's own fraction when results.json has it: the score is rounded to 4 digits.
            fraction = extra.get("fraction", float(test.get("score", 0.0)) / top if top else 0.0)
            found[test["number"]] = {"fraction": round(float(fraction), 6), "status": str(extra.get("status", ""))}
    return found


def _rubric_checks(autograder: Path) -> "dict[str, dict]":
    """Item number -> {"check", "params"} of the autograder's rubric.toml (a zip or its unpacked folder)."""
    try:
        text = autograder_rubric_text(autograder)
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise NotegradeError(f"--autograder {autograder}: cannot read its {RUBRIC_FILE} ({err}); build it with "
                             "`notegrade build`") from None
    rubric = parse_rubric(text, source=f"{autograder}: {RUBRIC_FILE}")
    return {item.number: {"check": item.check, "params": dict(item.params)} for item in rubric.items}


def calibrate(*, autograder: Path, model: Path, out: "Path | None" = None, jobs: int = 1, python: "str | None" = None,
              only: "list[str] | None" = None, nearly_free: float = NEARLY_FREE, progress: bool = True) -> Calibration:
    """Grade every mistake (``only``: those names) under ``autograder``; write ``out`` when given."""
    started = time.monotonic()
    autograder, model = Path(autograder), Path(model)
    if not autograder.exists():
        raise NotegradeError(f"--autograder {autograder}: no such zip or folder (build one with `notegrade build`)")
    check_jobs(jobs)
    state = load_state(model)  # a broken model.pt is named first: nothing is read or graded
    # At the uid level student code could read an open zip, or the reference's own weights: refused first.
    refuse_exposed_secrets([*secret_paths(autograder), model], python=python)
    mistakes = chosen_mistakes(only)
    checks = _rubric_checks(autograder)
    work = Path(tempfile.mkdtemp(prefix="notegrade-calibrate-"))
    try:
        todo = [Job(m.name, build(m, work / "cases" / slug(m.name), state=state), work / "graded" / slug(m.name))
                for m in mistakes]
        done = grade_each(todo, BatchGrader(quiet=True, python=python, private=(model,)),
                          autograder=autograder,
                          parallel=jobs, progress=progress, desc="calibrate", unit="mistake")
        graded = [(mistake, g.results, g.problem) for mistake, g in zip(mistakes, done)]
        if out is not None:
            private_dir(out)  # the reference's results, item by item: the instructor's only
            for mistake in mistakes:
                source = work / "graded" / slug(mistake.name) / "results.json"
                if source.is_file():
                    copy_atomically(source, Path(out) / "cases" / f"{slug(mistake.name)}.json", mode=PRIVATE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by_name = {m.name: (results, error) for m, results, error in graded}
    base_results, base_error = by_name["reference"]
    if base_results is None:
        raise NotegradeError(f"the reference itself could not be graded: {base_error}")
    items = [(t["number"], t["name"].split(" ", 1)[-1], float(t["max_score"])) for t in base_results["tests"]
             if t.get("number")]
    base = _item_scores(base_results)
    rows = []
    for mistake, results, error in graded:
        if mistake.name == "reference":
            continue
        if results is None:
            rows.append(Row(mistake, None, error=error))
            continue
        scores = _item_scores(results)
        lost = {n: round(base.get(n, 0.0) - scores.get(n, 0.0), 2) for n, _, _ in items}
        rows.append(Row(mistake, float(results["score"]), lost, round(float(base_results["score"]) - results["score"], 2),
                        outputs={t["number"]: t.get("output", "") for t in results["tests"] if t.get("number")},
                        items=_item_fractions(results)))
    calibration = Calibration(items=items, baseline=float(base_results["score"]),
                              total_points=float(base_results["extra_data"].get("total_points") or 0.0), rows=rows,
                              seconds=round(time.monotonic() - started, 1), nearly_free=nearly_free,
                              runtime=(base_results.get("extra_data") or {}).get("runtime") or {},
                              checks={n: checks[n] for n, _, _ in items if n in checks},
                              reference=_item_fractions(base_results))
    if out is not None:
        write_tables(calibration, Path(out))
    return calibration


def write_tables(calibration: Calibration, out: Path) -> None:
    """``out``/calibration.md, .csv and .json."""
    for name, render in (("calibration.md", render_markdown), ("calibration.csv", render_csv),
                         ("calibration.json", render_json)):  # the reference's results item by item: private
        write_atomically(out / name, render(calibration), mode=PRIVATE, fsync=False)


def _points(value: "float | None") -> str:
    if value is None:
        return "-"
    return "0" if abs(value) < 0.005 else fmt_points(value)  # never "-0"


def _table(calibration: Calibration) -> "tuple[list[str], list[list[str]]]":
    headers = ["mistake"] + [f"{n} ({_points(p)})" for n, _, p in calibration.items] + ["lost", "score"]
    body = []
    for row in calibration.rows:
        mark = " *" if row.total_lost is not None and 0 < row.total_lost <= calibration.nearly_free else ""
        cells = [_points(row.lost.get(n)) if row.lost else "-" for n, _, _ in calibration.items]
        body.append([row.mistake.name + mark] + cells + [_points(row.total_lost) if row.error == "" else "error",
                                                         _points(row.score)])
    return headers, body


def _legend(calibration: Calibration) -> "list[str]":
    lines = [f"Points lost per rubric item against the reference ({_points(calibration.baseline)} / "
             f"{_points(calibration.total_points)}); column headers are item numbers with their points."]
    free = [r.mistake.name for r in calibration.rows if r.total_lost is not None and 0 < r.total_lost <= calibration.nearly_free]
    if free:
        lines.append(f"* nearly free (at most {_points(calibration.nearly_free)} points): {', '.join(free)}. "
                     "Raise those items' points if the mistake should matter more.")
    graded = [r for r in calibration.rows if r.total_lost is not None]
    zero = [r.mistake.name for r in graded if abs(r.total_lost) < 0.005 and not r.mistake.free]
    if zero:
        lines.append(f"No points lost: {', '.join(zero)}.")
    meant = [r.mistake.name for r in graded if abs(r.total_lost) < 0.005 and r.mistake.free]
    if meant:
        lines.append(f"No points lost, as meant (correct code or a slip the grader tolerates, with a note where one "
                     f"applies): {', '.join(meant)}.")
    charged = [f"{r.mistake.name} ({_points(r.total_lost)})" for r in graded
               if abs(r.total_lost) >= 0.005 and r.mistake.free]
    if charged:
        lines.append(f"Meant to cost nothing, but lost points: {', '.join(charged)}: the checks are wrong about them.")
    for row in calibration.rows:
        if row.error:
            lines.append(f"{row.mistake.name}: not graded ({row.error})")
    runtime = calibration.runtime
    if runtime:
        lines.append(f"Graded in the {runtime.get('kind')} runtime (python {runtime.get('python')}, torch "
                     f"{runtime.get('torch')}) in {calibration.seconds:.0f} s.")
    return lines


def render_text(calibration: Calibration) -> str:
    headers, body = _table(calibration)
    widths = [max(len(r[i]) for r in [headers] + body) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [headers] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    items = "; ".join(f"{n} {title}" for n, title, _ in calibration.items)
    return "\n".join(lines + ["", f"items: {items}", *_legend(calibration)]) + "\n"


def render_markdown(calibration: Calibration) -> str:
    headers, body = _table(calibration)
    lines = ["| " + " | ".join(headers) + " |", "|---" + "|---:" * (len(headers) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    items = "; ".join(f"{n} {title}" for n, title, _ in calibration.items)
    return "\n".join(lines + ["", f"Items: {items}.", ""] + [line + "  " for line in _legend(calibration)]) + "\n"


def render_csv(calibration: Calibration) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["mistake", "category", "description"] + [f"lost {n}" for n, _, _ in calibration.items]
                    + ["total lost", "score", "error"])
    for row in calibration.rows:
        writer.writerow([row.mistake.name, row.mistake.category, row.mistake.description]
                        + [row.lost.get(n, "") for n, _, _ in calibration.items]
                        + [row.total_lost if row.total_lost is not None else "", row.score if row.score is not None else "",
                           row.error])
    return buffer.getvalue()


def render_json(calibration: Calibration) -> str:
    """The whole table as JSON, with each item's check and params and the fraction every case earned
    (read back by :func:`autograder.instructor.calibrate.reweigh.load_calibration`)."""
    return json.dumps({
        "format": FORMAT, "baseline": calibration.baseline, "total_points": calibration.total_points,
        "seconds": calibration.seconds, "nearly_free": calibration.nearly_free,
        "runtime": {k: v for k, v in calibration.runtime.items() if k in ("kind", "python", "torch")},  # no paths
        "items": [{"number": n, "title": title, "points": points, **calibration.checks.get(n, {})}
                  for n, title, points in calibration.items],
        "reference": calibration.reference,
        "rows": [{"mistake": r.mistake.name, "category": r.mistake.category, "free": r.mistake.free, "score": r.score,
                  "total_lost": r.total_lost, "lost": r.lost, "items": r.items, "error": r.error}
                 for r in calibration.rows],
    }, indent=1) + "\n"
