"""Held-out evaluations per window from previous_submissions (Gradescope's documented shape), never the clock."""
from __future__ import annotations

import datetime as dt

import pytest

from autograder.heldout_guard.rate_limit import assess
from autograder.rubric.model import RateLimit

CREATED = dt.datetime(2024, 10, 5, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
LIMIT = RateLimit(max_evaluations=5, window_hours=24)


def _previous(*hours_before: float, error: "set[int]" = frozenset(), results: "dict | None" = None) -> "list[dict]":
    """Gradescope's previous_submissions entries, oldest first; ``results`` only on the most recent."""
    entries = []
    for index, hours in enumerate(sorted(hours_before, reverse=True)):
        entries.append({"submission_time": (CREATED - dt.timedelta(hours=hours)).isoformat(), "score": 61.5,
                        "autograder_error": index in error})
    if entries and results is not None:
        entries[-1]["results"] = results
    return entries


def _metadata(previous: "list[dict] | None") -> dict:
    data = {"id": 7, "created_at": CREATED.isoformat(), "assignment": {"due_date": "2024-10-07T23:59:00-07:00"},
            "users": [{"email": "a@b.edu", "id": 1, "name": "A"}]}
    if previous is not None:
        data["previous_submissions"] = previous
    return data


def _kept(fraction: float = 0.75, public: float = 0.612) -> dict:
    """A previous results.json as this grader writes it (the held-out block in extra_data)."""
    return {"score": 88.5, "tests": [{"number": "4.1", "score": 22.5, "max_score": 30.0, "extra_data": {"kind": "item"}}],
            "extra_data": {"heldout": {"item": "4.1", "fraction": fraction, "accuracy_rounded": 0.5,
                                       "public_accuracy_rounded": public, "evaluated_at": "2024-10-05T08:00:00-07:00"}}}


def test_below_and_on_the_limit():
    assert assess(_metadata(_previous(1, 2, 3, 4)), LIMIT, item="4.1").evaluate  # the 5th evaluation
    on = assess(_metadata(_previous(1, 2, 3, 4, 5)), LIMIT, item="4.1")  # a 6th within 24 h
    assert not on.evaluate and on.counted == 5


def test_over_the_limit_keeps_the_last_result_and_says_when_the_next_is_possible():
    decision = assess(_metadata(_previous(1, 2, 3, 4, 5, 6, results=_kept())), LIMIT, item="4.1")
    assert not decision.evaluate and decision.counted == 6
    assert decision.carried["fraction"] == 0.75 and decision.carried_from == "2024-10-05T08:00:00-07:00"
    # Every counted submission (this one too) uses the allowance: 7 in the window, so the next
    # evaluation comes once 3 have left it, i.e. 24 h after the 3rd oldest (4 h before now).
    assert decision.next_allowed == (CREATED + dt.timedelta(hours=20)).isoformat()
    assert "limited to 5 per 24 h" in decision.message and "2024-10-06 08:00 -0700" in decision.message
    assert "keeps the held-out result of your submission of 2024-10-05 08:00 -0700" in decision.message


def test_window_edge_exactly_a_window_ago_has_left_it():
    assert assess(_metadata(_previous(1, 2, 3, 4, 24)), LIMIT, item="4.1").evaluate
    assert not assess(_metadata(_previous(1, 2, 3, 4, 23.999)), LIMIT, item="4.1").evaluate


def test_autograder_errors_do_not_count():
    decision = assess(_metadata(_previous(1, 2, 3, 4, 5, error={0, 1})), LIMIT, item="4.1")
    assert decision.evaluate and decision.counted == 3


def test_later_submissions_do_not_count_for_an_earlier_one():
    previous = _previous(1, 2, 3, 4) + [{"submission_time": (CREATED + dt.timedelta(hours=1)).isoformat(),
                                         "score": 1.0, "autograder_error": False}]
    assert assess(_metadata(previous), LIMIT, item="4.1").evaluate


@pytest.mark.parametrize("metadata, note", [
    (None, "no submission metadata"),
    (_metadata(None), "no previous_submissions"),
    ({**_metadata(_previous(1, 2, 3, 4, 5)), "created_at": "yesterday"}, "created_at unreadable"),
])
def test_missing_fields_mean_no_limit_and_a_note(metadata, note):
    decision = assess(metadata, LIMIT, item="4.1")
    assert decision.evaluate and any(note in n for n in decision.notes), decision.notes


def test_entries_with_missing_or_odd_fields():
    previous = _previous(1, 2, 3, 4)
    previous += [{"score": 3.0}, "junk", {"submission_time": "not a time", "autograder_error": False}]
    decision = assess(_metadata(previous), LIMIT, item="4.1")
    assert decision.evaluate and decision.counted == 4 and len(decision.notes) == 3
    # A missing autograder_error counts as a normal submission.
    no_flag = [{k: v for k, v in e.items() if k != "autograder_error"} for e in _previous(1, 2, 3, 4, 5)]
    assert not assess(_metadata(no_flag), LIMIT, item="4.1").evaluate


def test_no_earlier_result_to_keep():
    decision = assess(_metadata(_previous(1, 2, 3, 4, 5)), LIMIT, item="4.1")
    assert decision.carried is None and "No earlier held-out result is available" in decision.message


def test_an_older_results_json_without_the_block_still_gives_the_item_score():
    older = {"tests": [{"number": "4.1", "score": 15.0, "max_score": 30.0, "extra_data": {"kind": "item"}}]}
    decision = assess(_metadata(_previous(1, 2, 3, 4, 5, results=older)), LIMIT, item="4.1")
    assert decision.carried == {"item": "4.1", "fraction": 0.5}


def test_no_limit_by_default_and_the_clock_is_never_read(monkeypatch):
    assert assess(_metadata(_previous(*range(1, 30))), RateLimit(), item="4.1").evaluate

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            raise AssertionError("the rate limit read the clock")

    monkeypatch.setattr(dt, "datetime", Frozen)
    assert not assess(_metadata(_previous(1, 2, 3, 4, 5)), LIMIT, item="4.1").evaluate
