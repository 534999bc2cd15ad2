"""What each common student mistake costs under an autograder: grade every mistake, tabulate the points lost.

:func:`calibrate` builds the realistic mistakes of :mod:`autograder.instructor.calibrate.cases` from
the reference solution and a trained model (checkpoint mistakes, architecture, losses, training, a
forbidden import, a nested folder; generated at run time, never shipped to students), grades each one
exactly as ``notegrade grade`` does (the Gradescope layout, the grading runtime built from the zip's
requirements.txt; ``jobs`` at a time through the one fan-out,
:mod:`autograder.instructor.grading.fanout`) and returns the table: mistake -> points lost per rubric
item -> total lost, which :func:`render_text`, :func:`render_markdown` and :func:`render_csv` write
out.  A mistake that costs at most ``nearly_free`` points is marked.  The command line is
:mod:`autograder.instructor.calibrate.command`.
"""
from __future__ import annotations

import csv
import functools
import io
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder.atomic import PRIVATE, copy_atomically, private_dir, write_atomically
from autograder.errors import NotegradeError
from autograder.instructor.calibrate.cases import MISTAKES, Mistake, build, load_state
from autograder.instructor.grading.fanout import Job, grade_each
from autograder.instructor.grading.local import refuse_exposed_secrets, secret_paths
from autograder.instructor.grading.one_submission import grade_submission

NEARLY_FREE = 2.0


@dataclass
class Row:
    """One mistake's grade: points lost per item number against the reference, and in total."""

    mistake: Mistake
    score: "float | None"
    lost: "dict[str, float]" = field(default_factory=dict)
    total_lost: "float | None" = None
    error: str = ""
    outputs: "dict[str, str]" = field(default_factory=dict)  # item number -> what the student reads


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


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _item_scores(results: dict) -> "dict[str, float]":
    return {t["number"]: float(t.get("score", 0.0)) for t in results.get("tests", []) if t.get("number")}


def calibrate(*, autograder: Path, model: Path, out: "Path | None" = None, jobs: int = 1, python: "str | None" = None,
              only: "list[str] | None" = None, nearly_free: float = NEARLY_FREE, progress: bool = True) -> Calibration:
    """Grade every mistake (``only``: those names) under ``autograder``; write ``out`` when given."""
    started = time.monotonic()
    autograder, model = Path(autograder), Path(model)
    if not autograder.exists():
        raise NotegradeError(f"--autograder {autograder}: no such zip or folder (build one with `notegrade build`)")
    if jobs < 1:
        raise NotegradeError(f"--jobs must be at least 1, got {jobs}")
    state = load_state(model)
    # At the uid level student code could read an open zip, or the reference's own weights: refused first.
    refuse_exposed_secrets([*secret_paths(autograder), model], python=python)
    mistakes = [m for m in MISTAKES if only is None or m.name in only or m.name == "reference"]
    unknown = sorted(set(only or ()) - {m.name for m in MISTAKES})
    if unknown:
        raise NotegradeError(f"unknown mistake(s) {', '.join(unknown)}; known: {', '.join(m.name for m in MISTAKES)}")
    work = Path(tempfile.mkdtemp(prefix="notegrade-calibrate-"))
    try:
        todo = [Job(m.name, build(m, work / "cases" / slug(m.name), state=state), work / "graded" / slug(m.name))
                for m in mistakes]
        done = grade_each(todo, functools.partial(grade_submission, quiet=True, python=python, private=(model,)),
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
                        outputs={t["number"]: t.get("output", "") for t in results["tests"] if t.get("number")}))
    calibration = Calibration(items=items, baseline=float(base_results["score"]),
                              total_points=float(base_results["extra_data"].get("total_points") or 0.0), rows=rows,
                              seconds=round(time.monotonic() - started, 1), nearly_free=nearly_free,
                              runtime=(base_results.get("extra_data") or {}).get("runtime") or {})
    if out is not None:
        write_atomically(Path(out) / "calibration.md", render_markdown(calibration), mode=PRIVATE, fsync=False)
        write_atomically(Path(out) / "calibration.csv", render_csv(calibration), mode=PRIVATE, fsync=False)
    return calibration


def _points(value: "float | None") -> str:
    if value is None:
        return "-"
    return "0" if abs(value) < 0.005 else f"{value:.2f}".rstrip("0").rstrip(".")


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
    zero = [r.mistake.name for r in calibration.rows if r.total_lost is not None and abs(r.total_lost) < 0.005]
    if zero:
        lines.append(f"No points lost: {', '.join(zero)}.")
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
