"""The held-out item's lines in results.json: what students see, when, and what only instructors see.

Added to the results.json being built (``Session.apply``), never changing a score:

- the held-out item's points line: with a public/private split (``[heldout] public_fraction``) its
  points come from the private part, so a line rubric'd ``visible`` becomes ``after_due_date``;
- ``<item> ... public part`` (0 points, visible): the public part's accuracy, rounded to 0.1 point;
  the leaderboard shows the same number;
- ``<item> ... per family`` (0 points, ``[heldout] details_visibility``, default after_due_date):
  per-family accuracy and the confusion matrix;
- ``Integrity (instructors only)`` (0 points, hidden; ``[heldout] integrity_line``): the
  train-on-test and lookup verdicts with their numbers and the tampering report;
- ``extra_data["heldout"]`` (what a later, rate-limited submission keeps) and
  ``extra_data["integrity"]`` (``{"train_on_test": {...} | None, "tampering": [...],
  "lookup": {...} | None}``).

Gradescope hides a student's total while any test is not visible to them (a hidden line, or an
after-due-date line before the due date); the report says so instead of showing a total.
Nothing here identifies an individual held-out note: no ids, no names, no positions.
"""
from __future__ import annotations

from typing import Any

from autograder.heldout_guard import lookup, tampering
from autograder.heldout_guard import trained_on_heldout as train_on_test
from autograder.report import SHORT_FAMILY


def points_visibility(rubric: Any, item: Any) -> str:
    """The visibility of ``item``'s points line: private-part points are shown after the due date."""
    if item.check == "heldout_accuracy" and rubric.heldout.public_fraction > 0 and item.visibility == "visible":
        return "after_due_date"
    return item.visibility


def _block(graded: Any, session: Any) -> dict:
    """``extra_data["heldout"]``: the result a later over-the-limit submission keeps."""
    data, item = graded.outcome.data or {}, graded.item
    if data.get("rate_limited"):
        carried = dict(data.get("carried") or {})
        return {**carried, "item": item.number, "fraction": graded.outcome.fraction, "score": graded.score,
                "evaluated": False, "carried_from": session.rate.carried_from,
                "rate_limit": {"counted": session.rate.counted, "limit": session.rate.limit,
                               "window_hours": session.rate.window_hours, "next_allowed": session.rate.next_allowed}}
    block = {"item": item.number, "fraction": graded.outcome.fraction, "score": graded.score,
             "evaluated": graded.outcome.status == "ran", "evaluated_at": session.created_at,
             "details_visibility": session.rubric.heldout.details_visibility}
    if graded.outcome.status == "ran" and "accuracy_rounded" in data:
        block.update(accuracy_rounded=data["accuracy_rounded"], count=data.get("scored_count"))
        if "public_accuracy_rounded" in data:
            block.update(public_accuracy_rounded=data["public_accuracy_rounded"], public_count=data.get("public_count"),
                         private_count=data.get("private_count"))
    return block


def _public_line(item: Any, block: dict, fraction: float, control: bool = False) -> "dict | None":
    accuracy = block.get("public_accuracy_rounded")
    if not isinstance(accuracy, (int, float)):
        return None
    kept = " (kept from an earlier submission)" if not block.get("evaluated", True) else ""
    share = f"{fraction:.0%}"
    return {"name": f"{item.number} {item.title}: public part", "score": 0.0, "max_score": 0.0, "status": "passed",
            "visibility": "visible", "extra_data": {"kind": "heldout_public"},
            "output": f"Accuracy on the public part of the held-out notes ({share} of them"
                      + (f", {block['public_count']:,} notes" if block.get("public_count") else "") +
                      f"): {accuracy:.1%}{kept}. The points of item {item.number} come from the other notes (the "
                      "private part)" + (" and the course's control notes" if control else "") +
                      " and are shown after the due date; the leaderboard shows this public accuracy."}


def _details_line(item: Any, data: dict, visibility: str) -> "dict | None":
    per_family, confusion = data.get("per_family") or {}, data.get("confusion")
    if not per_family or not confusion:
        return None
    names = list(per_family) if len(per_family) == len(confusion) else [str(i) for i in range(len(confusion))]
    rows = [f"{name:<11} {'-' if value is None else f'{value:.1%}':>6}" for name, value in per_family.items()]
    short = [SHORT_FAMILY.get(n, n[:5]) for n in names]
    matrix = ["true \\ pred " + " ".join(f"{s:>5}" for s in short)]
    matrix += [f"{short[i]:<11} " + " ".join(f"{v:>5}" for v in row) for i, row in enumerate(confusion)]
    text = ("Per-family accuracy on all held-out notes:\n" + "\n".join(rows) +
            "\n\nConfusion matrix (rows: true family, columns: predicted family):\n" + "\n".join(matrix))
    return {"name": f"{item.number} {item.title}: per family", "score": 0.0, "max_score": 0.0, "status": "passed",
            "visibility": visibility, "output": text, "extra_data": {"kind": "heldout_details"}}


