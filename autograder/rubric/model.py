"""The rubric's data classes, kept apart from the TOML validation that builds them.

:class:`Rubric` and its parts (:class:`RubricItem`, :class:`LatePolicy`, :class:`LeaderboardColumn`,
:class:`ContainerSettings`) are what the grader, the late penalty, results.json and the docker
runner read; they need none of the validation machinery of ``autograder/rubric/tables.py``.
Import them from :mod:`autograder.rubric`, which re-exports them with :func:`~autograder.rubric.parse_rubric`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from autograder.assignment import ASSIGNMENT_FILES, DEFAULT_CHECKPOINT_POLICY

VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
# Gradescope kills the whole run at its timeout (10 min by default) and shows no tests at all,
# so the default budget leaves ~2 minutes for start-up, the report and results.json.
DEFAULT_TIME_BUDGET_S = 480.0
GRADESCOPE_MAX_TIMEOUT_S = 40 * 60
DEFAULT_ITEM_TIMEOUT_S = 60.0
CONTAINER_STARTUP_MARGIN_S = 120.0  # container start-up, the report and results.json, beyond the budget


@dataclass(frozen=True)
class RubricItem:
    """One gradebook line: ``points`` x the check's fraction (0..1) is the score."""

    number: str
    title: str
    points: float
    check: str
    params: dict[str, Any] = field(default_factory=dict)
    visibility: str = "visible"
    timeout_s: float = DEFAULT_ITEM_TIMEOUT_S
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LatePolicy:
    """How lateness turns into a deduction (see ``autograder/late.py``).

    ``amount`` points (``unit="points"``) or percent (``unit="percent"``, of the points earned or of
    the total, ``percent_of``) per started ``per`` (day | hour; ``rounding`` ceil | floor | none);
    no deduction within ``grace_minutes`` of the due date; the deduction never exceeds ``cap`` (same
    unit as ``amount``); after the late due date the score is 0 when ``zero_after_late_due``.
    """

    amount: float = 0.0
    unit: str = "points"
    per: str = "day"
    grace_minutes: float = 0.0
    rounding: str = "ceil"
    cap: float | None = None
    zero_after_late_due: bool = True
    percent_of: str = "earned"


@dataclass(frozen=True)
class LeaderboardColumn:
    """A leaderboard column filled from one item's check data (e.g. item 4.1's ``accuracy``)."""

    name: str
    item: str
    field: str
    order: str = "desc"


@dataclass(frozen=True)
class ContainerSettings:
    """What one grading container gets: memory (MB, no swap), CPUs, and a wall-clock limit (s).

    Gradescope's defaults are 768 MB and a 10-minute timeout; ``notegrade grade --docker`` applies
    these, and the instructor sets the same in Gradescope's autograder settings.  Without
    ``timeout_s`` it is the time budget + 120 s (start-up and reporting), at most 2400 s.
    """

    memory_mb: int = 768
    cpus: float = 1.0
    timeout_s: float = DEFAULT_TIME_BUDGET_S + CONTAINER_STARTUP_MARGIN_S

    @classmethod
    def default_for(cls, time_budget_s: float) -> "ContainerSettings":
        return cls(timeout_s=min(time_budget_s + CONTAINER_STARTUP_MARGIN_S, GRADESCOPE_MAX_TIMEOUT_S))


@dataclass(frozen=True)
class Perturbation:
    """The held-out perturbation: a per-note gain offset (uniform in +-``gain_db``) and Gaussian
    noise (``noise_db`` dB std per bin), drawn from the autograder's secret and the submission.

    The defaults keep the score's spread over submissions within issue 17's bounds (the same
    weights: std <= 0.3 points, largest swing <= 0.5 of ``fall2024_a2``'s points); 1 dB / 0.5 dB
    swung 0.60 points (``benchmarks/bench_heldout_spread.py``, docs/threat-model.md, "Held-out integrity")."""

    enabled: bool = True
    gain_db: float = 0.5
    noise_db: float = 0.25


@dataclass(frozen=True)
class RateLimit:
    """At most ``max_evaluations`` held-out evaluations per ``window_hours`` (0: no limit)."""

    max_evaluations: int = 0
    window_hours: float = 24.0


