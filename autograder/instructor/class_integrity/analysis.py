"""The integrity analysis from start to finish: submissions -> logits, weights, code -> flags -> files.

:func:`analyse` runs the steps on a :class:`~.members.ClassInput` and writes everything into
``out`` (see :mod:`.outputs`); :mod:`.compare` starts it for the CLI and after a regrade.  Each phase's wall
time is recorded in ``integrity.json`` (the benchmark reads it).
"""
from __future__ import annotations

import functools
import os
import pathlib
import shutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from autograder.atomic import private_dir
from autograder.checks.common import Phases
from autograder.instructor.class_integrity import checkpoints as ckpt
from autograder.instructor.class_integrity import code_similarity as code
from autograder.instructor.class_integrity import evidence, outputs
from autograder.instructor.class_integrity.agreement import pair_statistics
from autograder.instructor.class_integrity.flags import Thresholds, build_signals, pair_flags
from autograder.instructor.class_integrity.logits import HeldOut, LogitsOutcome, all_logits, load_heldout
from autograder.instructor.class_integrity.members import ClassInput
from autograder.instructor.class_integrity.recorded import model_sha256, recorded_outcomes
from autograder.instructor.class_integrity.student_flags import read_student_flags

if TYPE_CHECKING:
    from autograder.instructor.slurm.grading import SlurmGrading

MAX_REPORTS = 100


@dataclass
class IntegritySummary:
    out: pathlib.Path
    members: int = 0
    flagged_pairs: list[dict] = field(default_factory=list)
    flagged_students: list[dict] = field(default_factory=list)
    logits_computed: int = 0
    logits_reused: int = 0
    logits_from_grading: int = 0  # grading's recorded predictions (no sandbox started for them)
    records_refused: list[str] = field(default_factory=list)  # a record there, but not for this file or model.pt
    logits_failed: list[str] = field(default_factory=list)
    unchecked: int = 0  # results.json without the held-out guard's verdicts (extra_data["integrity"])
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    paths: dict[str, pathlib.Path] = field(default_factory=dict)


def _predictions(outcomes: dict[str, LogitsOutcome], keys: list[str], classes: int) -> tuple[np.ndarray, np.ndarray]:
    index, rows = [], []
    for i, key in enumerate(keys):
        outcome = outcomes.get(key)
        if outcome is None or outcome.answers() is None:
            continue
        if outcome.logits is not None and outcome.logits.shape[1] != classes:
            outcome.status, outcome.message = "error", f"{outcome.logits.shape[1]} logits per note, expected {classes}"
            outcome.logits = None
            continue
        index.append(i)
        rows.append(outcome.answers())
    return np.array(index, dtype=np.int64), (np.stack(rows) if rows else np.zeros((0, 0), np.int64))


def _starter(boilerplate: pathlib.Path | None) -> dict[str, str]:
    if boilerplate is None:
        return code.starter_code()
    texts = {name: code.read_source(pathlib.Path(boilerplate), name) or "" for name in code.FILES}
    if not any(texts.values()):
        from autograder.errors import NotegradeError

        raise NotegradeError(f"--boilerplate {boilerplate}: none of {', '.join(code.FILES)} is in it")
    return texts


