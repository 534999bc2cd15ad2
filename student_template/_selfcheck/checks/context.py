"""What a grading run hands to its checks besides the sandbox, the params and the time: :class:`CheckContext`.

Who supplies it: ``autograder.run_autograder._grade`` (Gradescope and ``notegrade grade``) and
``autograder.selfcheck.run.run_selfcheck`` (the student's self-check) each build one per run.
Who reads it: a check declares the fields it takes in its :class:`~autograder.checks.outcome.CheckSpec`
(``context_fields``), and ``autograder.items.grade_items`` passes exactly those fields, by name, as
keyword arguments of its ``run``; a check that declares none gets none.  So grep a field's name to
find every place that supplies or reads it.

This module imports only the standard library.

Example
-------
>>> context = CheckContext(heldout_path="/autograder/source/heldout.safetensors")
>>> context.for_check(("heldout_path", "accuracy_label"))
{'heldout_path': '/autograder/source/heldout.safetensors', 'accuracy_label': 'held-out accuracy'}
>>> context.for_check(())
{}
>>> unknown_fields(("heldout_path", "deadline"))
['deadline']
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from _selfcheck.checks.heldout_presentation import HeldoutRun


@dataclass(frozen=True)
class CheckContext:
    """One grading run's context for its checks (each field's default is what a check gets when the
    run has no value for it; the checks' keyword defaults are the same)."""

    # The held-out feature file, labels included (on Gradescope root-only in /autograder/source; in
    # the self-check the student's own validation features); None: no file (the held-out check refuses).
    heldout_path: "str | os.PathLike[str] | None" = None
    # What the held-out check's message and sub-check call the accuracy (the self-check says it is
    # the student's validation accuracy, not the held-out score).
    accuracy_label: str = "held-out accuracy"
    # How the held-out notes are presented: the autograder's secret, the submission's digest, the
    # perturbation and the public/private split; None: perturbed, no secret, no split.
    heldout_run: "HeldoutRun | None" = None
    # The rubric's [heldout] max_source_kb: the budget of the submitted files besides model.pt (0: none).
    max_source_kb: float = 0.0
    # The rubric's [checkpoint] table (buffer_budget, module_prefix; see autograder/checks/checkpoint.py);
    # None: its defaults.
    checkpoint_policy: "dict[str, Any] | None" = None

    def for_check(self, fields: "Iterable[str]") -> "dict[str, Any]":
        """The keyword arguments for a check that declares ``fields`` (names of this class's fields)."""
        fields = tuple(fields)
        unknown = unknown_fields(fields)
        if unknown:
            raise ValueError(f"not fields of CheckContext: {', '.join(unknown)}")
        return {name: getattr(self, name) for name in fields}


FIELDS = tuple(f.name for f in dataclasses.fields(CheckContext))


def unknown_fields(fields: "Iterable[str]") -> "list[str]":
    """The names in ``fields`` that :class:`CheckContext` does not have (empty: all known)."""
    return [name for name in fields if name not in FIELDS]
