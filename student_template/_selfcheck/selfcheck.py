"""Run the rubric's visible items on a student's folder and show what the Gradescope autograder will say.

Students run it as ``python selfcheck.py`` in their starter folder: ``notegrade assign`` vendors
this module with the checks, the harness, the sandbox and the per-item loop into ``_selfcheck/``
(imports rewritten to that private package, no reference solution inside), plus the visible
items of the course rubric as ``_selfcheck/rubric.json``.  Instructors run ``notegrade selfcheck
DIR``.  Either way the same checks run through the same loop (:mod:`autograder.items`) with the
same points, timeouts and messages as ``run_autograder``, on a copy of exactly what students
upload (``model.py``, ``losses.py``, ``train.py``, ``model.pt``), in the same worker sandbox
but as the user who runs it: on a laptop there is no unprivileged grading user, and the code
is the student's own.

The held-out labels stay with the grader, so the held-out accuracy item runs, with
``--features valid.safetensors``, on the student's own validation file (labels read on the
trusted side, as the grader does; at most 4,096 evenly spaced notes unless ``--max-notes`` says
otherwise, since the forward passes dominate the time) and says "validation accuracy (your file),
not the held-out score"; without ``--features`` it is "not run", with a hint.  Items that are not visible at
submission time are left out, and the report says how many points they are worth.  Exit
status: 0 when every visible item ran and passed, 1 otherwise, 2 bad usage.  Linux or WSL
(the sandbox reads /proc), Python >= 3.10, torch >= 2.4, numpy.

Example
-------
>>> from _selfcheck.checks.outcome import ItemOutcome
>>> status_of(ItemOutcome(fraction=0.5)), status_of(ItemOutcome.failed("not_run", "no --features"))
('partial', 'not run')
>>> report = main(directory="student_template", progress=False)  # doctest: +SKIP
>>> report["score"], report["max_score"], report["items"][-1]["status"]  # doctest: +SKIP
(0.0, 100.0, 'not run')
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from _selfcheck import __version__
from _selfcheck.errors import NotegradeError
from _selfcheck.selfcheck_plan import EXPORT_NAME, Plan, default_rubric, late_summary, load_plan, plan_from_autograder

SUBMITTED = ("model.py", "losses.py", "train.py", "model.pt")
VALIDATION_LABEL = "validation accuracy (your file), not the held-out score"
NO_FEATURES_HINT = ("not run: the held-out labels stay on Gradescope; to estimate this item, build your validation "
                    "features (python make_features.py --nsynth nsynth-valid --out valid.safetensors) and run again "
                    "with --features valid.safetensors")
MAX_NOTES = 4096  # notes of --features the accuracy runs on by default: the held-out set's size, ~1 min at worst

EXAMPLES = """examples:
  notegrade selfcheck student_template/                  # the starter code: 0 points, one TODO message per item
  notegrade selfcheck work/ --model work/runs/first/model.pt --features valid.safetensors
  notegrade selfcheck work/ --rubric rubrics/winter2025_hw3.toml --json > selfcheck.json
in a student folder:
  python selfcheck.py --features valid.safetensors
"""
STUDENT_EXAMPLES = """examples:
  python selfcheck.py                                  # model.py, losses.py, train.py and model.pt in this folder
  python selfcheck.py --model runs/first/model.pt      # the model.pt that pipeline.py wrote
  python selfcheck.py --model runs/first/model.pt --features valid.safetensors
  python selfcheck.py --json > selfcheck.json          # the same report as data
