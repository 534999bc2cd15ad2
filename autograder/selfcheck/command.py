"""Run the rubric's visible items on a student's folder and show what the Gradescope autograder will say.

Students run it as ``python selfcheck.py`` in their starter folder: ``notegrade assign`` vendors
this module with the checks, the harness, the sandbox and the per-item loop into ``_selfcheck/``
(imports rewritten to that private package, no reference solution inside), plus the visible
items of the course rubric as ``_selfcheck/rubric.json``.  Instructors run ``notegrade selfcheck
DIR``.  Either way the same checks run through the same loop (:mod:`autograder.items`) with the
same points, timeouts and messages as ``run_autograder``, on a copy of exactly what students
upload (``model.py``, ``losses.py``, ``train.py``, ``model.pt``), in the same worker sandbox
but as the user who runs it: on a laptop there is no unprivileged grading user.  Where bubblewrap
and user namespaces work, that is the ``rootless`` level (the code, perhaps a classmate's, sees nothing
of the student's home); elsewhere it runs unisolated, as ``--verbose`` says.

The held-out labels stay with the grader, so the held-out accuracy item runs, with
``--features valid.safetensors``, on the student's own validation file (labels read on the
trusted side, as the grader does; at most 4,096 evenly spaced notes unless ``--max-notes`` says
otherwise, since the forward passes dominate the time) and says "validation accuracy (your file),
not the held-out score"; without ``--features`` it is "not run", with a hint.  Items that are not visible at
submission time are left out, and the report says how many points they are worth.  Exit
status: 0 when every visible item passed or only needs ``--features`` to run, 1 otherwise, 2 bad usage.  Linux or WSL
(the sandbox reads /proc), Python >= 3.10, torch >= 2.4, numpy.

This module is the entry point (the options, :func:`main`, the text report); staging the upload and
running the items is :mod:`autograder.selfcheck.run`.

Example
-------
>>> from autograder.checks.outcome import ItemOutcome
>>> status_of(ItemOutcome(fraction=0.5)), status_of(ItemOutcome.failed("not_run", "no --features"))
('partial', 'not run')

(Skipped by the doctest run: the self-check starts sandboxed workers, tens of seconds.)

>>> report = main(directory="student_template", progress=False)  # doctest: +SKIP
>>> report["score"], report["max_score"], report["items"][-1]["status"]  # doctest: +SKIP
(0.0, 100.0, 'not run')
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from autograder.errors import NotegradeError
from autograder.report import fmt_points
from autograder.selfcheck.plan import EXPORT_NAME, default_rubric, load_plan, plan_from_autograder
from autograder.selfcheck.run import (
    MAX_NOTES,
    NO_FEATURES_HINT,
    SUBMITTED,
    VALIDATION_LABEL,
    check_inputs,
    features_for_check,
    folder_hints,
    run_selfcheck,
    stage_upload,
    status_of,
)

# The run's names stay importable from here (calibrate and the tests use selfcheck.X), the helpers
# under their old private names too.
__all__ = ["MAX_NOTES", "NO_FEATURES_HINT", "SUBMITTED", "VALIDATION_LABEL", "add_arguments", "command_line", "main",
           "render_text", "run", "run_selfcheck", "status_of"]
_stage, _hints, _features_for_check = stage_upload, folder_hints, features_for_check

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
    check_inputs(Path(directory), Path(model) if model else None)  # before the rubric: the folder is the first question
    if rubric is not None and autograder is not None:
        raise NotegradeError("give --rubric or --autograder, not both")
    plan = plan_from_autograder(autograder) if autograder is not None else \
        load_plan(rubric if rubric is not None else default_rubric(Path(directory)))
    return run_selfcheck(directory=Path(directory), plan=plan, features=Path(features) if features else None,
                         model=Path(model) if model else None, max_notes=max_notes, progress=progress, log=log)


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
        lines.append(f"  {item['number']:<5} {title:<{width}} {fmt_points(item['score']) + ' / ' + fmt_points(item['points']):>9}  "
                     f"{item['status']}")
    total = f"{fmt_points(report['score'])} / {fmt_points(report['max_score'])}"
    lines.append(f"  {'':<5} {'total of the visible items':<{width}} {total:>9}")
    if any(i["estimated_from_your_file"] for i in report["items"]):
        lines.append(f"  * {VALIDATION_LABEL}: an estimate, Gradescope scores it on held-out notes")
    for item in report["items"]:
        lines += ["", f"{item['number']} {item['title']}: {fmt_points(item['score'])} / {fmt_points(item['points'])}, {item['status']}"]
        lines += ["    " + line for line in item["output"].splitlines()]
        per_family = item["data"].get("per_family") or {}
        if per_family:
            lines.append("    per family: " + ", ".join(f"{name} {'–' if value is None else f'{value:.0%}'}"
                                                        for name, value in per_family.items()))
    failing = [i["number"] for i in report["items"] if i["status"] != "passed" and not i.get("needs_features")]
    waiting = [i for i in report["items"] if i.get("needs_features")]
    ran = len(report["items"]) - len(waiting)
    lines += ["", (f"All {ran} visible items that ran pass" if waiting and not failing else
                   f"All {ran} visible items pass" if not failing else
                   f"{len(failing)} of {len(report['items'])} visible items do not pass yet ({', '.join(failing)})")
              + f": {total} visible points."]
    if waiting:
        worth = fmt_points(sum(i["points"] for i in waiting))
        lines.append(f"{', '.join(i['number'] for i in waiting)} ({worth} points) needs --features VALID_FILE to "
                     "measure the accuracy: model.pt loads and runs, and Gradescope scores it on held-out notes.")
    if report["not_shown_items"]:
        lines.append(f"Gradescope also grades {report['not_shown_items']} item(s) worth {fmt_points(report['not_shown_points'])} "
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


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays in check data
        return value.tolist()
    return str(value)


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
