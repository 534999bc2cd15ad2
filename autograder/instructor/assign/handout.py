"""The student handout: README.md, an example Slurm job, requirements.txt and .gitignore.

Used by ``notegrade assign``.  The architecture table is computed from the layer sizes (a test
checks it against the reference ``NoteCNN``); the grading section is generated from a rubric file
(item points, visibility, the accuracy scale and the late policy, with example penalty lines
computed by ``autograder.late``), so the handout never quotes stale numbers.

Example
-------
>>> rows = architecture_rows()
>>> rows[2]
('conv3', 'Conv2d(32, 64, 3, padding="same")', '(N, 64, 8, 8)', 18496)
>>> sum(row[3] for row in rows)
119691
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import math
import textwrap
from pathlib import Path
from types import ModuleType

from autograder.assignment import ASSIGNMENT_FILES, DEFAULT_CHECKPOINT_POLICY
from autograder.errors import NotegradeError
from autograder.instructor.assign.handout_text import (
    GITIGNORE,
    PREFIX_ACCEPT,
    PREFIX_REFUSE,
    README_BODY,
    REQUIREMENTS,
    SBATCH,
    SELFCHECK_ACCURACY,
    SELFCHECK_INIT,  # noqa: F401 - re-exported: the template is built from handout.X
    SELFCHECK_SCRIPT,  # noqa: F401 - re-exported
    SELFCHECK_SECTION,
    SUBMIT_SECTION,
)
from autograder.report import fmt_points

_VISIBILITY = {
    "visible": "right after you submit",
    "hidden": "never shown to you",
    "after_due_date": "after the (late) due date",
    "after_published": "once grades are published",
}

# (name, in channels, out channels, output shape after the block's pool)
_CONVS = (("conv1", 1, 16, "(N, 16, 32, 32)"), ("conv2", 16, 32, "(N, 32, 16, 16)"),
          ("conv3", 32, 64, "(N, 64, 8, 8)"), ("conv4", 64, 128, "(N, 128, 4, 4)"))


def architecture_rows(n_classes: int = 11) -> list[tuple[str, str, str, int]]:
    """(attribute, layer, block output shape, parameter count) for NoteCNN's five layers."""
    rows = [(name, f'Conv2d({c_in}, {c_out}, 3, padding="same")', shape, c_in * c_out * 9 + c_out)
            for name, c_in, c_out, shape in _CONVS]
    rows.append(("fc", f"Linear(2048, {n_classes})", f"(N, {n_classes})", 2048 * n_classes + n_classes))
    return rows


def _architecture_table() -> str:
    rows = architecture_rows()
    lines = ["| block | attribute | layer | output of the block | parameters |", "|---|---|---|---|---:|"]
    for index, (name, layer, shape, count) in enumerate(rows, 1):
        block = str(index) if name.startswith("conv") else "head"
        after = " + ReLU + `pool`" if name.startswith("conv") else " (after flattening to (N, 2048))"
        lines.append(f"| {block} | `{name}` | `{layer}`{after} | `{shape}` | {count:,} |")
    lines.append(f"| | | | **total** | **{sum(r[3] for r in rows):,}** |")
    return "\n".join(lines)


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=100, break_on_hyphens=False, break_long_words=False)


def _late_examples(policy, total: float) -> list[str]:
    """Penalty lines for a few lateness values, computed by the grader's own late.py."""
    from autograder.late import assess_late_penalty

    due = dt.datetime(2024, 10, 7, 23, 59, tzinfo=dt.timezone.utc)
    examples = []
    for late in (dt.timedelta(minutes=10), dt.timedelta(hours=23), dt.timedelta(days=1, hours=2, minutes=5),
                 dt.timedelta(days=3, hours=1)):
        metadata = {"created_at": (due + late).isoformat(), "assignment": {"due_date": due.isoformat(), "late_due_date": None}}
        penalty = assess_late_penalty(metadata=metadata, policy=policy, earned=total, total=total)
        examples.append(f"- {penalty.line}")
    return examples