def _integrity_line(integrity: dict, notes: "list[str]") -> dict:
    verdict, found = integrity["train_on_test"], integrity["tampering"]
    lines = ["Instructors only: never shown to students, never part of the score."]
    if verdict is None:
        lines.append("Train-on-test detector: not run (the held-out file has no training sample, the held-out item "
                     "was not evaluated, or the detector is off).")
    else:
        lines.append(f"Train-on-test detector: {'FLAGGED' if verdict['flagged'] else 'not flagged'}. "
                     f"Held-out accuracy {verdict['heldout_accuracy']:.1%} (loss {_loss(verdict['heldout_loss'])}), "
                     f"training sample {verdict['train_accuracy']:.1%} (loss {_loss(verdict['train_loss'])}). "
                     + verdict["reason"])
    if found:
        lines.append(f"Tampering report ({len(found)}): reaching into the grader, which honest code never needs:")
        lines += [f"- [{record['kind']}] {record['detail']}" for record in found]
    else:
        lines.append("Tampering report: nothing found.")
    found_lookup = integrity.get("lookup")
    if found_lookup is None:
        lines.append("Lookup detector: not run (no private control split in the held-out file, no reference accuracy "
                     "on it, the held-out item was not evaluated, or the detector is off).")
    else:
        lines.append(f"Lookup detector: {'FLAGGED' if found_lookup['flagged'] else 'not flagged'}. "
                     + found_lookup["reason"])
    lines += [f"Note: {note}" for note in notes]
    flagged = _flagged(integrity)
    return {"name": "Integrity (instructors only)", "score": 0.0, "max_score": 0.0,
            "status": "failed" if flagged else "passed", "visibility": "hidden", "output": "\n".join(lines),
            "extra_data": {"kind": "integrity", "flagged": flagged}}


def _flagged(integrity: dict) -> bool:
    return any(bool(integrity.get(name) and integrity[name]["flagged"]) for name in ("train_on_test", "lookup")) \
        or bool(integrity["tampering"])


def _loss(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def apply(data: dict, *, session: Any, graded: list) -> None:
    """Add the held-out lines, adjust the leaderboard, and write ``extra_data`` (see the module doc)."""
    rubric, settings = session.rubric, session.rubric.heldout
    extra = data.setdefault("extra_data", {})
    verdict = found_lookup = None
    notes = list(session.notes)
    tests = data.setdefault("tests", [])
    probe = None
    for g in [g for g in graded if g.item.check == "heldout_accuracy"]:
        probe = (g.outcome.data or {}).pop("probe", None) or probe  # instructor-only, like the verdicts
        line = next((t for t in tests if t.get("number") == g.item.number), None)
        if line is None:
            continue
        line["visibility"] = points_visibility(rubric, g.item)
        block = _block(g, session)
        extra["heldout"] = block
        scored_control = settings.control_weight > 0 and not (g.outcome.data or {}).get("control_missing")
        added = [_public_line(g.item, block, settings.public_fraction, scored_control)]
        if g.outcome.status == "ran" and not (g.outcome.data or {}).get("rate_limited"):
            added.append(_details_line(g.item, g.outcome.data, settings.details_visibility))
            verdict = train_on_test.detect(g.outcome.data, settings.train_on_test, session.reference)
            found_lookup = lookup.detect(g.outcome.data, settings.lookup, session.reference)
        if (g.outcome.data or {}).get("control_missing"):
            notes.append(f"the rubric takes {settings.control_weight:.0%} of item {g.item.number} from a private control "
                         "split, but the held-out file has none: scored on the public notes only (rebuild it with "
                         "`notegrade heldout --control DIR`, or set [heldout] control_weight = 0)")
        position = tests.index(line) + 1
        tests[position:position] = [t for t in added if t is not None]
        _leaderboard(data, rubric, g.item.number, block)
    integrity = {"train_on_test": verdict,
                 "tampering": tampering.merge(session.static_findings, session.worker_records), "lookup": found_lookup,
                 "probe": probe}
    extra["integrity"] = integrity
    mode = getattr(settings, "integrity_line", "always")
    if mode == "always" or (mode == "flagged" and _flagged(integrity)):
        late = [i for i, t in enumerate(tests) if (t.get("extra_data") or {}).get("kind") == "late_penalty"]
        tests.insert(late[0] if late else len(tests), _integrity_line(integrity, notes))


def _leaderboard(data: dict, rubric: Any, number: str, block: dict) -> None:
    """Leaderboard columns on the held-out item's accuracy show the public (or whole) accuracy, rounded."""
    value = block.get("public_accuracy_rounded", block.get("accuracy_rounded"))
    columns = {c.name for c in rubric.leaderboard if c.item == number and c.field in ("accuracy", "public_accuracy")}
    entries = [e for e in data.get("leaderboard") or [] if e.get("name") not in columns]
    if isinstance(value, (int, float)):
        for column in rubric.leaderboard:
            if column.name in columns:
                entries.append({"name": column.name, "value": value, "order": column.order})
    data["leaderboard"] = entries
