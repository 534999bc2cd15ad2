"""Write the single-file HTML class report of a ``grades.csv``: distributions, pass rates, confusion, leaderboard.

:func:`write_class_report` reads ``grades.csv`` as ``notegrade regrade`` writes it, and the
``grades.json`` written beside it (rubric items with their maximum points, the per-submission
held-out confusion matrices: a CSV row cannot hold an 11x11 matrix).  Without ``grades.json`` the
items come from the column names (``"1.1 Title"``), their maxima from the best score seen, and the
confusion section says it has no data.  The students who errored or were not graded, and the
score changes against Gradescope (``score_changes.csv`` beside grades.csv), are tables of
:mod:`.tables`; the reference line of the accuracy figure gets a note on why the class sits off it
(:func:`reference_note`).  Figures are matplotlib PNGs embedded as base64, so the page
is one file with no external resources.  The command line (``notegrade report``) is
:mod:`autograder.instructor.class_report.command`.

Example
-------
>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "grades.csv").write_text(
...     "sid,name,status,late_seconds,penalty,1.1 Counts,heldout_accuracy,total\\n"
...     "1,Ada,graded,0,0,10,0.71,100\\n2,Ben,graded,7200,3,5,0.64,82\\n")
>>> page = write_class_report(grades=folder / "grades.csv", out=folder / "class.html", reference_accuracy=0.7)
>>> text = page.read_text()
>>> text.count("data:image/png;base64,") >= 4, "Ada" in text
(True, True)
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import pathlib
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from autograder.instructor.class_report.tables import (
    errored_items,
    errored_section,
    note,
    read_regrade_csv,
    score_changes_section,
    table,
)
from autograder.report import fmt_points

_ITEM_RE = re.compile(r"^\d+(\.\d+)*\s")
_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:68rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #444;margin-top:2rem}img{max-width:100%;height:auto}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.25rem .6rem}
th{background:#f3f3f3}td.r{text-align:right}.note{color:#666}table.integrity td{font-size:13px}"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def _items(grades: pd.DataFrame, class_data: dict) -> list[tuple[str, float]]:
    """``[(column, max points)]`` for the rubric items present in ``grades``."""
    listed = [(i["column"], float(i["max_score"])) for i in class_data.get("items", []) if i.get("column") in grades]
    if listed:
        return listed
    return [(c, float(grades[c].max())) for c in grades.columns if _ITEM_RE.match(str(c)) and grades[c].notna().any()]


def score_figure(totals: pd.Series, total_points: float) -> Figure:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    ax.hist(totals, bins=np.linspace(0, total_points, 21), color="#4a7fb5", edgecolor="white")
    for value, style, name in ((totals.mean(), "--", "mean"), (totals.median(), ":", "median")):
        ax.axvline(value, color="#b5524a", linestyle=style, label=f"{name} {value:.1f}")
    ax.set(xlabel=f"total score (of {total_points:g})", ylabel="students", xlim=(0, total_points))
    ax.legend()
    return fig


def pass_rate_figure(grades: pd.DataFrame, items: list[tuple[str, float]]) -> Figure:
    fig = Figure(figsize=(7, 0.5 + 0.45 * len(items)))
    ax = fig.add_subplot()
    names = [c for c, _ in items][::-1]
    full = [float((grades[c] >= m - 1e-9).mean()) for c, m in items][::-1]
    mean = [float((grades[c] / m).mean()) if m else 0.0 for c, m in items][::-1]
    ax.barh(names, full, color="#5a9e6f", label="full marks")
    ax.scatter(mean, names, color="#222", zorder=3, label="mean share of points")
    for y, value in enumerate(full):
        ax.text(0.01, y, f"{value:.0%}", va="center", color="white" if value > 0.08 else "black", fontweight="bold")
    ax.set(xlim=(0, 1), xlabel="share of graded students")
    # Above the axes: inside, it would cover the bars of a long rubric.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize="small", frameon=False)
    return fig


def accuracy_figure(accuracy: pd.Series, reference: float | None) -> Figure:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    ax.hist(accuracy * 100, bins=np.linspace(0, 100, 26), color="#8a6fb5", edgecolor="white")
    if reference is not None:
        ax.axvline(reference * 100, color="#b5524a", linestyle="--", label=f"reference model {reference:.1%}")
        ax.legend()
    ax.set(xlabel="held-out accuracy (%)", ylabel="students", xlim=(0, 100))
    return fig


def lateness_figure(grades: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    hours = grades["late_seconds"].fillna(0) / 3600
    penalised = grades["penalty"].fillna(0) > 0
    ax.scatter(hours[~penalised], grades["total"][~penalised], color="#4a7fb5", label="no penalty")
    ax.scatter(hours[penalised], grades["total"][penalised], color="#b5524a", marker="x", label="late penalty")
    ax.set(xlabel="hours after the due date (0 = on time)", ylabel="total score")
    ax.legend()
    return fig


def confusion_figure(matrix: np.ndarray, families: list[str]) -> Figure:
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(families)), families, rotation=45, ha="right")
    ax.set_yticks(range(len(families)), families)
    for i, j in np.ndindex(share.shape):
        if matrix[i, j]:
            ax.text(j, i, f"{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted family", ylabel="true family")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true family's notes")
    return fig


def _reference_accuracy(value: float | None, metrics: pathlib.Path | None) -> float | None:
    if value is not None:
        if not 0 <= value <= 1:
            raise NotegradeError(f"--reference-accuracy must be a fraction in [0, 1], got {value}")
        return value
    if metrics is None:
        return None
    try:
        accuracy = json.loads(pathlib.Path(metrics).read_text())["accuracy"]
    except FileNotFoundError:
        raise NotegradeError(f"{metrics}: no such metrics.json (write one with 'notegrade evaluate')") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise NotegradeError(f"{metrics}: not a metrics.json with an 'accuracy' field") from None
    return float(accuracy)


def _integrity_section(folder: pathlib.Path | None, grades_path: pathlib.Path, out: pathlib.Path) -> str:
    """The integrity analysis's section, from ``folder`` or ``integrity/`` beside grades.csv ("" without one)."""
    from autograder.instructor.class_integrity import outputs, report_section

    if folder is None:
        folder = grades_path.parent / "integrity"
        if not (folder / outputs.JSON_NAME).is_file():
            return ""
    return report_section.section(outputs.read_results(folder), page=out.resolve(), img=_img)


