"""Running rubric items: the per-item loop shared by ``run_autograder`` and the student self-check.

Each item's check runs in the sandbox within min(item timeout, what is left of the global budget),
and the sandbox itself refuses to wait past the budget's end inside an item (a worker restart
included); an item that can't start in time is "not run: time budget exhausted", with its points
withheld and said so.  A check that raises is the grader's bug, not the student's: the item is withheld with a
message saying so and the traceback goes to ``log`` (stdout, which Gradescope shows to instructors
only); the other items still run.  The self-check passes ``abort_on_misconfiguration=True`` instead,
so that a :class:`~autograder.errors.NotegradeError` (e.g. the worker's Python cannot import torch)
stops it with that one message rather than eleven identical item failures.

Only the standard library is imported at module level: ``run_autograder`` imports this before its
SIGTERM handler is installed, and the self-check ships this file to students.

Example
-------
>>> from types import SimpleNamespace
>>> from autograder.checks.context import CheckContext
>>> from autograder.checks.outcome import CheckSpec, ItemOutcome, SubCheck
>>> def passes(sandbox, params, *, timeout_s):
...     return ItemOutcome.from_subchecks([SubCheck("conv1 parameters", True, message="160, as expected")])
>>> item = SimpleNamespace(number="1.1", title="Counts", points=10.0, check="ok", params={}, timeout_s=60.0)
>>> graded = grade_items(rubric=SimpleNamespace(items=[item]), sandbox=None, context=CheckContext(), graded=[],
...                      registry={"ok": CheckSpec("ok", (), {}, passes)}, deadline=time.monotonic() + 60,
...                      log=lambda line: None)
>>> graded[0].score, item_output(graded[0])
(10.0, '✓ conv1 parameters: 160, as expected')
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from autograder.errors import NotegradeError

if TYPE_CHECKING:  # not imported at run time: the checks package loads numpy and every check
    from autograder.checks.context import CheckContext

NOT_RUN_BUDGET = "not run: time budget exhausted"
# An item needs at least this long to be worth starting (a worker start alone takes ~1-3 s).
MIN_ITEM_SECONDS = 2.0
SCORE_DIGITS = 4  # 10 * (2/3) must not print as 6.666666666666667 in gradebooks


@dataclass
class GradedItem:
    """One rubric item with its check's outcome and how long the check took.

    ``item`` is a :class:`autograder.rubric.RubricItem` (or anything with its ``number``, ``title``,
    ``points``, ``check``, ``params`` and ``timeout_s``); ``outcome`` an ``ItemOutcome``.
    """

    item: Any
    outcome: Any
    duration_s: float = 0.0

    @property
    def score(self) -> float:
        return round(self.item.points * self.outcome.fraction, SCORE_DIGITS)


def item_output(graded: GradedItem) -> str:
    """The per-test text a student reads: the item-level message, then one line per sub-check."""
    outcome = graded.outcome
    lines = [outcome.message] if outcome.message else []
    for sub in outcome.subchecks:
        mark = "✓" if sub.passed else "✗"
        if sub.message.startswith(sub.name):  # "softmax at |logits| up to 1e4 returned ...": named once
            lines.append(f"{mark} {sub.message}")
        else:
            lines.append(f"{mark} {sub.name}" + (f": {sub.message}" if sub.message else ""))
    return "\n".join(lines)


def not_run_outcome(reason: str = NOT_RUN_BUDGET) -> Any:
    """An item that never ran: no credit, with the reason shown (never a silent zero)."""
    from autograder.checks.outcome import ItemOutcome

    return ItemOutcome.failed("not_run", reason)


def _print_flush(line: str) -> None:
    print(line, flush=True)


def _call_check(spec: Any, sandbox: Any, params: dict, *, timeout_s: float, context: CheckContext) -> Any:
    """``spec.run(sandbox, params, timeout_s=...)`` plus the fields of ``context`` (a
    :class:`~autograder.checks.context.CheckContext`) that ``spec.context_fields`` declares."""
    from autograder.checks.outcome import ItemOutcome

    outcome = spec.run(sandbox, params, timeout_s=timeout_s, **context.for_check(spec.context_fields))
    if not isinstance(outcome, ItemOutcome):
        raise TypeError(f"check {spec.name!r} returned {type(outcome).__name__}, not ItemOutcome")
    return outcome


def grade_items(*, rubric: Any, sandbox: Any, registry: dict, context: CheckContext, deadline: float,
                graded: list, progress: Any = None, log: "Callable[[str], None] | None" = None,
                abort_on_misconfiguration: bool = False) -> list:
    """Run every item of ``rubric.items`` in order, appending to ``graded`` as each finishes (so a crash keeps them).

    ``deadline`` is a ``time.monotonic()`` value: the end of the global budget.  ``context`` is the
    run's :class:`~autograder.checks.context.CheckContext`: each check gets the fields its
    ``CheckSpec.context_fields`` declares (e.g. ``heldout_path``), as keyword arguments.  ``log`` gets one
    line per item and the traceback of any check that raised (default: print to stdout).
    """
    log = log or _print_flush
    _tell_sandbox(sandbox, "set_deadline", deadline)
    for item in rubric.items:
        remaining = deadline - time.monotonic()
        if remaining < MIN_ITEM_SECONDS:
            graded.append(GradedItem(item, not_run_outcome()))
        else:
            graded.append(_grade_one(item, sandbox=sandbox, registry=registry, context=context, log=log,
                                     timeout_s=min(item.timeout_s, remaining), abort=abort_on_misconfiguration))
        if progress is not None:
            progress.update(1)
    return graded


def _grade_one(item: Any, *, sandbox: Any, registry: dict, context: CheckContext, timeout_s: float,
               log: Callable[[str], None], abort: bool) -> GradedItem:
    spec = registry[item.check]
    params = {**{k: v for k, v in spec.params.items() if v is not None}, **item.params}
    _tell_sandbox(sandbox, "set_item", item.number)
    started = time.monotonic()
    try:
        outcome = _call_check(spec, sandbox, params, timeout_s=timeout_s, context=context)
    except Exception as err:
        if abort and isinstance(err, NotegradeError):
            raise
        outcome = _internal_error(item, err, log)
    elapsed = time.monotonic() - started
    log(f"[notegrade] item {item.number} ({item.check}): {outcome.status}, {outcome.fraction:.3f} in {elapsed:.1f} s "
        f"(limit {timeout_s:.0f} s)")
    return GradedItem(item, outcome, elapsed)


def _tell_sandbox(sandbox: Any, method: str, value: Any) -> None:
    """The global deadline (enforced inside items too) and the current item (for "not run" messages),
    for a sandbox that takes them (test doubles need not)."""
    setter = getattr(sandbox, method, None)
    if callable(setter):
        setter(value)


def _internal_error(item: Any, err: Exception, log: Callable[[str], None]) -> Any:
    """The item's outcome when its check raised ``err`` (called from inside the ``except``)."""
    from autograder.checks.outcome import ItemOutcome

    log(f"[notegrade] internal error in check {item.check!r} for item {item.number}:\n{traceback.format_exc()}")
    why = f"the autograder is misconfigured ({err})" if isinstance(err, NotegradeError) \
        else f"the autograder's {item.check!r} check failed internally"
    return ItemOutcome.failed("error", f"not graded: {why}; this is not a problem with your code, and "
                                       "your instructor has the details")
