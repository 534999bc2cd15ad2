"""Rubric TOML: parsing, every rejection (with file, item and reason), the hash, the shipped rubrics."""
from __future__ import annotations

import pathlib

import pytest

from autograder.checks.outcome import CheckSpec
from autograder.checks.params import params_problems
from autograder.errors import NotegradeError
from autograder.rubric import ContainerSettings, LatePolicy, load_rubric, parse_rubric

REPO = pathlib.Path(__file__).resolve().parents[3]
SHIPPED = [REPO / "rubrics" / "fall2024_a2.toml", REPO / "rubrics" / "winter2025_hw3.toml"]


def _never_called(sandbox, params, *, timeout_s):  # the parser never runs checks
    raise AssertionError("rubric validation must not run checks")


# A registry in the CheckSpec shape, so parser tests don't depend on the real checks' parameters.
REGISTRY = {
    "architecture_params": CheckSpec("architecture_params", ("model.py",), {}, _never_called),
    "heldout_accuracy": CheckSpec("heldout_accuracy", ("model.py", "model.pt"),
                                  {"zero_at": None, "full_at": None, "batch_size": 256}, _never_called),
}

GOOD = """
title = "Test rubric"
total_points = 40
time_budget_s = 300

[late_policy]
amount = 3
grace_minutes = 10

[[leaderboard]]
name = "Accuracy"
item = "2.1"
field = "accuracy"

[[items]]
number = "1.1"
title = "Parameter counts"
points = 10
check = "architecture_params"
tags = ["architecture"]

[[items]]
number = "2.1"
title = "Held-out accuracy"
points = 30
visibility = "after_due_date"
timeout_s = 120
check = "heldout_accuracy"
params = { zero_at = 0.25, full_at = 0.6 }
"""


def parse(text=GOOD, **kwargs):
    return parse_rubric(text, source="r.toml", registry=REGISTRY, **kwargs)


def rejection(text) -> str:
    with pytest.raises(NotegradeError) as info:
        parse(text)
    return str(info.value)


def test_parses_items_policy_and_leaderboard():
    rubric = parse()
    assert rubric.title == "Test rubric" and rubric.total_points == 40 and rubric.time_budget_s == 300
    first, second = rubric.items
    assert (first.number, first.points, first.visibility, first.timeout_s, first.tags) == ("1.1", 10.0, "visible", 60.0, ("architecture",))
    assert (second.visibility, second.timeout_s, second.params) == ("after_due_date", 120.0, {"zero_at": 0.25, "full_at": 0.6})
    assert rubric.late_policy == LatePolicy(amount=3.0, grace_minutes=10.0)
    assert rubric.leaderboard[0].item == "2.1" and rubric.leaderboard[0].order == "desc"
    assert rubric.item("2.1") is second


def test_default_budget_is_safely_below_gradescopes_ten_minutes():
    rubric = parse(GOOD.replace("time_budget_s = 300\n", ""))
    assert rubric.time_budget_s == 480 < 600


def test_hash_ignores_formatting_but_not_content():
    reformatted = "# a comment\n" + GOOD.replace("points = 10", "points   =   10.0")
    assert parse(reformatted).rubric_hash == parse().rubric_hash
    assert parse(GOOD.replace("amount = 3", "amount = 2")).rubric_hash != parse().rubric_hash
    assert len(parse().rubric_hash) == 64


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("check = \"architecture_params\"", "check = \"architecture_parms\""),
         "r.toml: item 1.1: unknown check 'architecture_parms' (did you mean 'architecture_params'?)"),
        (("points = 10\n", "points = 15\n"), "r.toml: points add up to 45, but total_points is 40"),
        (("visibility = \"after_due_date\"", "visibility = \"secret\""),
         "r.toml: item 2.1: visibility 'secret' is not one of visible, hidden, after_due_date, after_published"),
        (("number = \"2.1\"", "number = \"1.1\""), "item 1.1: duplicate number '1.1'"),
        (("number = \"2.1\"", "number = \"2.a\""), "number must look like"),
        (("points = 10\n", "pionts = 10\n"), "item 1.1: unknown key 'pionts' (did you mean 'points'?)"),
        (("points = 10\n", "points = \"10\"\n"), "item 1.1: 'points' must be a number, got str '10'"),
        (("points = 10\n", "points = true\n"), "item 1.1: 'points' must be a number, got bool True"),
        (("points = 10\n", "points = -10\n"), "item 1.1: points must be >= 0"),
        (("timeout_s = 120", "timeout_s = 0"), "item 2.1: timeout_s must be > 0"),
        (("title = \"Parameter counts\"\n", ""), "item 1.1: missing required key 'title'"),
        (("{ zero_at = 0.25, full_at = 0.6 }", "{ zero_at = 0.25 }"),
         "item 2.1: heldout_accuracy: parameter 'full_at' is required"),
        (("{ zero_at = 0.25, full_at = 0.6 }", "{ zero_at = 0.25, full_at = 0.6, batch_size = \"big\" }"),
         "item 2.1: heldout_accuracy: parameter 'batch_size' must be an integer, not str"),
        (("{ zero_at = 0.25, full_at = 0.6 }", "{ zero_at = 0.25, full_at = 0.6, epochs = 3 }"),
         "item 2.1: heldout_accuracy: unknown parameter 'epochs'"),
        (("amount = 3", "amount = 3\nunit = \"euros\""), "late_policy: unit 'euros' is not one of points, percent"),
        (("grace_minutes = 10", "grace = 10"), "late_policy: unknown key 'grace'"),
        (("item = \"2.1\"", "item = \"9.9\""), "leaderboard[1]: item '9.9' is not a rubric item number"),
        (("time_budget_s = 300", "time_budget_s = 9000"), "time_budget_s must be in (0, 2400]"),
        (("title = \"Test rubric\"", "titel = \"Test rubric\""), "unknown key 'titel' (did you mean 'title'?)"),
    ],
)
def test_malformed_rubrics_are_rejected_with_file_item_and_reason(edit, expected):
    old, new = edit
    assert old in GOOD
    assert expected in rejection(GOOD.replace(old, new, 1))