@dataclass(frozen=True)
class TrainOnTest:
    """The train-on-test detector's thresholds (instructor-only: never shown to students).

    A model is flagged when its held-out accuracy is at least ``min_accuracy`` and within
    ``same_margin`` of (or above) its accuracy on the file's training sample, or when its
    held-out/training accuracy ratio exceeds the reference's by ``ratio_margin`` while it is at
    least as accurate as the reference on the held-out notes.
    """

    enabled: bool = True
    min_accuracy: float = 0.5
    same_margin: float = 0.02
    ratio_margin: float = 0.15


@dataclass(frozen=True)
class LookupDetector:
    """The lookup detector's thresholds (instructor-only: never shown to students).

    A model is flagged when its accuracy on the public held-out notes exceeds what its accuracy on
    the private control split predicts (times the reference's public/control ratio) by more than
    ``margin``, at one-sided binomial confidence ``confidence``: a public-only gain, which is what a
    lookup of the public test labels buys (see ``autograder/heldout_guard/lookup.py``).
    """

    enabled: bool = True
    confidence: float = 0.99
    margin: float = 0.0


@dataclass(frozen=True)
class HeldoutSettings:
    """The rubric's ``[heldout]`` table: how the held-out item is presented, split, shown and limited."""

    perturbation: Perturbation = Perturbation()
    public_fraction: float = 0.0  # share of held-out notes in the public part (0: no split)
    details_visibility: str = "after_due_date"  # per-family accuracy and the confusion matrix
    max_source_kb: float = 64.0  # the submission's files besides model.pt (0: no budget)
    # The hidden "Integrity (instructors only)" line: "always", only when something was "flagged",
    # or "never".  Gradescope hides the total from students while a hidden line exists, so
    # "flagged" would tell a flagged student so; "always" hides every total and tells nobody.
    integrity_line: str = "always"
    rate_limit: RateLimit = RateLimit()
    train_on_test: TrainOnTest = TrainOnTest()
    # Share of the held-out item's accuracy taken from the private control split (``notegrade heldout
    # --control``): 0 scores the public notes only, 1 the control notes only, between a weighted mix.
    control_weight: float = 0.0
    lookup: LookupDetector = LookupDetector()


@dataclass(frozen=True)
class Rubric:
    """A validated rubric; ``rubric_hash`` identifies its content (not its formatting)."""

    title: str
    total_points: float
    items: tuple[RubricItem, ...]
    late_policy: LatePolicy = LatePolicy()
    leaderboard: tuple[LeaderboardColumn, ...] = ()
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    sandbox: dict[str, Any] = field(default_factory=dict)
    container: ContainerSettings = ContainerSettings()
    # [checkpoint]: model.pt's buffer budget and module. prefix policy (autograder/checks/checkpoint.py)
    checkpoint: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CHECKPOINT_POLICY))
    # [submission] files: the upload's files the grader copies next to student code (autograder/upload.py)
    submission_files: tuple[str, ...] = ASSIGNMENT_FILES
    cluster: dict[str, Any] = field(default_factory=dict)  # [cluster]: where --slurm jobs go; not part of grading
    visibility: str = "visible"
    stdout_visibility: str = "hidden"
    source: str = "<string>"
    heldout: HeldoutSettings = HeldoutSettings()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), without the source path."""
        data = asdict(self)
        data.pop("source")
        if self.container == ContainerSettings.default_for(self.time_budget_s):
            data.pop("container")  # so rubrics without [container] keep the hash they had before it existed
        # The same for the tables added later, at their defaults.
        if self.checkpoint == DEFAULT_CHECKPOINT_POLICY:
            data.pop("checkpoint")
        if tuple(self.submission_files) == ASSIGNMENT_FILES:
            data.pop("submission_files")
        data.pop("cluster")  # where the grading runs (a Slurm account, a partition) does not change a grade
        if self.heldout == HeldoutSettings():
            data.pop("heldout")  # so rubrics without [heldout] keep their hash too
        else:  # ... and rubrics with one keep theirs while the later keys are at their defaults
            for key, default in (("control_weight", 0.0), ("lookup", asdict(LookupDetector()))):
                if data["heldout"].get(key) == default:
                    data["heldout"].pop(key)
        return data

    @property
    def rubric_hash(self) -> str:
        """sha256 of the canonical JSON of the content: comments and key order don't change it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def item(self, number: str) -> RubricItem:
        for item in self.items:
            if item.number == number:
                return item
        raise KeyError(number)
