"""How the demo ends: the expectations it checks, and the closing text (where everything is, the scores).

:func:`check_expectations` says which of the scores the demo should show did not come out (the
reference gets full marks, the starter 0, each mistake loses points on its item, the late penalty
and the extension apply, every pair of the synthetic class is flagged); :func:`summary_text` is
what ``notegrade demo`` prints at the end.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autograder.instructor.demo.steps import MISTAKES, SUBMISSIONS, points


def check_expectations(result: Any) -> list[str]:
    """What the demo should show, checked: an empty list when every score is as expected."""
    problems = []
    scores = result.scores
    ref = scores.get("reference")
    if ref is None or ref["score"] != ref["total"]:
        problems.append(f"the reference should get full marks, got {ref and ref['score']}")
    if scores.get("starter", {}).get("score") != 0.0:
        problems.append(f"the starter code should get 0, got {scores.get('starter', {}).get('score')}")
    for mistake in MISTAKES:
        graded = scores.get(mistake.name)
        item = (graded or {}).get("items", {}).get(mistake.item)
        if item is None or not 0 < graded["score"] < graded["total"] or item["score"] >= item["max_score"]:
            problems.append(f"{mistake.label} should lose some (not all) points, on item {mistake.item}")
    by_sid = {row["sid"]: row for row in result.class_rows}
    expected = {"100001": ("on time", lambda r: r["penalty"] == 0 and r["total"] == 100),
                "100002": ("late: penalised", lambda r: r["penalty"] > 0 and r["total"] == 100 - r["penalty"]),
                "100003": ("late but extended: not penalised", lambda r: r["penalty"] == 0 and r["total"] == 100)}
    for sid, (what, holds) in expected.items():
        row = by_sid.get(sid)
        if row is None or row["status"] != "graded" or not holds(row):
            problems.append(f"class: student {sid} ({what}) got {row and (row['status'], row['penalty'], row['total'])}")
    # Every synthetic student hands in the reference's model.pt: each pair of the six is an identical checkpoint.
    identical = [f for f in result.integrity if "identical-checkpoint" in f["flags"]]
    if len(identical) != 15 or len(result.integrity) != 15:
        problems.append(f"integrity: expected the 15 pairs of identical model.pt files flagged, got "
                        f"{len(identical)} of {len(result.integrity)} flags")
    return problems


# What each artefact is, for the closing list (keys of DemoResult.paths).
ARTEFACTS = {
    "dataset": "render_manifest.json; the WAVs too with --keep",
    "train_features": "feature file (notegrade data features)",
    "valid_features": "feature file",
    "reference_run": "model.pt, checkpoint.pt, history.csv, curves.png",
    "heldout": "the held-out file the autograder ships",
    "reference_eval": "the reference on it: metrics.json, confusion.png",
    "rubric": "the demo rubric (held-out thresholds for this data)",
    "autograder": "what you upload to Gradescope",
    "starter": "the student template (README handout, TODOs)",
    "starter_zip": "the archive you hand out",
    "submissions": "the graded submissions",
    "graded": "<submission>/results.json, report.html; summary.csv",
    "class_export": "a synthetic Gradescope 'Export Submissions' zip",
    "extensions": "per-student extensions",
    "class_report": "open it in a browser",
}
# Folders whose files are listed as found on disk, each with what it is: nothing is promised that a run
# may not write (integrity's copydetect/ exists only when a pair is flagged for copied code).
LISTED = {"regrade": {"grades.csv": "", "canvas.csv": "", "score_changes.csv": "", "reports/": ""},
          "integrity": {"integrity.csv": " (flagged pairs and students, with the evidence)", "copydetect/": ""}}


def describe(key: str, path: Path) -> str:
    """The closing list's text for one artefact (for a folder of :data:`LISTED`: the files it holds)."""
    if key not in LISTED:
        return ARTEFACTS.get(key, "")
    found = []
    for name, what in LISTED[key].items():
        entry = path / name.rstrip("/")
        if name == "copydetect/":
            reports = len(list(entry.glob("*.html"))) if entry.is_dir() else 0
            found.append(f"copydetect/ ({reports} pair report(s))" if reports
                         else "no copydetect/ (only when code is flagged)")
        elif entry.is_dir() if name.endswith("/") else entry.is_file():
            found.append(name + what)
    return ", ".join(found)


# The synthetic class's submission variants, in words.
VARIANTS = {"reference": "reference files", "syntax_error": "syntax error in model", "wrong_loss": "loss sums, not mean",
            "no_checkpoint": "no model.pt"}


def summary_text(result: Any) -> str:
    """Where each artefact is, and the two score tables."""
    from autograder.instructor.demo.synthetic_class import DEFAULT_CLASS, DUE

    variants = {str(sub.submission_id): VARIANTS.get(sub.variant, sub.variant) for sub in DEFAULT_CLASS}
    lines = [f"artefacts in {result.out}/:"]
    for key, path in result.paths.items():
        path = Path(path)
        shown = f"{path.relative_to(result.out) if path.is_relative_to(result.out) else path}{'/' if path.is_dir() else ''}"
        lines.append(f"  {shown:<36} {describe(key, path)}")
    lines += ["", "grading with autograder.zip:", f"  {'submission':<32} {'score':>9}  items short of full marks"]
    for name in SUBMISSIONS:
        entry = result.scores.get(name)
        if entry is None:
            continue
        short = [(n, i) for n, i in entry["items"].items() if i["score"] < i["max_score"]]
        listed = (f"all {len(short)}" if short and len(short) == len(entry["items"])
                  else ", ".join(f"{n} ({points(i['score'])}/{points(i['max_score'])})" for n, i in short) or "-")
        lines.append(f"  {entry['label']:<32} {points(entry['score']) + ' / ' + points(entry['total']):>11}  {listed}")
        if short:
            lines.append(f"  {'':<32} {'':>11}    {short[0][0]}: {short[0][1]['message'][:100]}")
    lines += ["", f"regrade of the synthetic class (due {DUE:%Y-%m-%d %H:%M %z}; the demo rubric's late policy):",
              f"  {'student':<14} {'submission':<22} {'status':<8} {'penalty':>7} {'total':>7}  lateness"]
    for row in result.class_rows:
        lateness = re.sub(r"\s+", " ", str(row.get("lateness") or "")) or "-"
        what = variants.get(str(row["submission_id"]), "")
        lines.append(f"  {row['name']:<14} {what:<22} {row['status'][:8]:<8} {points(row['penalty']):>7} "
                     f"{points(row['total']):>7}  {lateness[:100]}")
    kinds = sorted({kind for flag in result.integrity for kind in flag["flags"].split("; ")})
    lines += ["", f"integrity analysis of the class: {len(result.integrity)} flagged pair(s) or student(s) "
                  f"({', '.join(kinds) or 'none'}): every synthetic student submits the reference's model.pt"]
    return "\n".join(lines)
