"""Helpers every check shares: time budgets, phase timings, prerequisites, failure messages, array checks.

TRUSTED side (grader; also vendored into the student template for the self-check), so it
imports only numpy, torch and the standard library.

Example
-------
>>> budget = Budget(5.0)
>>> 0 < budget.left() <= 5.0
True
>>> close(np.array(1.0), np.array(1.0 + 1e-9), rtol=1e-6, atol=0.0)
True
>>> phases = Phases(); phases.mark("setup"); list(phases), phases["setup"] >= 0
(['setup'], True)
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable

import numpy as np

from _selfcheck.checks.outcome import ItemOutcome, SubCheck


class Budget:
    """The wall-clock time an item has left (``timeout_s`` from the runner).

    Time the sandbox spends starting a worker (``sandbox.startup_seconds``) is credited back:
    the grader's own start-up (python + torch imports) is not the student's time.
    """

    def __init__(self, timeout_s: float, sandbox: Any = None) -> None:
        self.timeout_s, self.sandbox = float(timeout_s), sandbox
        self.deadline = time.monotonic() + self.timeout_s
        self._startup_at_start = self._startup()

    def _startup(self) -> float:
        return float(getattr(self.sandbox, "startup_seconds", 0.0))

    def left(self) -> float:
        return max(0.0, self.deadline + self._startup() - self._startup_at_start - time.monotonic())


class Phases(dict):
    """Wall seconds of named phases, each from the end of the one before (or from ``start``, a
    ``time.monotonic()`` value): the grader's ``extra_data["timings"]``, the held-out item's and the
    class analysis's.  A plain dict of rounded seconds, so it goes into JSON as it is."""

    def __init__(self, start: "float | None" = None) -> None:
        super().__init__()
        self._last = time.monotonic() if start is None else start

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self[name] = round(now - self._last, 3)
        self._last = now


def failure_message(result: Any, doing: str) -> str:
    """One sentence for a probe that did not return normally (error, timeout, crash)."""
    if result.status == "timeout":
        message = result.message or ""
        if " did not return within " in message:  # the sandbox knows which function
            return f"{doing}: {message}: an infinite loop, or far too slow?"
        if message and not message.startswith("did not finish"):  # e.g. the worker stopped taking requests
            return f"{doing}: {message}"
        return f"{doing} did not finish within {result.seconds:.0f} s: an infinite loop, or far too slow?"
    if result.status == "crash":
        where = (result.error or {}).get("where")
        return f"{doing} ended the worker process: {result.message}" + (f" (at {where})" if where else "")
    error = result.error or {}
    message = str(error.get("message") or "failed")
    where = str(error.get("where") or "")
    return message + (f" (at {where})" if where and where not in message else "")


def outcome_for_failure(result: Any, doing: str, **kwargs: Any) -> ItemOutcome:
    if (result.error or {}).get("kind") == "not_run":  # the sandbox did not run it (see sandbox/failfast.py)
        return ItemOutcome.failed("not_run", str(result.error.get("message")), **kwargs)
    status = "timeout" if result.status == "timeout" else "error"
    return ItemOutcome.failed(status, failure_message(result, doing), **kwargs)


def prerequisites(sandbox: Any, budget: Budget, *, files: "tuple[str, ...]",
                  modules: "tuple[str, ...]" = ()) -> "ItemOutcome | None":
    """An outcome explaining why the item cannot run (missing/refused file, failed import), or None."""
    for name in files:
        problem = sandbox.file_problem(name)
        if problem:
            return ItemOutcome.failed("error", problem)
    for module in modules:
        result = sandbox.import_module(module, timeout_s=budget.left())
        if not result.ok:
            return outcome_for_failure(result, f"importing {module}.py")
    return None


def call(sandbox: Any, budget: Budget, probe: str, args: dict, inputs: "dict | None" = None) -> Any:
    return sandbox.call(probe, args, timeout_s=budget.left(), inputs=inputs)


def close(got: Any, expected: Any, *, rtol: float, atol: float) -> bool:
    """Same shape (a size-1 result may stand for a scalar) and allclose, NaN never equal."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        if not (got.size == 1 and expected.size == 1):
            return False
        got, expected = got.reshape(()), expected.reshape(())
    return bool(np.all(np.isfinite(got) == np.isfinite(expected))) and bool(
        np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=False))


def describe(value: Any, digits: int = 6) -> str:
    """A short rendering of a number or array for messages."""
    array = np.asarray(value, dtype=np.float64)
    if array.size == 1:
        return f"{float(array.reshape(())):.{digits}g}"
    flat = ", ".join(f"{v:.4g}" for v in array.reshape(-1)[:4])
    return f"shape {tuple(array.shape)} [{flat}{', ...' if array.size > 4 else ''}]"


def pass_or_fail(name: str, ok: bool, ok_message: str, fail_message: str, weight: float = 1.0) -> SubCheck:
    return SubCheck(name, bool(ok), weight, ok_message if ok else fail_message)


def int_list(shape: Any) -> "tuple[int, ...] | None":
    try:
        return tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        return None


def fmt_shape(shape: Any) -> str:
    values = int_list(shape)
    return "(" + ", ".join(str(v) for v in values) + ("," if values and len(values) == 1 else "") + ")" \
        if values is not None else str(shape)


def tolerate_malformed_answers(run: Callable[..., ItemOutcome]) -> Callable[..., ItemOutcome]:
    """A check never raises because of what the worker sent back.

    The harness always answers in the documented shapes; other shapes mean student code wrote
    to the grader's pipes or replaced harness functions, which fails the item (not the grader).
    """
    @functools.wraps(run)
    def checked(*args: Any, **kwargs: Any) -> ItemOutcome:
        try:
            return run(*args, **kwargs)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as err:
            return ItemOutcome.failed("error", f"the worker's answer could not be used ({type(err).__name__}: "
                                      f"{str(err)[:200]}): does your code write to file descriptors it did not "
                                      "open, or replace functions of torch or of the grader?")

    return checked