def test_every_problem_is_reported_at_once():
    text = GOOD.replace("check = \"architecture_params\"", "check = \"nope\"").replace("visibility = \"after_due_date\"", "visibility = \"x\"")
    message = rejection(text)
    assert message.startswith("r.toml: 2 problems: ")
    assert "item 1.1: unknown check 'nope'" in message and "item 2.1: visibility 'x'" in message


def test_bad_toml_reports_line_and_column():
    message = rejection(GOOD.replace("points = 10\n", "points = = 10\n"))
    assert message.startswith("r.toml: not valid TOML:") and "(at line 18, column 10)" in message


def test_empty_and_missing_parts():
    assert "missing required key 'items'" in rejection('title = "x"\ntotal_points = 1\n')
    assert "the rubric has no items" in rejection('title = "x"\ntotal_points = 0\nitems = []\n')
    assert "'items' must be a list" in rejection('title = "x"\ntotal_points = 0\nitems = 3\n')


def test_load_rubric_names_missing_file(tmp_path):
    with pytest.raises(NotegradeError, match="rubric file not found"):
        load_rubric(tmp_path / "missing.toml", registry=REGISTRY)
    path = tmp_path / "r.toml"
    path.write_text(GOOD.replace("check = \"architecture_params\"", "check = \"nope\""))
    with pytest.raises(NotegradeError, match=f"^{path}: item 1.1: unknown check"):
        load_rubric(path, registry=REGISTRY)


def test_any_registry_is_checked_by_the_checks_own_parameter_validator():
    """One validator (autograder.checks.params): a test registry gets the ranges and messages the real checks get."""
    spec = REGISTRY["heldout_accuracy"]
    assert params_problems(spec, {"zero_at": 0.2, "full_at": 1}) == []  # an int is a valid float
    assert params_problems(spec, {"zero_at": True}) == [
        "heldout_accuracy: parameter 'zero_at' must be a number, not bool", "heldout_accuracy: parameter 'full_at' is required"]
    assert "item 2.1: heldout_accuracy: parameter 'batch_size' must be between 1 and 4096, got 0" in rejection(
        GOOD.replace("{ zero_at = 0.25, full_at = 0.6 }", "{ zero_at = 0.25, full_at = 0.6, batch_size = 0 }"))
    assert "item 2.1: heldout_accuracy: zero_at (0.6) must be below full_at (0.25)" in rejection(
        GOOD.replace("{ zero_at = 0.25, full_at = 0.6 }", "{ zero_at = 0.6, full_at = 0.25 }"))


def test_sandbox_limits_are_checked_against_sandboxlimits():
    from autograder.sandbox import SandboxLimits

    rubric = parse(GOOD + "\n[sandbox]\nmax_file_mb = 20\nmax_processes = 32\n")
    assert SandboxLimits(**rubric.sandbox).max_file_mb == 20
    assert "sandbox: unknown key 'max_file_mbs' (did you mean 'max_file_mb'?)" in rejection(GOOD + "\n[sandbox]\nmax_file_mbs = 1\n")
    assert "sandbox: 'max_processes' must be a number, got str" in rejection(GOOD + "\n[sandbox]\nmax_processes = \"many\"\n")
    assert "sandbox: max_file_mb must be >= 0" in rejection(GOOD + "\n[sandbox]\nmax_file_mb = -1\n")
    # a call's CPU budget, which the grader holds each call to (0: the call's timeout x threads + 10 s)
    assert SandboxLimits(**parse(GOOD + "\n[sandbox]\ncall_cpu_s = 30\n").sandbox).call_cpu_s == 30
    assert "sandbox: call_cpu_s must be >= 0" in rejection(GOOD + "\n[sandbox]\ncall_cpu_s = -5\n")
    assert "sandbox: 'call_cpu_s' must be a number, got str" in rejection(GOOD + "\n[sandbox]\ncall_cpu_s = \"lots\"\n")


