"""The eight steps of ``notegrade demo`` and the student mistakes it grades.

:class:`Context` holds the demo's paths; each step method does the work with the toolkit's own
library functions (the ones its commands call) and returns the one-line detail
:mod:`autograder.instructor.demo.run` prints.  What the demo expects and prints at the end is
:mod:`autograder.instructor.demo.summary`.
The mistakes are made by editing the reference text (:data:`MISTAKES`): a loud error, not a
silently correct "mistake", if the reference no longer contains the text edited.

Example
-------
>>> text = "def evaluate(model):\\n    model.eval()\\n    with torch.no_grad():\\n        return model(1)\\n"
>>> print(MISTAKES[2].edit(text), end="")
def evaluate(model):
    return model(1)
"""
from __future__ import annotations

import importlib.resources
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from autograder.atomic import private_dir
from autograder.errors import NotegradeError
from autograder.layout import HELDOUT_FILE, RESULTS_FILE

STUDENT_FILES = ("model.py", "losses.py", "train.py")
RENDER = {"seed": 0, "max_programs_per_family": 8, "notes_per_instrument": 16}  # ~1,300 notes, ~10-15 s
EPOCHS = 12  # ~40% held-out accuracy on this data (the demo rubric's full marks start at 30%)
SAMPLE_SIZE = 300  # training notes packed into the held-out file for the train-on-test detector
TITLE = "NSynth CNN demo"


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with its single ``old`` replaced by ``new``; an error if ``old`` is not there once."""
    if text.count(old) != 1:
        raise NotegradeError(f"the reference no longer contains {old.strip()!r} exactly once: update demo_steps.MISTAKES")
    return text.replace(old, new)


def unwrap_block(text: str, header: str) -> str:
    """Remove the line ``header`` (e.g. ``with torch.no_grad():``) and dedent its body by 4 spaces."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    if len(starts) != 1:
        raise NotegradeError(f"the reference no longer contains {header!r} exactly once: update demo_steps.MISTAKES")
    start = starts[0]
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        lines[end] = lines[end][4:] if lines[end].strip() else lines[end]
        end += 1
    return "".join(lines[:start] + lines[start + 1 :])


@dataclass(frozen=True)
class Mistake:
    """A realistic student mistake: an edit of one reference file, and the rubric item it costs."""

    name: str  # the submission's folder
    label: str  # for the score table
    item: str  # the rubric item that must lose points
    file: str
    edit: Callable[[str], str]
    drop_keys: tuple[str, ...] = ()  # state_dict entries their own model would not have


MISTAKES: tuple[Mistake, ...] = (
    Mistake("conv3_no_bias", "conv3 without bias", "1.1", "model.py",
            lambda t: replace_once(t, 'nn.Conv2d(32, 64, kernel_size=3, padding="same")',
                                   'nn.Conv2d(32, 64, kernel_size=3, padding="same", bias=False)'),
            drop_keys=("conv3.bias",)),
    Mistake("softmax_unstable", "softmax without max-subtraction", "2.4", "losses.py",
            lambda t: replace_once(t, "logits - logits.amax(dim=dim, keepdim=True).detach()", "logits")),
    Mistake("evaluate_no_eval", "evaluate without eval()/no_grad", "3.3", "train.py",
            lambda t: unwrap_block(replace_once(t, "    model.eval()\n", ""), "with torch.no_grad():")),
)
SUBMISSIONS = {"reference": "reference solution", "starter": "empty starter code",
               **{m.name: m.label for m in MISTAKES}}


def _reference_text(name: str) -> str:
    return importlib.resources.files("reference").joinpath(name).read_text(encoding="utf-8")


def summarize_results(results: dict) -> dict[str, Any]:
    """Score, total, accuracy and per-item ``{title, score, max_score, message}`` of a results.json."""
    items = {}
    for test in results.get("tests", []):
        if (test.get("extra_data") or {}).get("kind") != "item":
            continue
        lines = [line.strip() for line in str(test.get("output") or "").splitlines() if line.strip()]
        # The first failed sub-check ("✗ name: message") says what went wrong; else the first line.
        failed = [line.lstrip("✗ ") for line in lines if line.startswith("✗")]
        message = (failed or lines or [""])[0]
        items[str(test["number"])] = {"title": test.get("name", ""), "score": float(test.get("score") or 0.0),
                                      "max_score": float(test.get("max_score") or 0.0), "message": message[:160]}
    extra = results.get("extra_data") or {}
    return {"score": float(results.get("score") or 0.0), "total": float(extra.get("total_points") or 100.0),
            "heldout_accuracy": extra.get("heldout_accuracy"), "items": items}


