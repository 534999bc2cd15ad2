"""What a check reports: the shared vocabulary of checks, the runner, reports and the self-check.

A check runs one rubric item and returns an :class:`ItemOutcome`.  Its ``fraction`` (0..1)
times the item's points is the score; ``subchecks`` carry the per-sub-check verdicts and the
messages a student reads ("conv3 has 18,432 parameters, expected 18,496: is the bias missing?").

Example
-------
>>> outcome = ItemOutcome.from_subchecks([
...     SubCheck("conv1 parameters", True),
...     SubCheck("conv3 parameters", False, message="conv3 has 18,432 parameters, expected 18,496"),
... ])
>>> outcome.fraction, outcome.status
(0.5, 'ran')
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

# ran: the check ran to the end (whatever its verdicts); error: student code crashed/was unusable;
# timeout: the item's wall-clock limit was hit; not_run: skipped (time budget exhausted, missing prerequisite).
STATUSES = ("ran", "error", "timeout", "not_run")


@dataclass
class SubCheck:
    """One verdict inside an item; ``weight`` is relative to the item's other sub-checks."""

    name: str
    passed: bool
    weight: float = 1.0
    message: str = ""


@dataclass
class ItemOutcome:
    """The result of running one rubric item's check."""

    fraction: float
    subchecks: list[SubCheck] = field(default_factory=list)
    status: str = "ran"
    message: str = ""  # item-level explanation (crash, timeout, not run, ...)
    data: dict[str, Any] = field(default_factory=dict)  # e.g. accuracy, per_family, confusion

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; expected one of {STATUSES}")
        # Never negative, never above full marks, whatever a check computed.
        self.fraction = min(1.0, max(0.0, float(self.fraction)))

    @classmethod
    def from_subchecks(cls, subchecks: list[SubCheck], **kwargs: Any) -> "ItemOutcome":
        """Score = weighted share of passed sub-checks (partial credit per sub-check)."""
        total = sum(s.weight for s in subchecks)
        earned = sum(s.weight for s in subchecks if s.passed)
        return cls(fraction=(earned / total) if total else 0.0, subchecks=subchecks, **kwargs)

    @classmethod
    def failed(cls, status: str, message: str, **kwargs: Any) -> "ItemOutcome":
        """No credit, with the reason (a crash, a timeout, a missing prerequisite, ...)."""
        return cls(fraction=0.0, status=status, message=message, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckSpec:
    """A named check a rubric item can run.

    ``needs``: submission files it depends on (e.g. ``("model.py",)``), so a missing file fails
    only the items that need it.  ``params``: parameter name -> default value (the type of the
    default is the expected type; ``None`` means required).  ``run(sandbox, params, *, timeout_s)``
    returns an :class:`ItemOutcome`.  ``context_fields``: the fields of the run's
    :class:`~autograder.checks.context.CheckContext` that ``run`` takes as keyword arguments (the
    per-item loop passes exactly these; e.g. ``("heldout_path",)``).
    """

    name: str
    needs: tuple[str, ...]
    params: dict[str, Any]
    run: Callable[..., ItemOutcome]
    description: str = ""
    context_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from autograder.checks.context import unknown_fields

        unknown = unknown_fields(self.context_fields)
        if isinstance(self.context_fields, str) or unknown:
            raise ValueError(f"check {self.name!r}: context_fields must be a tuple of CheckContext fields, "
                             f"got {self.context_fields!r}")