"""


def _stage(directory: Path, model: "Path | None", dest: Path, plan: Plan) -> "list[str]":
    """Copy what Gradescope would grade into ``dest`` (:func:`autograder.submission.prepare`, the same
    function ``run_autograder`` uses: one top-level folder is graded with a note; only the assignment's
    files); returns the notes about the folder.  Symlinks stay links and oversized files become sparse
    files of the same size, so the sandbox refuses both without reading them, as on Gradescope."""
    from _selfcheck.submission import prepare

    # --model names the file to check: its target is what an upload of it sends
    overrides = {"model.pt": model.resolve()} if model is not None else None
    prepared = prepare(directory, dest, files=plan.submission_files, overrides=overrides,
                       max_file_mb=float(plan.sandbox.get("max_file_mb", 50.0)))
    # The files beside your work (data, runs, this script) are not "ignored uploads": no note for them.
    return prepared.notes(files=plan.submission_files, ignored=False)


def _hints(directory: Path, model: "Path | None") -> "list[str]":
    hints = []
    if model is None and not (directory / "model.pt").exists():
        trained = sorted(directory.glob("runs/*/model.pt"), key=lambda p: p.stat().st_mtime)
        if trained:
            hints.append(f"model.pt is not in {directory}, but {trained[-1]} is: pass --model {trained[-1]}")
    return hints


def _features_for_check(path: Path, plan: Plan, scratch: Path, max_notes: int) -> "tuple[Path, int, int]":
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


def _heldout_context(plan: Plan, staged: Path) -> dict:
    """The grader's perturbation and source budget for the accuracy estimate (without its secret:
    the order and noise differ from Gradescope's, their size does not)."""
    from _selfcheck.checks.heldout_presentation import HeldoutRun, submission_digest

    perturbation = plan.heldout.get("perturbation") or {}
    run = HeldoutRun(submission_digest=submission_digest(staged), perturb=bool(perturbation.get("enabled", True)),
                     gain_db=float(perturbation.get("gain_db", HeldoutRun.gain_db)),
                     noise_db=float(perturbation.get("noise_db", HeldoutRun.noise_db)))
    return {"heldout_run": run, "max_source_kb": float(plan.heldout.get("max_source_kb", 0.0))}


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


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays in check data
        return value.tolist()
    return str(value)


def _check_inputs(directory: Path, model: "Path | None") -> None:
    if not sys.platform.startswith("linux"):
        raise NotegradeError("the self-check's sandbox needs Linux (on Windows, run it in WSL)")
    if not directory.is_dir():
        raise NotegradeError(f"{directory}: no such folder")
    from _selfcheck.submission import single_folder

    folder = single_folder(directory, SUBMITTED)
    base = directory / folder if folder else directory
    if model is None and not any((base / name).exists() for name in SUBMITTED[:3]):
        raise NotegradeError(f"{directory} has none of model.py, losses.py, train.py: give your assignment folder")
    if model is not None and not model.is_file():
        raise NotegradeError(f"--model {model}: no such file")


def run_selfcheck(*, directory: Path, plan: Plan, features: "Path | None" = None, model: "Path | None" = None,
                  max_notes: int = MAX_NOTES, progress: bool = True, log: "Callable[[str], None] | None" = None) -> dict:
    """Grade the visible items of ``plan`` on ``directory``; the report as plain data (see :func:`main`)."""
    import torch

    from _selfcheck.checks import REGISTRY
    from _selfcheck.import_policy import write_policy
    from _selfcheck.items import GradedItem, SCORE_DIGITS, grade_items, item_output
    from _selfcheck.sandbox import Sandbox, SandboxLimits

    started = time.monotonic()
    _check_inputs(directory, model)
    # The checks that need the held-out file (heldout_accuracy) get the student's, or don't run.
    on_features = {name for name, spec in REGISTRY.items() if "heldout_path" in inspect.signature(spec.run).parameters}
    registry = dict(REGISTRY) if features is not None else \
        {**REGISTRY, **{name: dataclasses.replace(REGISTRY[name], run=_checkpoint_only) for name in on_features}}
    limits = SandboxLimits(**plan.sandbox)
    graded: "list[GradedItem]" = []
    count = used = None
    notes: "list[str]" = []
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(plan.items), desc="self-check", unit="item", file=sys.stderr, disable=None if progress else True)
    except ImportError:  # a convenience only
        bar = None
    try:
        with tempfile.TemporaryDirectory(prefix="notegrade-selfcheck-") as scratch:
            context: dict = {"accuracy_label": VALIDATION_LABEL, "checkpoint_policy": plan.checkpoint}
            if features is not None:
                context["heldout_path"], count, used = _features_for_check(features, plan, Path(scratch), max_notes)
            notes = _stage(directory, model, Path(scratch) / "submission", plan)
            context.update(_heldout_context(plan, Path(scratch) / "submission"))
            with Sandbox(Path(scratch) / "submission", limits=limits, use_gpu=torch.cuda.is_available(),
                         run_as="self") as sandbox:
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
        items.append({"number": g.item.number, "title": g.item.title, "points": g.item.points, "score": g.score,
                      "status": status_of(g.outcome), "check": g.item.check, "check_status": g.outcome.status,
                      "fraction": g.outcome.fraction, "output": item_output(g), "duration_s": round(g.duration_s, 3),
                      "estimated_from_your_file": estimated, "data": g.outcome.data if estimated else {},
                      "subchecks": [dataclasses.asdict(s) for s in g.outcome.subchecks]})
    return {"title": plan.title, "rubric": plan.source, "directory": str(directory),
            "model": str(model or directory / "model.pt"), "features": str(features) if features else None,
            "feature_count": count, "features_used": used, "items": items,
            "score": round(sum(g.score for g in graded), SCORE_DIGITS),
            "max_score": sum(i.points for i in plan.items), "passed": all(i["status"] == "passed" for i in items),
            "not_shown_items": plan.not_shown_items, "not_shown_points": plan.not_shown_points,
            "late_policy": late_summary(plan.late_policy), "notes": notes, "hints": _hints(directory, model),
            "allowed_imports": list(plan.allowed_imports) if plan.allowed_imports is not None else None,
            "seconds": round(time.monotonic() - started, 1), "toolkit_version": __version__}