def _read_grades(path: pathlib.Path) -> pd.DataFrame:
    frame = read_regrade_csv(path, name="grades.csv", columns={"name", "total"})
    for column in ("late_seconds", "penalty", "heldout_accuracy"):
        if column not in frame:
            frame[column] = math.nan
    return frame


def reference_note(accuracy: pd.Series, reference: float, notes: int | None) -> str:
    """Why the class sits off the reference line: the line is unperturbed, every submission's run is not."""
    median = float(accuracy.median())
    text = (f"The reference line ({reference:.1%}) is the reference model on the held-out file as stored ('notegrade "
            "evaluate', nothing perturbed). The grader shows each submission its own presentation of the same notes, "
            "keyed by the submission's files: a secret gain offset and noise on every note's features "
            "([heldout.perturbation]) and the low mantissa bits of model.pt's weights replaced. So the reference's own "
            "model.pt, handed in, lands within a note or two of the line, and submissions with identical files land on the "
            "same value; with a public/private split, a student's accuracy is on the private part only. "
            f"Here the class median is {median:.1%}, "
            + (f"{100 * (median - reference):+.1f} points from the line" if abs(median - reference) >= 5e-4
               else "on the line"))
    return text + (f" (one of the {notes} held-out notes is {100 / notes:.2f} points)." if notes else ".")


def _heldout_notes(data: dict) -> int | None:
    """How many held-out notes a submission was graded on: the sum of its confusion matrix."""
    for matrix in ((data.get("confusion") or {}).get("per_submission") or {}).values():
        if matrix:
            return int(np.asarray(matrix).sum()) or None
    return None


