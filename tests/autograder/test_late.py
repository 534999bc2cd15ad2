"""Late penalty: on time, grace edge, exactly 24 h, DST, extensions, late due date, cap, odd metadata."""
from __future__ import annotations

import json

import pytest

from autograder.late import assess_late_penalty, format_duration, parse_timestamp, read_metadata
from autograder.rubric import LatePolicy

DUE = "2024-10-07T23:59:00-07:00"
LATE_DUE = "2024-10-14T23:59:00-07:00"
THREE_PER_DAY = LatePolicy(amount=3)


def metadata(created_at, *, due=DUE, late_due=LATE_DUE, users=None, release="2024-09-30T09:00:00-07:00"):
    """A submission_metadata.json dict in Gradescope's documented shape."""
    return {
        "id": 123456, "created_at": created_at, "submission_method": "upload",
        "assignment": {"due_date": due, "late_due_date": late_due, "release_date": release, "group_size": None,
                       "group_submission": False, "id": 42, "course_id": 7, "title": "A2", "total_points": "100.0"},
        "users": users if users is not None else [{"email": "ada@example.edu", "id": 1, "name": "Ada"}],
        "previous_submissions": [],
    }


def penalty(created_at, policy=THREE_PER_DAY, earned=90.0, **kwargs):
    return assess_late_penalty(metadata=metadata(created_at, **kwargs), policy=policy, earned=earned, total=100.0)


def test_on_time_has_no_penalty_and_says_so():
    late = penalty("2024-10-07T21:30:00-07:00")
    assert late.penalty == 0 and late.late_seconds == 0
    assert late.line == "submitted on time (2 h 29 min before the due date)"


def test_exactly_at_the_due_date_is_on_time():
    assert penalty(DUE).penalty == 0


def test_the_issue_example_line():
    late = penalty("2024-10-09T02:04:00-07:00")
    assert late.line == "submitted 1 day 2 h 5 min late → 2 days × 3 points = −6"
    assert (late.penalty, late.units, late.late_seconds) == (6.0, 2.0, 86_400.0 + 2 * 3600 + 5 * 60)


def test_exactly_24_hours_is_one_day_and_one_second_more_is_two():
    assert penalty("2024-10-08T23:59:00-07:00").units == 1
    assert penalty("2024-10-08T23:59:00-07:00").line.endswith("1 day × 3 points = −3")
    assert penalty("2024-10-08T23:59:01-07:00").units == 2
    # One microsecond past 24 h still starts a second day: exact arithmetic, no float rounding.
    assert penalty("2024-10-08T23:59:00.000001-07:00").units == 2


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [("2024-10-08T00:14:00-07:00", 0.0),    # 15 min late: the grace edge is inclusive
     ("2024-10-08T00:14:01-07:00", 3.0)],   # one second past it: a full started day
)
def test_grace_period_edge(created_at, expected):
    late = penalty(created_at, policy=LatePolicy(amount=3, grace_minutes=15))
    assert late.penalty == expected
    if expected == 0:
        assert "within the 15 min grace period" in late.line


def test_dst_change_counts_elapsed_time_not_wall_clock():
    # US DST starts 2025-03-09: 23:59 PST on the 8th to 23:59 PDT on the 9th is only 23 h.
    late = penalty("2025-03-09T23:59:00-07:00", due="2025-03-08T23:59:00-08:00", late_due=None)
    assert late.late_seconds == 23 * 3600 and late.units == 1
    assert late.line.startswith("submitted 23 h late")
    # ... and 24 h of wall clock across the autumn change is 25 h elapsed: 2 days.
    late = penalty("2024-11-03T23:59:00-08:00", due="2024-11-02T23:59:00-07:00", late_due=None)
    assert late.late_seconds == 25 * 3600 and late.units == 2


def test_offsets_are_compared_as_instants():
    # 06:59 UTC on the 8th is exactly the due date 23:59 -07:00 on the 7th.
    assert penalty("2024-10-08T06:59:00Z").penalty == 0
    assert penalty("2024-10-08T07:00:00+00:00").units == 1


def test_per_student_extension_replaces_the_assignment_due_date():
    users = [{"email": "ada@example.edu", "id": 1, "name": "Ada",
              "assignment": {"due_date": "2024-10-10T23:59:00-07:00", "late_due_date": "2024-10-17T23:59:00-07:00",
                             "release_date": "2024-09-30T09:00:00-07:00"}}]
    late = penalty("2024-10-09T02:04:00-07:00", users=users)
    assert late.penalty == 0 and late.due_date == "2024-10-10T23:59:00-07:00"
    assert "extension for Ada" in late.line
    # After the extended late due date (but before the assignment's) it is zeroed.
    late = penalty("2024-10-16T00:00:00-07:00", users=users, late_due="2024-10-20T23:59:00-07:00")
    assert late.units == 6 and not late.zeroed


def test_group_uses_the_latest_extension_of_its_members():
    users = [{"name": "Ada", "assignment": {"due_date": "2024-10-08T23:59:00-07:00"}},
             {"name": "Bob", "assignment": {"due_date": "2024-10-09T23:59:00-07:00"}},
             {"name": "Cy"}]
    late = penalty("2024-10-09T12:00:00-07:00", users=users)
    assert late.penalty == 0 and "extension for Bob" in late.line