def grading_section(rubric_path: Path) -> str:
    """The handout's "How you are graded" section, from the rubric file's numbers."""
    from autograder.rubric import load_rubric

    rubric = load_rubric(rubric_path, validate_checks=False)
    lines = [f"## How you are graded ({rubric.title})", "",
             _wrap(f"The autograder runs these checks on your files; the total is {fmt_points(rubric.total_points)} "
                   "points. Checks compare your code with PyTorch's own functions and with the numbers in this "
                   "handout (never with a model solution), and give partial credit per sub-check; a failed check "
                   "says what it expected, what your code produced and where."), "",
             "| item | what is checked | points | time limit | you see the result |", "|---|---|---:|---:|---|"]
    from autograder.heldout_guard.results_lines import points_visibility

    accuracy = []
    for item in rubric.items:
        title = item.title.replace("|", "\\|")  # a bare pipe would end the table cell
        lines.append(f"| {item.number} | {title} | {fmt_points(item.points)} | {item.timeout_s:g} s | "
                     f"{_VISIBILITY[points_visibility(rubric, item)]} |")
        if "zero_at" in item.params and "full_at" in item.params:
            accuracy.append(item)
    lines.append(f"| | **total** | **{fmt_points(rubric.total_points)}** | | |")
    for item in accuracy:
        zero, full = (100 * float(item.params[k]) if float(item.params[k]) <= 1 else float(item.params[k]) for k in ("zero_at", "full_at"))
        lines += ["", _wrap(f"Item {item.number} loads your `model.pt` into your `NoteCNN`, runs it on held-out notes "
                            "whose labels stay with the grader (features computed by exactly this `features.py`), and "
                            f"scales the points linearly with the accuracy: {zero:g}% or less gives 0, {full:g}% or more "
                            f"gives all {fmt_points(item.points)} points.")]
        lines += ["", heldout_rules(rubric, item)]
    lines += ["", _wrap(f"The whole run has {rubric.time_budget_s:g} s; an item that runs out of its time limit gets no "
                        "points. Grading runs on a CPU without a GPU and with a memory limit: keep `model.pt` a plain "
                        "state_dict and never call `.cuda()` unconditionally.")]
    policy = rubric.late_policy
    lines += ["", "### Late submissions", ""]
    if policy.amount <= 0:
        lines.append("This rubric has no late penalty.")
        return "\n".join(lines) + "\n"
    unit = "points" if policy.unit == "points" else f"% of the {'points you earned' if policy.percent_of == 'earned' else 'total'}"
    counting = {"ceil": f"every started {policy.per} counts in full", "floor": f"only complete {policy.per}s count",
                "none": f"partial {policy.per}s count pro rata"}[policy.rounding]
    rules = [f"Lateness is measured from the due date to the time Gradescope records your submission: "
             f"{fmt_points(policy.amount)} {unit} per {policy.per} late ({counting})."]
    if policy.grace_minutes:
        rules.append(f"A submission within {policy.grace_minutes:g} minutes of the due date is not late.")
    if policy.cap is not None:
        rules.append(f"The deduction is at most {fmt_points(policy.cap)} {unit}.")
    if policy.zero_after_late_due:
        rules.append("After the late due date (if the assignment has one) a submission scores 0.")
    rules.append("An extension moves your own due date; the penalty then counts from it. The deduction never takes a "
                 "score below 0 and appears as its own line in your results. For example, when the total is "
                 f"{fmt_points(rubric.total_points)}:")
    lines += [_wrap(" ".join(rules)), ""] + _late_examples(policy, rubric.total_points)
    return "\n".join(lines) + "\n"


def heldout_rules(rubric, item) -> str:
    """What the held-out item checks besides accuracy, and why (never the detector's thresholds)."""
    from autograder.rubric.model import Perturbation

    settings = rubric.heldout
    rules = []
    if settings.perturbation.enabled:
        rules.append("The held-out notes reach your model in a secret random order (so which notes share a batch "
                     "is secret too), with a small random gain and a little noise added to the features (about "
                     f"{settings.perturbation.gain_db:g} dB and {settings.perturbation.noise_db:g} dB): far too little "
                     "to change an instrument family, so a model that generalises loses nothing, while a model that "
                     "recognises memorised test notes does not recognise them any more. The same files always get "
                     "the same order and noise, so resubmitting them gives the same score.")
        if settings.perturbation == Perturbation():
            # Measured for these defaults only (docs/threat-model.md, "Held-out integrity", issue 17.5): std 0.1, swing 0.5.
            rules.append("Other files (even a changed comment) get other noise, which moves a trained model's "
                         "accuracy by about 0.1 point, rarely more than half a point.")
    else:
        rules.append("The held-out notes reach your model in a secret random order (so which notes share a batch "
                     "is secret too).")
    if settings.public_fraction > 0:
        rules.append(f"Before the due date you see your accuracy on a public part of the held-out notes "
                     f"({settings.public_fraction:.0%} of them, the same for everyone), rounded to 0.1 point, and the "
                     "leaderboard shows it; the points come from the other notes, the private part"
                     + (", and from the control notes below" if settings.control_weight > 0 else "")
                     + ", and are shown after the due date.")
    else:
        rules.append("You see the accuracy rounded to 0.1 point, and the points are computed from that rounded value.")
    if settings.control_weight > 0:
        share = "All" if settings.control_weight >= 1 else f"{settings.control_weight:.0%}"
        rules.append(f"{share} of the held-out accuracy comes from the course's own control notes: notes made for "
                     "this course that are in no public dataset, mixed in with the NSynth test notes (your model "
                     "cannot tell which is which). Only a model that generalises does well on them.")
    rules.append(f"Per-family accuracy and the confusion matrix are shown "
                 f"{_VISIBILITY[settings.details_visibility]}. No result ever names an individual held-out note.")
    limit = settings.rate_limit
    if limit.max_evaluations > 0:
        rules.append(f"At most {limit.max_evaluations} submissions per {limit.window_hours:g} hours are evaluated on "
                     "the held-out notes (counted from Gradescope's submission times; submissions that failed "
                     "because of the autograder do not count). A submission over the limit keeps the held-out result "
                     "of your last evaluated one and says when the next evaluation is possible.")
    if settings.max_source_kb:
        rules.append(f"The files you submit besides `model.pt` may hold at most {settings.max_source_kb:g} KB in "
                     "total (the complete assignment needs a fraction of that): a submission that carries data in its "
                     "source is not evaluated on the held-out notes.")
    rules.append("Your course staff also receive an integrity report that Gradescope never shows you: it compares how "
                 "your model does on the held-out notes and on training notes (NSynth's test labels are public; "
                 "training on them shows), "
                 + ("compares the NSynth test notes with the control notes (knowing public labels shows), "
                    if settings.control_weight > 0 else "") +
                 "and lists code that reaches into the grader's process. It never changes "
                 "your score by itself.")
    if settings.integrity_line == "always":
        rules.append("Because of it, Gradescope does not show you a total: add up the items.")
    return _wrap(" ".join(rules))


