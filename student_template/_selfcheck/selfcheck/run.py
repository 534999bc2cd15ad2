"""The self-check's run: stage what Gradescope would grade, then run the visible items on it in the sandbox.

:func:`run_selfcheck` copies exactly what an upload sends (:func:`stage_upload`), swaps the
held-out file for the student's own validation features (:func:`features_for_check`) or, without
them, runs only the checkpoint part of the held-out item (:func:`_checkpoint_only`), and goes
through the same per-item loop as ``run_autograder`` (:func:`autograder.items.grade_items`) in the
same worker sandbox, as the user who runs it: at the ``rootless`` level (bubblewrap) where that works,
else unisolated (the report's ``isolation`` and the ``--verbose`` log say which).  It returns the report as plain data;
:mod:`autograder.selfcheck.command` is the entry point that reads the options and prints it.

Example
-------
>>> from _selfcheck.checks.outcome import ItemOutcome
>>> status_of(ItemOutcome(fraction=1.0)), status_of(ItemOutcome.failed("timeout", "took too long"))
('passed', 'timeout')
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from _selfcheck import __version__
from _selfcheck.assignment import ASSIGNMENT_FILES
from _selfcheck.errors import NotegradeError
from _selfcheck.selfcheck.plan import Plan, late_summary

if TYPE_CHECKING:
    from _selfcheck.checks.context import CheckContext

SUBMITTED = ASSIGNMENT_FILES  # the default [submission] files (a folder holding any of them is the student's)
VALIDATION_LABEL = "validation accuracy (your file), not the held-out score"
NO_FEATURES_HINT = ("not run: the held-out labels stay on Gradescope; to estimate this item, build your validation "
                    "features (python make_features.py --nsynth nsynth-valid --out valid.safetensors) and run again "
                    "with --features valid.safetensors")
# The starter folder's files and what its tools write: never part of an upload, so no "Ignored" note.
STARTER_FILES = frozenset({"README.md", "_selfcheck", "selfcheck.py", "errors.py", "featurefile.py", "features.py",
                           "featureset.py", "make_features.py", "nsynth.py", "pipeline.py", "requirements.txt",
                           "train_gpu.sbatch", "runs", "data", "nsynth", "__pycache__", "selfcheck.json"})
STARTER_SUFFIXES = (".safetensors", ".pyc", ".log", ".out", ".err", ".ipynb")
MAX_NOTES = 4096  # notes of --features the accuracy runs on by default: the held-out set's size, ~1 min at worst


def stage_upload(directory: Path, model: "Path | None", dest: Path, plan: Plan) -> "tuple[list[str], str | None]":
    """Copy what Gradescope would grade into ``dest`` (:func:`autograder.upload.prepare`, the same
    function ``run_autograder`` uses: one top-level folder is graded with a note; only the assignment's
    files); returns the notes about the folder and the folder graded (None: the top).  Symlinks stay links and oversized files become sparse
    files of the same size, so the sandbox refuses both without reading them, as on Gradescope."""
    from _selfcheck.upload import prepare

    # --model names the file to check: its target is what an upload of it sends
    overrides = {"model.pt": model.resolve()} if model is not None else None
    prepared = prepare(directory, dest, files=plan.submission_files, overrides=overrides,
                       max_file_mb=float(plan.sandbox.get("max_file_mb", 50.0)))
    # The starter folder's own files, data and runs are not "ignored uploads"; anything else would be
    # ignored by Gradescope too if this folder were uploaded as it is, so say so as the grader does.
    prepared.ignored = [path for path in prepared.ignored if not _starter_file(path)]
    return prepared.notes(files=plan.submission_files, ignored=True), prepared.folder


def _starter_file(path: str) -> bool:
    """A file of the starter folder, its data or its outputs (never uploaded, never worth a note)."""
    top = path.split("/", 1)[0]
    return top in STARTER_FILES or top.startswith(".") or path.endswith(STARTER_SUFFIXES)


def folder_hints(directory: Path, model: "Path | None") -> "list[str]":
    """The report's hints about the folder: a trained ``runs/*/model.pt`` to pass when DIR has no model.pt."""
    hints = []
    if model is None and not (directory / "model.pt").exists():
        trained = sorted(directory.glob("runs/*/model.pt"), key=lambda p: p.stat().st_mtime)
        if trained:
            hints.append(f"model.pt is not in {directory}, but {trained[-1]} is: pass --model {trained[-1]}")
    return hints