@dataclass
class Context:
    """The demo's settings and output layout; one method per step."""

    out: Path
    jobs: int
    keep: bool
    progress: bool
    rubric: Path
    soundfont: str
    result: Any  # demo.DemoResult: paths and scores are recorded into it

    def path(self, key: str, relative: str) -> Path:
        self.result.paths[key] = self.out / relative
        return self.out / relative

    def render(self) -> str:
        from reference.render import main as render

        manifest = render(out=self.path("dataset", "data"), soundfonts=[self.soundfont], workers=self.jobs,
                          progress=self.progress, **RENDER)
        totals = manifest["totals"]
        return (f"{sum(totals.values()):,} notes from {len(manifest['instruments'])} instruments "
                f"(train {totals['train']}, valid {totals['valid']}, test {totals['test']})")

    def features(self) -> str:
        from reference.make_features import build_feature_file

        counts = {}
        for split in ("train", "valid"):
            built = build_feature_file(nsynth=self.out / "data" / f"nsynth-{split}", workers=self.jobs,
                                       out=self.path(f"{split}_features", f"features/{split}.safetensors"),
                                       progress=self.progress)
            counts[split] = built["notes"]
        return f"train {counts['train']} + valid {counts['valid']} notes -> features/"

    def train(self) -> str:
        import torch

        from reference.pipeline import TrainConfig
        from reference.pipeline import main as train

        threads = torch.get_num_threads()
        try:  # one thread: reproducible numbers, and no oversubscription on a shared 2-core machine
            run = train(train=self.out / "features/train.safetensors", valid=self.out / "features/valid.safetensors",
                        out=self.path("reference_run", "reference"),
                        config=TrainConfig(epochs=EPOCHS, patience=EPOCHS, seed=0, threads=1))
        finally:
            torch.set_num_threads(threads)
        metrics = run["metrics"]
        return (f"{metrics['epochs_run']} epochs on {metrics['device']}, "
                f"valid accuracy {metrics['valid_accuracy']:.1%} -> reference/model.pt")

    def build(self) -> str:
        from autograder.instructor.build.package import build_autograder
        from reference.evaluation import main as evaluate
        from reference.heldout import main as heldout

        # With a training sample and the reference's numbers, so the train-on-test detector runs.
        made = heldout(nsynth=self.out / "data/nsynth-test", out=self.path("heldout", HELDOUT_FILE),
                       workers=self.jobs, progress=self.progress, train_sample=self.out / "data/nsynth-train",
                       sample_size=SAMPLE_SIZE, reference_model=self.out / "reference/model.pt")
        metrics = evaluate(checkpoint=self.out / "reference/model.pt", features=self.out / HELDOUT_FILE,
                           out=self.path("reference_eval", "reference/heldout_eval"))
        rubric = self.path("rubric", "demo_rubric.toml")
        shutil.copyfile(self.rubric, rubric)
        archive = build_autograder(rubric=rubric, heldout=self.out / HELDOUT_FILE,
                                   out=self.path("autograder", "autograder.zip"), quiet=True)
        if not self.keep:  # ~170 MB of WAVs; the feature files and the held-out file hold what is needed
            for split in ("train", "valid", "test"):
                shutil.rmtree(self.out / "data" / f"nsynth-{split}", ignore_errors=True)
        return (f"{made['notes']} held-out notes + {made['train_sample']} training notes, reference accuracy "
                f"{metrics['accuracy']:.1%}; "
                f"autograder.zip {archive.size / 1e6:.1f} MB")

    def starter(self) -> str:
        from autograder.instructor.assign.template import generate_template

        made = generate_template(out=self.path("starter", "starter"), zip_path=self.path("starter_zip", "starter.zip"),
                                 rubric=self.out / "demo_rubric.toml")
        todos = sum((self.out / "starter" / name).read_text().count("raise NotImplementedError(") for name in STUDENT_FILES)
        return f"{len(made['files'])} files, {todos} TODOs -> starter/ and starter.zip"

    def _submission(self, name: str, files: dict[str, str], drop_keys: tuple[str, ...] = ()) -> None:
        import torch

        folder = self.out / "submissions" / name
        folder.mkdir(parents=True)
        for file, text in files.items():
            (folder / file).write_text(text, encoding="utf-8")
        state = torch.load(self.out / "reference/model.pt", weights_only=True)
        torch.save({k: v for k, v in state.items() if k not in drop_keys}, folder / "model.pt")

    def grade(self) -> str:
        from autograder.instructor.grading.batch import grade_batch

        reference = {name: _reference_text(name) for name in STUDENT_FILES}
        private_dir(self.path("submissions", "submissions"))  # a batch folder: graded at the uid level only if private
        self._submission("reference", reference)
        self._submission("starter", {n: (self.out / "starter" / n).read_text(encoding="utf-8") for n in STUDENT_FILES})
        for mistake in MISTAKES:
            edited = {**reference, mistake.file: mistake.edit(reference[mistake.file])}
            self._submission(mistake.name, edited, mistake.drop_keys)
        rows = grade_batch(submissions=self.out / "submissions", autograder=self.out / "autograder.zip",
                           out=self.path("graded", "graded"), jobs=self.jobs)
        for row in rows:
            if row["status"] != "graded":
                raise NotegradeError(f"grading {row['name']} failed: {row['status']} (see graded/{row['name']}/stdout.txt)")
            results = json.loads((self.out / "graded" / row["name"] / RESULTS_FILE).read_text())
            self.result.scores[row["name"]] = {"label": SUBMISSIONS[row["name"]], "seconds": row["seconds"],
                                               **summarize_results(results)}
        scores = [points(self.result.scores[name]["score"]) for name in SUBMISSIONS]
        return f"reference {scores[0]}, starter {scores[1]}, mistakes {' / '.join(scores[2:])} -> graded/"

    def regrade(self) -> str:
        import pandas as pd

        from autograder.instructor.demo.synthetic_class import DEFAULT_CLASS, DUE, LATE_DUE, make_export
        from autograder.instructor.regrade.run import regrade_export

        # Six submissions (three rounds of two graders): on time, late, extended, broken, a wrong
        # loss with a resubmission history, a late group; the no-model.pt variant is left out.
        students = [sub for sub in DEFAULT_CLASS if sub.variant != "no_checkpoint"]
        fixture = make_export(self.out / "class", submissions=students, checkpoint=self.out / "reference/model.pt",
                              as_zip=True)
        self.result.paths["class_export"] = fixture.path
        self.result.paths["extensions"] = fixture.extensions_csv
        summary = regrade_export(export=fixture.path, autograder=self.out / "autograder.zip",
                                 out=self.path("regrade", "regrade"), jobs=self.jobs, extensions=fixture.extensions_csv,
                                 due=DUE.isoformat(), late_due=LATE_DUE.isoformat(), title=TITLE,
                                 progress=self.progress, integrity=True)
        self.result.paths["integrity"] = summary.integrity.out
        self.result.integrity = [{k: row[k] for k in ("flags", "name_a", "name_b", "evidence")}
                                 for row in summary.integrity.flagged_pairs + summary.integrity.flagged_students]
        grades = pd.read_csv(summary.paths["grades"], dtype={"sid": str, "submission_id": str})
        keep = ["name", "sid", "submission_id", "created_at", "status", "lateness", "penalty", "heldout_accuracy", "total"]
        self.result.class_rows = json.loads(grades[keep].to_json(orient="records"))
        late = int((grades["penalty"].fillna(0) > 0).sum())
        return (f"{summary.graded + summary.reused} submissions, {len(grades)} students, {late} late-penalised, "
                f"{len(summary.changed)} score changes vs Gradescope, {len(self.result.integrity)} integrity flags "
                "-> regrade/")

    def report(self) -> str:
        from autograder.instructor.class_report.page import write_class_report

        page = write_class_report(grades=self.out / "regrade/grades.csv",
                                  out=self.path("class_report", "class_report.html"),
                                  reference_metrics=self.out / "reference/heldout_eval/metrics.json",
                                  title=f"{TITLE}: class report")
        text = page.read_text(encoding="utf-8")
        return f"{len(text) / 1024:.0f} KiB, {text.count('data:image/png;base64,')} embedded figures -> class_report.html"


def points(value: float | None) -> str:
    """``96.6667`` -> ``96.67``, ``100.0`` -> ``100``."""
    return "-" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")