def main(*, directory: "str | os.PathLike", rubric: "str | os.PathLike | None" = None,
         features: "str | os.PathLike | None" = None, model: "str | os.PathLike | None" = None,
         max_notes: int = MAX_NOTES, progress: bool = True, log: "Callable[[str], None] | None" = None,
         autograder: "str | os.PathLike | None" = None) -> dict:
    """Run the self-check; returns the report (``items`` with number, title, points, score, status,
    output and sub-checks; ``score``/``max_score`` over the visible items; ``passed``).

    ``rubric``: a ``.toml`` or an exported ``rubric.json``; ``autograder``: an autograder zip or folder,
    whose rubric.toml and requirements.txt are used; neither: the folder's own ``_selfcheck/rubric.json``
    (:func:`default_rubric`);
    ``features``: the student's feature file for the accuracy items, of which at most
    ``max_notes`` evenly spaced notes are used (0: all); ``model``: default ``directory/model.pt``;
    ``log``: gets the sandbox set-up and one line per item (default: nothing).
    """
    if max_notes < 0:
        raise NotegradeError(f"--max-notes must be 0 (all notes) or more, not {max_notes}")
    _check_inputs(Path(directory), Path(model) if model else None)  # before the rubric: the folder is the first question
    if rubric is not None and autograder is not None:
        raise NotegradeError("give --rubric or --autograder, not both")
    plan = plan_from_autograder(autograder) if autograder is not None else \
        load_plan(rubric if rubric is not None else default_rubric(Path(directory)))
    return run_selfcheck(directory=Path(directory), plan=plan, features=Path(features) if features else None,
                         model=Path(model) if model else None, max_notes=max_notes, progress=progress, log=log)