def features_for_check(path: Path, plan: Plan, scratch: Path, max_notes: int) -> "tuple[Path, int, int]":
    """(the file the accuracy check reads, notes in ``path``, notes used): ``path`` itself, or at most
    ``max_notes`` evenly spaced notes of it written to ``scratch`` (the forward passes dominate the
    run time; the held-out set has 4,096 notes).  NotegradeError when the file can't be used."""
    import numpy as np

    from _selfcheck.featurefile import read_feature_file, write_feature_file

    if not path.is_file():
        raise NotegradeError(f"--features {path}: no such file (build it with: python make_features.py "
                             "--nsynth nsynth-valid --out valid.safetensors)")
    try:
        data = read_feature_file(path, expected_frontend_hash=plan.frontend_hash)
    except NotegradeError as err:
        raise NotegradeError(f"--features: {err}") from None
    count = len(data)
    if count == 0:
        raise NotegradeError(f"--features {path} holds no notes")
    if not max_notes or count <= max_notes:
        return path, count, count
    rows = np.unique(np.linspace(0, count - 1, max_notes).round().astype(np.int64))
    subset = write_feature_file(scratch / "features_subset.safetensors", features=data.features[rows],
                                labels=data.labels[rows], notes=data.notes[rows],
                                note_strs=[data.note_strs[i] for i in rows], frontend_params=data.frontend_params,
                                frontend_hash=data.frontend_hash, split=data.split, kind=data.kind)
    return subset, count, len(rows)


def _check_context(plan: Plan, staged: Path, heldout_path: "Path | None") -> CheckContext:
    """The self-check's :class:`~autograder.checks.context.CheckContext`: the student's features
    (``heldout_path``, None without --features), labelled as their validation accuracy, and the
    grader's perturbation and source budget for the accuracy estimate (without its secret: the
    order and noise differ from Gradescope's, their size does not)."""
    from _selfcheck.checks.context import CheckContext
    from _selfcheck.checks.heldout_presentation import HeldoutRun, submission_digest

    perturbation = plan.heldout.get("perturbation") or {}
    run = HeldoutRun(submission_digest=submission_digest(staged), perturb=bool(perturbation.get("enabled", True)),
                     gain_db=float(perturbation.get("gain_db", HeldoutRun.gain_db)),
                     noise_db=float(perturbation.get("noise_db", HeldoutRun.noise_db)))
    return CheckContext(heldout_path=heldout_path, accuracy_label=VALIDATION_LABEL, heldout_run=run,
                        max_source_kb=float(plan.heldout.get("max_source_kb", 0.0)),
                        checkpoint_policy=plan.checkpoint)


# What _checkpoint_only takes from the CheckContext (its keyword arguments).
CHECKPOINT_ONLY_CONTEXT = ("checkpoint_policy",)


def _checkpoint_only(sandbox: Any, params: dict, *, timeout_s: float, checkpoint_policy: "dict | None" = None) -> Any:
    """The held-out item without features: model.pt is still loaded and run, with the verdict and message
    Gradescope gives when it can't be used; when it can, the accuracy is "not run", with a hint."""
    from _selfcheck.checks import checkpoint
    from _selfcheck.checks.common import Budget
    from _selfcheck.checks.outcome import ItemOutcome

    blocked, verified = checkpoint.verify(sandbox, Budget(timeout_s, sandbox), checkpoint_policy)
    if blocked is not None:
        return blocked
    return ItemOutcome.failed("not_run", "\n".join(verified.notes + [checkpoint.loads_message(verified) + ".",
                                                                       NO_FEATURES_HINT]))


def status_of(outcome: Any) -> str:
    """The table's status word: passed, partial, failed, error, timeout or not run."""
    if outcome.status == "ran":
        return "passed" if outcome.fraction >= 1.0 else "partial" if outcome.fraction > 0 else "failed"
    return outcome.status.replace("_", " ")


def check_inputs(directory: Path, model: "Path | None") -> None:
    if not sys.platform.startswith("linux"):
        raise NotegradeError("the self-check's sandbox needs Linux (on Windows, run it in WSL)")
    if not directory.is_dir():
        raise NotegradeError(f"{directory}: no such folder")
    from _selfcheck.upload import single_folder

    folder = single_folder(directory, SUBMITTED)
    base = directory / folder if folder else directory
    if model is None and not any((base / name).exists() for name in SUBMITTED[:3]):
        raise NotegradeError(f"{directory} has none of model.py, losses.py, train.py: give your assignment folder")
    if model is not None and not model.is_file():
        raise NotegradeError(f"--model {model}: no such file")