def selfcheck_section(rubric_path: Path) -> str:
    """The handout's "Check your work before submitting" section (``python selfcheck.py``)."""
    from autograder.rubric import load_rubric

    rubric = load_rubric(rubric_path, validate_checks=False)
    visible = [item for item in rubric.items if item.visibility == "visible"]
    accuracy = [item.number for item in visible if item.check == "heldout_accuracy"]
    hidden = [item for item in rubric.items if item.visibility != "visible"]
    text = SELFCHECK_SECTION.format(count=len(visible), points=fmt_points(sum(i.points for i in visible)))
    if accuracy:
        text += "\n" + SELFCHECK_ACCURACY.format(items=" and ".join(accuracy))
    if hidden:
        text += ("\n" + _wrap(f"The other {len(hidden)} item(s), worth {fmt_points(sum(i.points for i in hidden))} points, "
                             "are not shown when you submit, so the self-check does not run them either.") + "\n")
    return text + "\n"


def _file_table(manifest, *, selfcheck: bool = False) -> str:
    lines = ["| file | what it is |", "|---|---|"]
    lines += [f"| `{item.target}` | {item.role} |" for item in manifest]
    lines += ["| `requirements.txt` | the Python packages to install |",
              "| `train_gpu.sbatch` | an example Slurm job for a GPU cluster |"]
    if selfcheck:
        lines += ["| `selfcheck.py` | runs the autograder's visible checks on your files before you submit |",
                  "| `_selfcheck/` | the autograder's checks, used by `selfcheck.py` (generated: do not edit) |"]
    return "\n".join(lines)


def frontend_module(source: Path) -> ModuleType:
    """The features.py being shipped (not the installed one), imported from its file."""
    spec = importlib.util.spec_from_file_location("_handout_features", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines constants and classes only; torchaudio is imported lazily
    return module


def _frontend_constants(source: Path) -> dict:
    """DB_OFFSET, DB_SCALE and the dB floor, read from the features.py being shipped (not the installed one)."""
    module = frontend_module(source)
    floor_db = 10 * math.log10(module.FRONTEND_PARAMS["amin"])
    return {"db_offset": module.DB_OFFSET, "db_scale": module.DB_SCALE, "floor_db": floor_db,
            "silence": round((floor_db - module.DB_OFFSET) / module.DB_SCALE, 3)}


def submit_section(rubric_path: "Path | None") -> str:
    """The handout's "What to submit" section: the upload layouts, the rubric's files, checkpoint budget
    and ``module.`` prefix policy (the defaults without a rubric)."""
    from autograder.rubric import load_rubric

    rubric = load_rubric(rubric_path, validate_checks=False) if rubric_path is not None else None
    files = rubric.submission_files if rubric else ASSIGNMENT_FILES
    policy = rubric.checkpoint if rubric else DEFAULT_CHECKPOINT_POLICY
    text = SUBMIT_SECTION.format(files=", ".join(f"`{name}`" for name in files),
                                 budget=f"{int(policy['buffer_budget']):,}",
                                 prefix=PREFIX_ACCEPT if policy["module_prefix"] == "accept" else PREFIX_REFUSE)
    return text


def readme(*, manifest, rubric: Path | None, features_source: Path) -> str:
    """The handout text; ``rubric=None`` leaves out the grading section (say so in the course page)."""
    grading = grading_section(Path(rubric)) if rubric is not None else ""
    selfcheck = selfcheck_section(Path(rubric)) if rubric is not None else ""  # it runs the rubric's items
    return README_BODY.format(files=_file_table(manifest, selfcheck=rubric is not None), architecture=_architecture_table(),
                              submit=submit_section(Path(rubric) if rubric is not None else None),
                              grading=grading, selfcheck=selfcheck, **_frontend_constants(features_source))


def generated_files(*, manifest, rubric: Path | None, features_source: Path) -> dict[str, str]:
    """Every non-code file of the template: name -> text."""
    if rubric is not None and not Path(rubric).is_file():
        raise NotegradeError(f"rubric file not found: {rubric} (pass --rubric FILE)")
    return {"README.md": readme(manifest=manifest, rubric=rubric, features_source=features_source),
            "requirements.txt": REQUIREMENTS, "train_gpu.sbatch": SBATCH, ".gitignore": GITIGNORE}