def analyse(cls: ClassInput, *, autograder: pathlib.Path, out: pathlib.Path, jobs: int = 1, timeout_s: float = 180.0,
            thresholds: Thresholds = Thresholds(), boilerplate: pathlib.Path | None = None,
            known_seeds: tuple[int, ...] = ckpt.KNOWN_SEEDS, heldout: HeldOut | None = None,
            max_reports: int = MAX_REPORTS, progress: bool = True, slurm: "SlurmGrading | None" = None) -> IntegritySummary:
    """Compare every pair of ``cls.members``; write integrity.csv/json, pairs.npz and copydetect reports.

    copydetect's HTML (about 0.2 s each: it draws two plots) is written for the ``max_reports``
    strongest pairs flagged for code; the others keep their row and numbers.  ``slurm``: the held-out
    logits are computed by a Slurm job array into the same cache (job files in ``out/slurm/``).
    """
    private_dir(out)  # evidence about students: the instructor's only (every file in it is 0600)
    summary = IntegritySummary(out=out, members=len(cls.members), problems=list(cls.problems))
    members, keys = cls.members, [m.key for m in cls.members]
    summary.seconds = phases = Phases()  # each phase's wall time, recorded in integrity.json
    heldout = heldout or load_heldout(autograder, work=out / "cache")
    # Grading's own predictions first: the sandbox runs only for the members without a usable record.
    shas = {m.key: model_sha256(m.folder) for m in members}  # the records' key, and identical files below
    outcomes, refused = recorded_outcomes(members, heldout, shas=shas)
    summary.records_refused = [f"{m.label}: {refused[m.key]}" for m in members if m.key in refused]
    missing = [m for m in members if m.key not in outcomes]
    # As root the sandbox's user must not read other students' files (no framing a classmate).
    compute = all_logits
    if slurm is not None:
        from autograder.instructor.slurm.integrity import slurm_logits

        compute = functools.partial(slurm_logits, slurm, folder=out / "slurm")
    if missing:
        outcomes.update(compute(missing, heldout, cache=out / "cache" / "logits", jobs=jobs, timeout_s=timeout_s,
                                hide=(str(cls.export_root),), progress=progress))
    phases.mark("logits")
    classes = len(heldout.families)
    index, predictions = _predictions(outcomes, keys, classes)
    for m in members:
        outcome = outcomes[m.key]
        answered, graded = outcome.answers() is not None, outcome.source == "grading"
        summary.logits_from_grading += answered and graded
        summary.logits_reused += answered and not graded and outcome.reused
        summary.logits_computed += answered and not graded and not outcome.reused
        if not answered:
            summary.logits_failed.append(f"{m.label}: {outcome.message or outcome.status}")
    stats = pair_statistics(predictions, heldout.labels, classes=classes, min_both_wrong=thresholds.min_both_wrong) \
        if len(index) >= 2 else None
    phases.mark("agreement")
    shapes = ckpt.reference_shapes()
    loaded = [ckpt.load_state(m.folder / "model.pt", shapes) if m.folder is not None else (None, "no folder")
              for m in members]
    pairs = ckpt.compare_checkpoints([s for s, _ in loaded], [shas[m.key] for m in members],
                                     shapes=shapes, starts=ckpt.initial_states(tuple(known_seeds)))
    phases.mark("checkpoints")
    starter = _starter(boilerplate)
    bp = code.boilerplate_hashes(list(starter.values()), "starter.py")
    files = {name: code.file_similarity([code.read_source(m.folder, name) for m in members], name=name, boilerplate=bp)
             for name in code.FILES}
    phases.mark("code")
    signals = build_signals(n=len(members), logits_index=index, stats=stats, checkpoints=pairs, code=files,
                            thresholds=thresholds)
    flagged = pair_flags(signals, thresholds)
    summary.notes = signals.notes
    if slurm is None and os.getuid() != 0:
        from autograder.sandbox.isolation import best_available

        level, why = best_available(python=sys.executable)
        if level == "none":
            summary.notes.append(f"student code computed its held-out logits as your own user, not isolated ({why}; "
                                 "install bubblewrap for the rootless level, or run as root)")
    starter_dir = out / "copydetect" / "starter"
    shutil.rmtree(out / "copydetect", ignore_errors=True)  # no report left from an earlier run's flags
    rows, reports = [], {}
    for (i, j), kinds in sorted(flagged.items(), key=lambda item: evidence.strength(item[1], signals, *item[0])):
        report = ""
        code_files = [k.split(":", 1)[1] for k in kinds if k.startswith("code:")]
        if code_files and len(reports) < max_reports:
            private_dir(starter_dir)  # and copydetect/ above it: its reports quote students' code
            for name, text in starter.items():
                (starter_dir / name).write_text(text, encoding="utf-8")
            path = out / "copydetect" / f"{members[i].key}__{members[j].key}.html"
            code.html_report(out_file=path, files_a=[members[i].folder / f for f in code_files],
                             files_b=[members[j].folder / f for f in code_files], boilerplate_dir=starter_dir)
            report = path.relative_to(out).as_posix()
            reports[f"{members[i].key}__{members[j].key}"] = report
        rows.append(evidence.pair_row(i, j, kinds, members=members, signals=signals, notes=len(heldout.labels),
                                      report=report))
    summary.flagged_pairs = list(rows)
    people = []
    for i, m in enumerate(members):
        flags = read_student_flags(m.results)
        summary.unchecked += not flags.checked
        summary.problems += [f"{m.label}: {p}" for p in flags.problems]
        people.append({"key": m.key, "submission_id": m.submission_id, "name": m.field("name"), "sid": m.field("sid"),
                       "email": m.field("email"), "results": m.results_source or "none",
                       "integrity_checked": flags.checked, "logits": outcomes[m.key].status,
                       "logits_source": outcomes[m.key].source,
                       "logits_message": outcomes[m.key].message, "heldout_accuracy": signals.accuracy[i],
                       "checkpoint": loaded[i][1] or "ok", "start_seed": int(pairs.start[i]) if pairs.start[i] >= 0 else None,
                       "start_similarity": pairs.start_similarity[i]})
        if flags.flagged:
            row = evidence.student_row(m, flags, accuracy=float(signals.accuracy[i]))
            rows.append(row)
            summary.flagged_students.append(row)
    phases.mark("flags")
    summary.paths = {"csv": outputs.write_csv(out / outputs.CSV_NAME, rows)}
    summary.paths["npz"] = outputs.write_npz(
        out / outputs.NPZ_NAME, keys=keys, labels=[m.label for m in members], agreement=signals.agreement,
        expected_agreement=signals.expected_agreement, agreement_z=signals.agreement_z, same_errors_z=signals.wrong_z,
        weight_similarity=pairs.similarity,
        code_similarity=np.fmax.reduce([f.similarity for f in files.values()]) if files else np.full((len(keys),) * 2, np.nan))
    phases.mark("outputs")
    summary.paths["json"] = outputs.write_json(out / outputs.JSON_NAME, {
        "source": cls.kind, "export_root": str(cls.export_root), "heldout": {"notes": len(heldout.labels),
                                                                             "sha256": heldout.sha256},
        "thresholds": thresholds.as_dict(), "known_seeds": list(known_seeds), "members": people, "flags": rows,
        "copydetect": reports, "distributions": signals.distributions, "notes": summary.notes,
        "problems": summary.problems, "logits_failed": summary.logits_failed, "seconds": summary.seconds,
        "logits": {"computed": summary.logits_computed, "reused": summary.logits_reused,
                   "from_grading": summary.logits_from_grading, "records_refused": summary.records_refused},
        "unchecked": summary.unchecked})
    summary.paths["copydetect"] = out / "copydetect"
    return summary