def run_selfcheck(*, directory: Path, plan: Plan, features: "Path | None" = None, model: "Path | None" = None,
                  max_notes: int = MAX_NOTES, progress: bool = True, log: "Callable[[str], None] | None" = None) -> dict:
    """Grade the visible items of ``plan`` on ``directory``; the report as plain data (see :func:`autograder.selfcheck.command.main`)."""
    import torch

    from _selfcheck.checks import REGISTRY
    from _selfcheck.import_policy import write_policy
    from _selfcheck.items import GradedItem, SCORE_DIGITS, grade_items, item_output
    from _selfcheck.sandbox import Sandbox, SandboxLimits

    started = time.monotonic()
    check_inputs(directory, model)
    # The checks that declare the held-out file (heldout_accuracy) get the student's, or don't run.
    on_features = {name for name, spec in REGISTRY.items() if "heldout_path" in spec.context_fields}
    registry = dict(REGISTRY) if features is not None else \
        {**REGISTRY, **{name: dataclasses.replace(REGISTRY[name], run=_checkpoint_only,
                                                  context_fields=CHECKPOINT_ONLY_CONTEXT) for name in on_features}}
    limits = SandboxLimits(**plan.sandbox)
    graded: "list[GradedItem]" = []
    count = used = None
    isolation: dict = {}
    notes: "list[str]" = []
    folder = None
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(plan.items), desc="self-check", unit="item", file=sys.stderr, disable=None if progress else True)
    except ImportError:  # a convenience only
        bar = None
    try:
        with tempfile.TemporaryDirectory(prefix="notegrade-selfcheck-") as scratch:
            heldout_path = None
            if features is not None:
                heldout_path, count, used = features_for_check(features, plan, Path(scratch), max_notes)
            notes, folder = stage_upload(directory, model, Path(scratch) / "submission", plan)
            context = _check_context(plan, Path(scratch) / "submission", heldout_path)
            with Sandbox(Path(scratch) / "submission", limits=limits, use_gpu=torch.cuda.is_available(),
                         run_as="self") as sandbox:  # rootless where bubblewrap works, else as this user
                isolation = sandbox.isolation.as_dict()
                # The grading runtime's imports only, as on Gradescope (its venv has nothing else).
                write_policy(sandbox, list(plan.allowed_imports) if plan.allowed_imports is not None else None)
                if log is not None:
                    log(f"[notegrade] {sandbox.describe()}")
                grade_items(rubric=plan, sandbox=sandbox, registry=registry, context=context, graded=graded,
                            deadline=started + plan.time_budget_s, progress=bar, log=log or (lambda line: None),
                            abort_on_misconfiguration=True)
    finally:
        if bar is not None:
            bar.close()
    items = []
    for g in graded:
        estimated = features is not None and g.item.check in on_features
        # Not a failure: model.pt loaded and ran, only the features to measure the accuracy were not given.
        needs_features = features is None and g.item.check in on_features and g.outcome.status == "not_run"
        items.append({"number": g.item.number, "title": g.item.title, "points": g.item.points, "score": g.score,
                      "status": status_of(g.outcome), "check": g.item.check, "check_status": g.outcome.status,
                      "fraction": g.outcome.fraction, "output": item_output(g), "duration_s": round(g.duration_s, 3),
                      "estimated_from_your_file": estimated, "needs_features": needs_features,
                      "data": g.outcome.data if estimated else {},
                      "subchecks": [dataclasses.asdict(s) for s in g.outcome.subchecks]})
    return {"title": plan.title, "rubric": plan.source, "directory": str(directory),
            "model": str(model or (directory / folder if folder else directory) / "model.pt"),
            "features": str(features) if features else None,
            "feature_count": count, "features_used": used, "items": items,
            "score": round(sum(g.score for g in graded), SCORE_DIGITS),
            "max_score": sum(i.points for i in plan.items), "passed": all(i["status"] == "passed" or i["needs_features"] for i in items),
            "not_shown_items": plan.not_shown_items, "not_shown_points": plan.not_shown_points,
            "late_policy": late_summary(plan.late_policy), "notes": notes, "hints": folder_hints(directory, model),
            "allowed_imports": list(plan.allowed_imports) if plan.allowed_imports is not None else None,
            "seconds": round(time.monotonic() - started, 1), "toolkit_version": __version__, "isolation": isolation}