def test_container_settings_default_to_gradescopes_and_follow_the_budget():
    rubric = parse()  # time_budget_s = 300, no [container]
    assert rubric.container == ContainerSettings(memory_mb=768, cpus=1.0, timeout_s=420.0)
    assert parse(GOOD.replace("time_budget_s = 300", "time_budget_s = 2350")).container.timeout_s == 2400  # capped
    custom = parse(GOOD + "\n[container]\nmemory_mb = 2048\ncpus = 2\ntimeout_s = 900\n")
    assert custom.container == ContainerSettings(memory_mb=2048, cpus=2.0, timeout_s=900.0)
    assert isinstance(custom.container.cpus, float) and isinstance(custom.container.memory_mb, int)
    assert parse(GOOD + "\n[container]\nmemory_mb = 1024.0\n").container.memory_mb == 1024
    # a rubric without [container] keeps its hash; spelling out the defaults changes nothing; new values do
    assert parse(GOOD + "\n[container]\nmemory_mb = 768\n").rubric_hash == parse().rubric_hash
    assert "container" not in parse().to_dict() and custom.to_dict()["container"]["memory_mb"] == 2048
    assert custom.rubric_hash != parse().rubric_hash
    # read without validating checks too (docker_grade only needs the structure)
    assert parse(GOOD + "\n[container]\ncpus = 0.5\n", validate_checks=False).container.cpus == 0.5


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("memroy_mb = 1024", "r.toml: container: unknown key 'memroy_mb' (did you mean 'memory_mb'?)"),
        ("memory_mb = \"1G\"", "r.toml: container: 'memory_mb' must be a number, got str '1G'"),
        ("memory_mb = 768.5", "container: memory_mb must be a whole number of MB, got 768.5"),
        ("memory_mb = 256", "container: memory_mb must be in [512, 65536]"),
        ("memory_mb = true", "container: 'memory_mb' must be a number, got bool True"),
        ("cpus = 0", "container: cpus must be in (0, 64], got 0"),
        ("cpus = \"two\"", "container: 'cpus' must be a number, got str 'two'"),
        ("timeout_s = 3000", "container: timeout_s must be above time_budget_s (300: the grader needs its whole "
                             "budget plus start-up) and at most 2400 (Gradescope's maximum), got 3000"),
        ("timeout_s = 300", "container: timeout_s must be above time_budget_s (300"),
    ],
)
def test_malformed_container_tables_are_rejected_with_file_and_reason(table, expected):
    assert expected in rejection(GOOD + f"\n[container]\n{table}\n")


def test_container_problems_are_reported_with_the_others():
    message = rejection(GOOD.replace("points = 10\n", "points = -10\n", 1) + "\n[container]\ncpus = -1\n")
    assert message.startswith("r.toml: 2 problems: item 1.1: points must be >= 0")  # (no sum: item 1.1 failed)
    assert "container: cpus must be in (0, 64], got -1" in message
    assert "'container' must be a table" in rejection(GOOD.replace("title = \"Test rubric\"\n",
                                                                   "title = \"Test rubric\"\ncontainer = 3\n"))


def test_docker_grade_reads_the_limits_from_the_rubric_object():
    from autograder.instructor.grading.docker.container import ContainerLimits

    custom = parse(GOOD + "\n[container]\nmemory_mb = 1536\ncpus = 1.5\ntimeout_s = 700\n")
    assert ContainerLimits.from_rubric(custom) == ContainerLimits(memory_mb=1536, cpus=1.5, timeout_s=700.0)
    assert ContainerLimits.from_rubric(parse()) == ContainerLimits(memory_mb=768, cpus=1.0, timeout_s=420.0)


def test_structure_only_parse_skips_check_names():
    rubric = parse(GOOD.replace("check = \"architecture_params\"", "check = \"future_check\""), validate_checks=False)
    assert rubric.items[0].check == "future_check"


@pytest.mark.parametrize("path", SHIPPED + [REPO / "tests" / "rubrics" / "rendered.toml"], ids=lambda p: p.name)
def test_shipped_rubrics_validate_against_the_real_checks(path):
    rubric = load_rubric(path)  # the real autograder.checks.REGISTRY
    assert rubric.total_points == 100 and sum(i.points for i in rubric.items) == 100
    assert rubric.time_budget_s <= 480
    by_area = {}
    for item in rubric.items:
        by_area[item.number.split(".")[0]] = by_area.get(item.number.split(".")[0], 0) + item.points
    # architecture, losses, training, accuracy: the shipped rubrics weigh the training loop so that each
    # calibrated mistake costs at least 3 points (tests/instructor/calibrate); the test rubric keeps the old split
    expected = {"1": 20, "2": 30, "3": 20, "4": 30} if path.name == "rendered.toml" else {"1": 20, "2": 27, "3": 28, "4": 25}
    assert by_area == expected
    assert [c.name for c in rubric.leaderboard] and rubric.leaderboard[0].field == "accuracy"


def test_shipped_late_policies():
    fall, winter = (load_rubric(path, validate_checks=False).late_policy for path in SHIPPED)
    assert (fall.amount, fall.unit, fall.per, fall.rounding, fall.zero_after_late_due) == (3, "points", "day", "ceil", True)
    assert (winter.amount, winter.unit, winter.per, winter.cap) == (1, "points", "day", 10)