def write_class_report(*, grades: pathlib.Path, out: pathlib.Path, reference_accuracy: float | None = None,
                       reference_metrics: pathlib.Path | None = None, class_data: pathlib.Path | None = None,
                       top: int = 10, title: str | None = None, integrity: pathlib.Path | None = None,
                       score_changes: pathlib.Path | None = None) -> pathlib.Path:
    """Write the class report for ``grades`` (a grades.csv) to ``out``; return ``out``.

    ``integrity``: an integrity analysis folder (default: ``integrity/`` beside grades.csv, if any);
    ``score_changes``: the regrade's score_changes.csv (default: beside grades.csv, if there is one).
    """
    grades_path = pathlib.Path(grades)
    frame = _read_grades(grades_path)
    data_path = pathlib.Path(class_data) if class_data else grades_path.with_suffix(".json")
    data = json.loads(data_path.read_text()) if data_path.is_file() else {}
    reference = _reference_accuracy(reference_accuracy, reference_metrics)
    changes = pathlib.Path(score_changes) if score_changes else grades_path.parent / "score_changes.csv"
    graded = frame[frame["total"].notna()]
    best = float(graded["total"].max()) if len(graded) else 0.0
    total_points = float((data.get("assignment") or {}).get("total_points") or max(100.0, best))
    items = _items(graded, data)
    sections = [f"<h1>{html.escape(title or (data.get('assignment') or {}).get('title') or 'Class report')}</h1>"]
    totals = graded["total"]
    stats = [[str(len(frame)), str(len(graded)), *(f"{v:.1f}" for v in (totals.mean(), totals.median(), totals.std(ddof=0),
                                                                         totals.min(), totals.max())),
              str(int((graded["penalty"].fillna(0) > 0).sum()))]] if len(graded) else []
    sections.append(table(["students", "graded", "mean", "median", "std", "min", "max", "late-penalised"], stats,
                          right=set(range(8))) if stats else note("No graded students in grades.csv."))
    sections.append(errored_section(frame, data))
    if score_changes is not None or changes.is_file():
        sections.append(score_changes_section(changes, frame))
    sections.append("<h2>Score distribution</h2>")
    sections.append(_img(score_figure(totals, total_points), "score distribution") if len(graded) else note("No scores."))
    errored = len(set(errored_items(frame, data)) & set(graded.index))
    if errored:
        sections.append(note(f"Includes {errored} graded student(s) whose items errored (see 'Errored or not graded')."))
    sections.append("<h2>Pass rate per rubric item</h2>")
    sections.append(_img(pass_rate_figure(graded, items), "pass rate per rubric item") if items and len(graded)
                    else note("No rubric item columns in grades.csv."))
    sections.append("<h2>Held-out accuracy</h2>")
    accuracy = graded["heldout_accuracy"].dropna()
    if len(accuracy):
        sections.append(_img(accuracy_figure(accuracy, reference), "held-out accuracy distribution"))
        sections.append(note(reference_note(accuracy, reference, _heldout_notes(data)) if reference is not None else
                             "No reference accuracy given (--reference-accuracy or --reference-metrics)."))
    else:
        sections.append(note("No held-out accuracies in grades.csv."))
    sections.append("<h2>Lateness and score</h2>")
    sections.append(_img(lateness_figure(graded), "lateness against score") if len(graded) else note("No scores."))
    sections.append("<h2>Confusion matrix, pooled over the class</h2>")
    pooled = (data.get("confusion") or {}).get("pooled")
    families = data.get("families") or list(FAMILIES)
    if pooled and len(pooled) == len(families):
        matrix = np.asarray(pooled, dtype=np.int64)
        n_students = sum(1 for m in data["confusion"].get("per_submission", {}).values() if m)
        sections.append(_img(confusion_figure(matrix, families), "pooled confusion matrix"))
        sections.append(note(f"Row-normalised; {int(matrix.sum())} predictions from {n_students} submission(s)."))
    else:
        sections.append(note(f"No confusion data ({data_path.name} beside grades.csv has none)."))
    sections.append(f"<h2>Leaderboard (top {top} by held-out accuracy)</h2>")
    board = graded.dropna(subset=["heldout_accuracy"]).sort_values(["heldout_accuracy", "total"], ascending=False).head(top)
    rows = [[str(rank), str(r["name"]), str(r.get("sid", "")), f"{r['heldout_accuracy']:.2%}", fmt_points(r["total"])]
            for rank, (_, r) in enumerate(board.iterrows(), start=1)]
    sections.append(table(["#", "student", "sid", "held-out accuracy", "total"], rows, right={0, 3, 4})
                    if rows else note("No held-out accuracies in grades.csv."))
    out = pathlib.Path(out)
    sections.append(_integrity_section(pathlib.Path(integrity) if integrity else None, grades_path, out))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or "Class report")}'
            f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n")
    from autograder.atomic import PRIVATE, write_atomically

    write_atomically(out, page, mode=PRIVATE, fsync=False)  # every student's grade: the instructor's to share
    return out
