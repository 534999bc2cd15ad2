"""One grading run's held-out guard: what ``run_autograder`` asks of this package, in one object.

``run_autograder`` (the Gradescope entry point) calls, in order::

    session = Session.prepare(rubric=rubric, source=source, submission=submission, metadata=metadata)
    CheckContext(heldout_run=session.run, ...)  # secret + submission digest + perturbation + split
    registry = session.registry(REGISTRY)       # over the rate limit: the held-out item keeps a result
    sandbox = session.watch(sandbox)            # collects the worker's audit records
    build_results(..., guard=session)           # -> session.apply(data, graded) adds the lines

Example
-------
>>> import tempfile, pathlib
>>> from autograder.rubric import Rubric, RubricItem
>>> rubric = Rubric(title="t", total_points=1.0, items=(RubricItem("4.1", "acc", 1.0, "heldout_accuracy"),))
>>> session = Session.prepare(rubric=rubric, source=pathlib.Path(tempfile.mkdtemp()),
...                           submission=pathlib.Path(tempfile.mkdtemp()), metadata=None)
>>> session.run.has_secret, session.rate.evaluate
(False, True)
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

from autograder.checks.heldout_presentation import NO_SECRET, HeldoutRun, submission_digest
from autograder.heldout_guard import rate_limit
from autograder.heldout_guard import tampering
from autograder.heldout_guard.secret import read_secret
from autograder.layout import HELDOUT_FILE, SECRET_FILE

HELDOUT_CHECK = "heldout_accuracy"


@dataclass
class Session:
    """Everything one run needs to guard the held-out item, and what it found."""

    rubric: Any
    run: HeldoutRun  # the run's held-out presentation: the grader's CheckContext.heldout_run
    rate: rate_limit.RateDecision
    static_findings: "list[dict]" = field(default_factory=list)
    worker_records: "list[dict]" = field(default_factory=list)
    reference: "dict | None" = None
    created_at: "str | None" = None
    notes: "list[str]" = field(default_factory=list)

    @classmethod
    def prepare(cls, *, rubric: Any, source: pathlib.Path, submission: pathlib.Path, metadata: "dict | None") -> "Session":
        """Read the secret, digest the graded files, decide the rate limit, scan the sources."""
        settings = rubric.heldout
        secret = read_secret(pathlib.Path(source) / SECRET_FILE)
        notes = [] if secret else [f"no {SECRET_FILE} in the autograder: the held-out order and perturbation are "
                                   "predictable (rebuild it with `notegrade build`)"]
        run = HeldoutRun(secret=secret or NO_SECRET, submission_digest=submission_digest(submission),
                         perturb=settings.perturbation.enabled, gain_db=settings.perturbation.gain_db,
                         noise_db=settings.perturbation.noise_db, public_fraction=settings.public_fraction,
                         control_weight=settings.control_weight, keep_predictions=True)
        item = next((i.number for i in rubric.items if i.check == HELDOUT_CHECK), "")
        rate = rate_limit.assess(metadata, settings.rate_limit, item=item)
        sources = {}
        for path in sorted(pathlib.Path(submission).glob("*.py")):
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= 1 << 20:
                sources[path.name] = path.read_text(encoding="utf-8", errors="replace")
        created = metadata.get("created_at") if isinstance(metadata, dict) else None
        return cls(rubric=rubric, run=run, rate=rate, static_findings=tampering.scan_sources(sources),
                   reference=_reference_numbers(pathlib.Path(source) / HELDOUT_FILE),
                   created_at=created if isinstance(created, str) else None, notes=notes + list(rate.notes))

    def registry(self, base: dict) -> dict:
        """``base``, with the held-out check replaced by the kept result when over the rate limit."""
        if self.rate.evaluate or HELDOUT_CHECK not in base:
            return base
        spec = base[HELDOUT_CHECK]
        return {**base, HELDOUT_CHECK: dataclasses.replace(spec, run=self._kept_result, context_fields=())}

    def _kept_result(self, sandbox: Any, params: dict, *, timeout_s: float) -> Any:
        from autograder.checks.outcome import ItemOutcome, SubCheck

        carried = self.rate.carried
        fraction = float(carried.get("fraction", 0.0)) if carried else 0.0
        accuracy = carried.get("accuracy_rounded") if carried else None
        label = "held-out accuracy (kept from an earlier submission)" if carried else "held-out accuracy (not evaluated)"
        shown = f"{accuracy:.1%}: " if isinstance(accuracy, (int, float)) else ""
        sub = SubCheck(label, fraction >= 1.0, 1.0, f"{shown}{fraction:.1%} of the points")
        return ItemOutcome(fraction=fraction, subchecks=[sub], message=self.rate.message,
                           data={"rate_limited": True, "carried": carried})

    def watch(self, sandbox: Any) -> Any:
        """``sandbox``, with the worker's audit records taken out of every answer into this session."""
        return _WatchedSandbox(sandbox, self.worker_records)

    def apply(self, data: dict, graded: list) -> None:
        """Add the held-out lines and ``extra_data["integrity"]`` to a results.json being built."""
        from autograder.heldout_guard.results_lines import apply

        apply(data, session=self, graded=graded)


def _reference_numbers(heldout: pathlib.Path) -> "dict | None":
    """The reference's accuracies recorded in the held-out file by ``notegrade heldout --reference-model``."""
    try:
        from autograder.featurefile import read_feature_file

        raw = read_feature_file(heldout).metadata.get("reference")
        value = json.loads(raw) if raw else None
    except Exception:  # the held-out check reports a damaged file; the detector then runs without it
        return None
    return value if isinstance(value, dict) else None


class _WatchedSandbox:
    """Forwards everything to the sandbox; strips ``_integrity`` records from each answer first."""

    def __init__(self, sandbox: Any, records: "list[dict]") -> None:
        self._sandbox, self._records = sandbox, records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sandbox, name)

    def _strip(self, result: Any) -> Any:
        for part in (getattr(result, "value", None), getattr(result, "error", None)):
            if isinstance(part, dict) and "_integrity" in part:
                found = part.pop("_integrity")
                if isinstance(found, list):
                    self._records.extend(r for r in found[:50] if isinstance(r, dict))
        return result

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return self._strip(self._sandbox.call(*args, **kwargs))

    def import_module(self, *args: Any, **kwargs: Any) -> Any:
        return self._strip(self._sandbox.import_module(*args, **kwargs))
