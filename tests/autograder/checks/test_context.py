"""CheckContext: each check's declared context fields are exactly the keyword arguments its run takes.

The per-item loop passes ``CheckSpec.context_fields`` by name (no signature sniffing), so a
declaration that drifted from the function would either raise (an unknown keyword: withheld as the
grader's bug) or silently fall back to the function's default.  These tests read the signatures
once, here, to keep the declarations honest.
"""
from __future__ import annotations

import dataclasses
import inspect
import pathlib

import pytest

from autograder.checks import REGISTRY
from autograder.checks.context import FIELDS, CheckContext

DEFAULTS = CheckContext()


def _context_parameters(run) -> "dict[str, object]":
    """The keyword-only parameters of a check's ``run`` besides ``timeout_s``, with their defaults."""
    parameters = inspect.signature(run).parameters  # follows functools.wraps (tolerate_malformed_answers)
    return {name: p.default for name, p in parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "timeout_s"}


def _assert_declared(spec) -> None:
    taken = _context_parameters(spec.run)
    assert set(taken) == set(spec.context_fields), spec.name
    for name, default in taken.items():  # a field the run has no value for: the same as not passing it
        assert default == getattr(DEFAULTS, name), (spec.name, name)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_checks_declare_the_context_their_run_takes(name):
    _assert_declared(REGISTRY[name])


def test_the_held_out_check_takes_every_field_and_the_others_none():
    assert set(REGISTRY["heldout_accuracy"].context_fields) == set(FIELDS)
    assert all(not spec.context_fields for name, spec in REGISTRY.items() if name != "heldout_accuracy")


def test_the_replacements_of_the_held_out_check_declare_their_context_too(tmp_path):
    """The self-check without --features and the rate limit's kept result swap the held-out check's run."""
    from autograder.heldout_guard.session import Session
    from autograder.rubric import Rubric, RubricItem
    from autograder.rubric.model import RateLimit
    from autograder.selfcheck.run import CHECKPOINT_ONLY_CONTEXT, _checkpoint_only

    _assert_declared(dataclasses.replace(REGISTRY["heldout_accuracy"], run=_checkpoint_only,
                                         context_fields=CHECKPOINT_ONLY_CONTEXT))
    rubric = Rubric(title="t", total_points=1.0, items=(RubricItem("4.1", "acc", 1.0, "heldout_accuracy"),))
    rubric = dataclasses.replace(rubric, heldout=dataclasses.replace(rubric.heldout,
                                                                     rate_limit=RateLimit(max_evaluations=1)))
    previous = [{"submission_time": "2024-10-05T01:00:00+00:00", "score": 1.0, "autograder_error": False}]
    session = Session.prepare(rubric=rubric, source=tmp_path, submission=tmp_path,
                              metadata={"created_at": "2024-10-05T02:00:00+00:00", "previous_submissions": previous})
    assert not session.rate.evaluate
    kept = session.registry(REGISTRY)["heldout_accuracy"]
    assert kept.run is not REGISTRY["heldout_accuracy"].run
    _assert_declared(kept)


def test_every_field_has_a_one_line_meaning_in_the_class():
    source = inspect.getsource(CheckContext)
    for name in FIELDS:
        before = source.split(f"    {name}:")[0].rstrip().splitlines()[-1].strip()
        assert before.startswith("#"), f"CheckContext.{name} has no comment saying what it is"


def test_context_for_check_refuses_unknown_fields():
    with pytest.raises(ValueError, match="not fields of CheckContext: deadline"):
        CheckContext().for_check(("heldout_path", "deadline"))
    assert CheckContext(heldout_path=pathlib.Path("h")).for_check(("heldout_path",)) == {"heldout_path": pathlib.Path("h")}
