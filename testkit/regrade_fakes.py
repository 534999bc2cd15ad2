"""Stand-ins for regrade's tests: a fake grader for the export factory's variants and an in-process Slurm array."""
from __future__ import annotations

import pathlib

from autograder.checks.outcome import ItemOutcome, SubCheck
from autograder.instructor.slurm import array
from autograder.results import GradedItem, build_results
from autograder.rubric import LatePolicy, Rubric, RubricItem
from autograder.late import read_metadata
from testkit.export_factory import DUE, LATE_DUE

RUBRIC = Rubric(
    title="Assignment 2",
    total_points=100.0,
    items=(RubricItem("1.1", "Architecture", 20.0, "architecture"), RubricItem("2.1", "Losses", 30.0, "losses"),
           RubricItem("3.1", "Training", 20.0, "training"), RubricItem("4.1", "Held-out accuracy", 30.0, "heldout")),
    late_policy=LatePolicy(amount=3.0),
)
CONFUSION = [[5 if i == j else (1 if j == (i + 1) % 11 else 0) for j in range(11)] for i in range(11)]

OPTIONS = dict(due=DUE.isoformat(), late_due=LATE_DUE.isoformat(), title="Assignment 2", progress=False)


def fake_grader(*, submission: pathlib.Path, autograder: pathlib.Path, metadata: pathlib.Path, out: pathlib.Path) -> dict:
    """Results for the factory's variants, built like the real grader builds them."""
    assert (autograder / "rubric.toml").is_file()
    if (submission / "CRASH_THE_GRADER").exists():
        raise RuntimeError("grader process died (simulated)")
    try:
        compile((submission / "model.py").read_text(), "model.py", "exec")
        broken = False
    except SyntaxError:
        broken = True
    wrong_loss = "(log_sum_exp - picked).sum()" in (submission / "losses.py").read_text()  # the factory's edit
    has_checkpoint = (submission / "model.pt").is_file()
    outcomes = []
    for item in RUBRIC.items:
        if broken:
            outcomes.append(ItemOutcome.failed("error", "model.py: SyntaxError"))
        elif item.number == "2.1" and wrong_loss:
            outcomes.append(ItemOutcome.from_subchecks([SubCheck("mse", True), SubCheck("cross_entropy", False)]))
        elif item.number == "4.1":
            outcomes.append(ItemOutcome(1.0, data={"accuracy": 0.8, "confusion": CONFUSION, "count": 66})
                            if has_checkpoint else ItemOutcome.failed("error", "no model.pt"))
        else:
            outcomes.append(ItemOutcome(1.0))
    data, note = read_metadata(metadata)
    graded = [GradedItem(item, outcome) for item, outcome in zip(RUBRIC.items, outcomes)]
    return build_results(rubric=RUBRIC, graded=graded, metadata=data, metadata_note=note).to_gradescope_dict()


EXPECTED_TOTALS = {"Ada Lovelace": 100.0, "Ben Franklin": 94.0, "Cleo Patra": 100.0, "Dev Null": 0.0,
                   "Eve Adams": 85.0, "Finn Mertens": 70.0, "Gus Grissom": 97.0, "Hana Abe": 97.0}


# ------------------------------------------------------------- the regrade around an array
class InProcessSlurm:
    """Stands in for ``array.submit``/``array.collect``: runs each shard here, except that task
    ``fail`` grades only its first submission and then "is cancelled"."""

    def __init__(self, fail: int | None = None) -> None:
        self.fail, self.runs, self.shards = fail, {}, []

    def submit(self, fn, shards, *, options, folder, job_name, default_minutes, meta=None):
        job_id = str(100 + len(self.runs))
        folder.mkdir(parents=True, exist_ok=True)
        run = array.ArrayRun(job_id=job_id, folder=folder, tasks=[f"{job_id}_{i}" for i in range(len(shards))],
                             minutes=default_minutes, meta=meta or {})
        run.save()
        self.shards.append([len(s) for s in shards])
        outcomes = []
        for index, shard in enumerate(shards):
            if index == self.fail:
                fn(shard[:1])
                outcomes.append(array.TaskOutcome(index=index, job_id=run.tasks[index], ok=False, reason="cancelled"))
            else:
                outcomes.append(array.TaskOutcome(index=index, job_id=run.tasks[index], ok=True, value=fn(shard)))
        self.runs[job_id] = outcomes
        self.fail = None
        return run

    def collect(self, folder, job_id, *, progress=True, resume_hint="", announcement=""):
        run = array.ArrayRun.load(folder, job_id)
        run.collected = True
        run.save()
        return run, self.runs[job_id]