def test_after_the_late_due_date_scores_zero():
    late = penalty("2024-10-15T00:00:00-07:00", earned=87.5)
    assert late.zeroed and late.penalty == 87.5
    assert "after the late due date → score 0 (−87.5)" in late.line


def test_after_the_late_due_date_without_zeroing_keeps_the_daily_penalty():
    late = penalty("2024-10-15T00:00:00-07:00", policy=LatePolicy(amount=3, zero_after_late_due=False))
    assert not late.zeroed and late.units == 8 and late.penalty == 24


def test_cap_limits_the_deduction():
    late = penalty("2024-10-13T00:00:00-07:00", policy=LatePolicy(amount=3, cap=10))
    assert late.units == 6 and late.penalty == 10
    assert late.line.endswith("6 days × 3 points = −18, capped at −10")


def test_penalty_never_exceeds_what_was_earned():
    late = penalty("2024-10-13T00:00:00-07:00", earned=4.0)
    assert late.penalty == 4.0 and "limited to the 4 points earned" in late.line


def test_percent_per_hour_of_earned_points_floor_and_exact_rounding():
    policy = LatePolicy(amount=10, unit="percent", per="hour")
    late = penalty("2024-10-08T02:30:00-07:00", policy=policy, earned=80.0)
    assert late.units == 3 and late.penalty == pytest.approx(24.0)
    assert "3 hours × 10% of 80 points = −24" in late.line
    floor = penalty("2024-10-08T02:30:00-07:00", policy=LatePolicy(amount=10, unit="percent", per="hour",
                                                                  rounding="floor", percent_of="total"))
    assert floor.units == 2 and floor.penalty == pytest.approx(20.0)
    exact = penalty("2024-10-08T02:29:00-07:00", policy=LatePolicy(amount=2, per="hour", rounding="none"))
    assert exact.units == pytest.approx(2.5) and exact.penalty == pytest.approx(5.0)


def test_percent_cap_is_a_percentage_of_the_basis():
    policy = LatePolicy(amount=20, unit="percent", cap=50)
    late = penalty("2024-10-12T00:00:00-07:00", policy=policy, earned=60.0)
    assert late.units == 5 and late.penalty == pytest.approx(30.0)


@pytest.mark.parametrize("created_at", ["yesterday", "", None, 12345, "2024-13-45T99:00:00"])
def test_garbage_created_at_means_no_penalty_with_a_note(created_at):
    late = penalty(created_at)
    assert late.penalty == 0
    assert "cannot read the submission time" in late.note and "no late penalty" in late.line


def test_missing_due_date_means_no_penalty_with_a_note():
    late = penalty("2024-10-20T00:00:00-07:00", due=None)
    assert late.penalty == 0 and "due date" in late.note


def test_naive_timestamps_are_read_as_utc_with_a_note():
    late = penalty("2024-10-09T07:00:00", due="2024-10-08T07:00:00", late_due=None)
    assert late.units == 1 and late.penalty == 3
    assert "has no time zone; read as UTC" in late.line


def test_created_before_release_is_flagged_but_not_penalised():
    late = penalty("2024-09-01T00:00:00-07:00")
    assert late.penalty == 0 and "before the release date" in late.note


def test_unreadable_late_due_date_is_ignored_with_a_note():
    late = penalty("2024-10-20T00:00:00-07:00", late_due="next week")
    assert not late.zeroed and late.units == 13 and "late due date ignored" in late.note


def test_missing_metadata_is_a_local_run(tmp_path):
    data, note = read_metadata(tmp_path / "submission_metadata.json")
    assert data is None and "no late penalty" in note
    late = assess_late_penalty(metadata=None, policy=THREE_PER_DAY, earned=50, total=100, metadata_note=note)
    assert late.penalty == 0 and late.note == note


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe"])
def test_malformed_metadata_file_gives_a_note(tmp_path, content):
    path = tmp_path / "submission_metadata.json"
    path.write_bytes(content.encode("latin-1"))
    data, note = read_metadata(path)
    assert data is None and "no late penalty applied" in note


def test_real_metadata_file_round_trip(tmp_path):
    path = tmp_path / "submission_metadata.json"
    path.write_text(json.dumps(metadata("2024-10-09T02:04:00.588418-07:00")))
    data, note = read_metadata(path)
    assert note == "" and assess_late_penalty(metadata=data, policy=THREE_PER_DAY, earned=90, total=100).penalty == 6


def test_timestamp_forms_python_310_cannot_parse():
    assert parse_timestamp("2024-10-08T06:59:00Z")[0] == parse_timestamp("2024-10-07T23:59:00-07:00")[0]
    assert parse_timestamp("2024-10-08T06:59:00.123456789+0000")[0].microsecond == 123456
    assert parse_timestamp("2024-10-08 06:59:00.5+00:00")[0].microsecond == 500000


def test_format_duration():
    import datetime as dt
    assert format_duration(dt.timedelta(seconds=42)) == "42 s"
    assert format_duration(dt.timedelta(days=2, minutes=1)) == "2 days 1 min"
    assert format_duration(dt.timedelta(hours=1)) == "1 h"