def _points(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _notes_used(report: dict) -> str:
    used, count = report["features_used"], report["feature_count"]
    return f"{count:,} notes" if used == count else f"{used:,} of its {count:,} notes, evenly spaced"


def render_text(report: dict) -> str:
    """The terminal report: a per-item table, every item's messages, then the visible total."""
    width = min(max([len(i["title"]) for i in report["items"]] + [20]) + 1, 52)
    lines = [f"Self-check: {report['title']}", f"folder {report['directory']}, model {report['model']}" +
             (f", accuracy on {report['features']} ({_notes_used(report)})" if report["features"] else "")]
    lines += [f"Note: {note}" for note in report.get("notes") or []]
    lines += ["", f"  {'#':<5} {'item':<{width}} {'points':>9}  status"]
    for item in report["items"]:
        title = item["title"] if len(item["title"]) < width else item["title"][:width - 2] + "…"
        title += "*" if item["estimated_from_your_file"] else ""
        lines.append(f"  {item['number']:<5} {title:<{width}} {_points(item['score']) + ' / ' + _points(item['points']):>9}  "
                     f"{item['status']}")
    total = f"{_points(report['score'])} / {_points(report['max_score'])}"
    lines.append(f"  {'':<5} {'total of the visible items':<{width}} {total:>9}")
    if any(i["estimated_from_your_file"] for i in report["items"]):
        lines.append(f"  * {VALIDATION_LABEL}: an estimate, Gradescope scores it on held-out notes")
    for item in report["items"]:
        lines += ["", f"{item['number']} {item['title']}: {_points(item['score'])} / {_points(item['points'])}, {item['status']}"]
        lines += ["    " + line for line in item["output"].splitlines()]
        per_family = item["data"].get("per_family") or {}
        if per_family:
            lines.append("    per family: " + ", ".join(f"{name} {'–' if value is None else f'{value:.0%}'}"
                                                        for name, value in per_family.items()))
    failing = [i["number"] for i in report["items"] if i["status"] != "passed"]
    lines += ["", (f"All {len(report['items'])} visible items pass" if not failing else
                   f"{len(failing)} of {len(report['items'])} visible items do not pass yet ({', '.join(failing)})")
              + f": {total} visible points."]
    if report["not_shown_items"]:
        lines.append(f"Gradescope also grades {report['not_shown_items']} item(s) worth {_points(report['not_shown_points'])} "
                     "points that are not shown when you submit.")
    lines += [f"hint: {hint}" for hint in report["hints"]]
    if report.get("allowed_imports") is not None:
        lines.append("Imports: the Python standard library and the grading runtime's packages "
                     f"({', '.join(n for n in report['allowed_imports'] if not n.startswith('_'))}), as on Gradescope.")
    lines.append(f"Late policy: {report['late_policy']}.  (self-check took {report['seconds']:g} s)")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser, *, default_directory: "Path | None" = None) -> None:
    help_dir = "your assignment folder: model.py, losses.py, train.py and model.pt (only these are checked)"
    if default_directory is None:
        parser.add_argument("directory", type=Path, metavar="DIR", help=help_dir)
    else:
        parser.add_argument("directory", type=Path, metavar="DIR", nargs="?", default=default_directory, help=help_dir)
    parser.add_argument("--model", type=Path, metavar="FILE", help="the model.pt to check, e.g. runs/first/model.pt "
                                                                   "(default: DIR/model.pt)")
    parser.add_argument("--features", type=Path, metavar="VALID_FILE",
                        help="your validation feature file: the accuracy item runs on it (without it, model.pt is "
                             "still loaded and run, but the accuracy is not measured)")
    parser.add_argument("--max-notes", type=int, default=MAX_NOTES, metavar="N",
                        help="use at most N evenly spaced notes of --features (0: all; the forward passes take the time)")
    parser.add_argument("--rubric", type=Path, metavar="FILE",
                        help=f"a rubric .toml (toolkit) or an exported {EXPORT_NAME} (default: DIR/_selfcheck/{EXPORT_NAME}, "
                             "the rubric your starter folder came with)")
    parser.add_argument("--autograder", type=Path, metavar="ZIP",
                        help="an autograder zip (or its folder): check against its rubric and its requirements.txt")
    parser.add_argument("--json", action="store_true", dest="as_json", help="print the report as JSON")
    parser.add_argument("--verbose", action="store_true", help="log each item's time and the sandbox set-up to stderr")


def run(args: argparse.Namespace) -> int:
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    try:
        report = main(directory=args.directory, rubric=args.rubric, features=args.features, model=args.model,
                      max_notes=args.max_notes, log=log, autograder=args.autograder)
    except ModuleNotFoundError as err:  # the trusted side needs the student's own torch and numpy
        raise NotegradeError(f"the self-check needs {err.name}: pip install -r requirements.txt") from None
    if args.as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=_json_default))
    else:
        sys.stdout.write(render_text(report))
    return 0 if report["passed"] else 1


def command_line(argv: "list[str] | None" = None, *, prog: str, default_directory: Path) -> int:
    """The vendored ``python selfcheck.py``: the same options and exit codes as ``notegrade selfcheck``."""
    description = (__doc__ or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=STUDENT_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, default_directory=default_directory)
    args = parser.parse_args(argv)  # exits with 2 on bad usage
    try:
        return run(args)
    except NotegradeError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug in the self-check, not the student's code (that never runs here)
        print(f"{prog}: internal error: {type(err).__name__}: {err}\nPlease tell the course staff.", file=sys.stderr)
        return 1
