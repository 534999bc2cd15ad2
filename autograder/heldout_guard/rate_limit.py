"""Held-out evaluations per time window, counted from ``submission_metadata.json``, never the clock.

The rubric's ``[heldout.rate_limit]`` allows ``max_evaluations`` per ``window_hours``.  Earlier
submissions count when their ``previous_submissions[].submission_time`` lies in the window that
ends at this submission's ``created_at`` (a submission exactly ``window_hours`` earlier has left
it) and ``autograder_error`` is not true (a run that failed through no fault of the student does
not count).  Every counted submission uses the allowance, evaluated or not, as in Gradescope's
own guidance; so a regrade of the same metadata gives the same answer.

Over the limit the held-out item is not evaluated: it keeps the held-out result of the most
recent earlier submission whose results carry one (Gradescope includes ``results`` for the most
recent submission; an export may include them for all), and the message says when the next
evaluation is possible.  Without ``previous_submissions`` (a local run) nothing is limited.

Example
-------
>>> from autograder.rubric.model import RateLimit
>>> previous = [{"submission_time": f"2024-10-05T0{h}:00:00+00:00", "score": 50.0, "autograder_error": False}
...             for h in range(1, 4)]
>>> metadata = {"created_at": "2024-10-05T09:00:00+00:00", "previous_submissions": previous}
>>> decision = assess(metadata, RateLimit(max_evaluations=3, window_hours=24), item="4.1")
>>> decision.evaluate, decision.counted, decision.next_allowed
(False, 3, '2024-10-06T02:00:00+00:00')
>>> assess(metadata, RateLimit(max_evaluations=4, window_hours=24), item="4.1").evaluate
True
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from autograder.late import parse_timestamp
from autograder.rubric.model import RateLimit


@dataclass(frozen=True)
class RateDecision:
    """Whether this submission's held-out item is evaluated, and what it keeps when it is not."""

    evaluate: bool
    counted: int = 0  # earlier submissions in the window that count
    limit: int = 0
    window_hours: float = 24.0
    next_allowed: "str | None" = None  # ISO 8601, in created_at's time zone
    carried: "dict | None" = None  # the held-out block kept from an earlier result
    carried_from: "str | None" = None  # that earlier submission's time
    notes: "list[str]" = field(default_factory=list)  # for instructors: fields that were missing or odd

    @property
    def message(self) -> str:
        """What the student reads on the held-out line when it is not evaluated."""
        if self.evaluate:
            return ""
        hours = f"{self.window_hours:g} h"
        kept = (f"This submission keeps the held-out result of your submission of {_show(self.carried_from)}."
                if self.carried is not None else
                "No earlier held-out result is available to keep, so this item scores 0 for this submission; "
                "activate an earlier submission in Gradescope to keep its score.")
        return (f"Held-out evaluations are limited to {self.limit} per {hours}, and {self.counted} of your earlier "
                f"submissions fall in the last {hours}, so the held-out accuracy was not evaluated this time. {kept} "
                f"The next evaluation is possible from {_show(self.next_allowed)} (every submission before then "
                "counts too).")


def _show(stamp: "str | None") -> str:
    parsed, _ = parse_timestamp(stamp)
    return parsed.strftime("%Y-%m-%d %H:%M %z").replace("+0000", "UTC") if parsed else str(stamp)


def _carried_block(results: Any, item: str) -> "dict | None":
    """The held-out block of an earlier results.json: ``extra_data.heldout``, else the item's test line."""
    if not isinstance(results, dict):
        return None
    block = (results.get("extra_data") or {}).get("heldout") if isinstance(results.get("extra_data"), dict) else None
    if isinstance(block, dict) and block.get("item") == item and isinstance(block.get("fraction"), (int, float)):
        return dict(block)
    for test in results.get("tests") or []:
        if isinstance(test, dict) and test.get("number") == item and (test.get("extra_data") or {}).get("kind") == "item":
            score, top = test.get("score"), test.get("max_score")
            if isinstance(score, (int, float)) and isinstance(top, (int, float)) and top > 0:
                return {"item": item, "fraction": max(0.0, min(1.0, score / top))}
    return None


def assess(metadata: "dict | None", limit: RateLimit, *, item: str) -> RateDecision:
    """The decision for this submission (``metadata``: submission_metadata.json, or None locally)."""
    if limit.max_evaluations <= 0:
        return RateDecision(evaluate=True)
    base = {"limit": limit.max_evaluations, "window_hours": limit.window_hours}
    if not isinstance(metadata, dict):
        return RateDecision(evaluate=True, notes=["no submission metadata: rate limit not applied"], **base)
    created, why = parse_timestamp(metadata.get("created_at"))
    if created is None:
        return RateDecision(evaluate=True, notes=[f"created_at unreadable ({why}): rate limit not applied"], **base)
    previous = metadata.get("previous_submissions")
    if not isinstance(previous, list):
        return RateDecision(evaluate=True, notes=["no previous_submissions in the metadata: rate limit not applied"],
                            **base)
    window = dt.timedelta(hours=limit.window_hours)
    notes: "list[str]" = []
    counted: "list[dt.datetime]" = []
    history: "list[tuple[dt.datetime, dict]]" = []
    for index, entry in enumerate(previous):
        if not isinstance(entry, dict):
            notes.append(f"previous_submissions[{index}] is not an object: ignored")
            continue
        stamp, why = parse_timestamp(entry.get("submission_time"))
        if stamp is None:
            notes.append(f"previous_submissions[{index}]: submission_time {why}: ignored")
            continue
        if stamp >= created:
            continue  # not earlier than this submission (a regrade of an older one): not part of its window
        history.append((stamp, entry))
        if entry.get("autograder_error") is True:
            continue
        if created - stamp < window:
            counted.append(stamp)
    if len(counted) < limit.max_evaluations:
        return RateDecision(evaluate=True, counted=len(counted), notes=notes, **base)
    # Over the limit.  Every counted submission (this one too) uses the allowance, so the next
    # evaluation comes when the window holds max_evaluations - 1 of them.
    times = sorted(counted + [created])
    next_allowed = times[len(times) - limit.max_evaluations] + window
    carried, carried_from = None, None
    for stamp, entry in sorted(history, key=lambda pair: pair[0], reverse=True):
        block = _carried_block(entry.get("results"), item)
        if block is not None:
            carried, carried_from = block, block.get("evaluated_at") or entry.get("submission_time")
            break
    return RateDecision(evaluate=False, counted=len(counted), next_allowed=next_allowed.isoformat(), carried=carried,
                        carried_from=carried_from, notes=notes, **base)
