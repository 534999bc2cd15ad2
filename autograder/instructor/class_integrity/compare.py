"""The class's integrity analysis, started from an export or regrade folder, or right after a regrade.

:func:`compare_class` is ``notegrade integrity``: it checks the options, waits for (or refuses
beside) a Slurm array of an earlier run, reads the class (:mod:`.members`) and runs the analysis
(:func:`.analysis.analyse`).  :func:`after_regrade` is ``notegrade regrade --integrity``: the same
analysis on the class a regrade just graded.  :func:`report_lines` is what both commands print.
The command line is :mod:`autograder.instructor.class_integrity.command`.
"""
from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from autograder.atomic import private_dir
from autograder.errors import NotegradeError
from autograder.instructor.class_integrity.analysis import MAX_REPORTS, IntegritySummary, analyse
from autograder.instructor.class_integrity.checkpoints import KNOWN_SEEDS
from autograder.instructor.class_integrity.flags import Thresholds
from autograder.instructor.class_integrity.members import ClassInput, members_from_entries, read_class
from autograder.instructor.grading.fanout import check_jobs
from autograder.instructor.grading.local import refuse_exposed_secrets, secret_paths
from autograder.instructor.slurm.grading import settle_earlier_runs

if TYPE_CHECKING:
    from autograder.instructor.slurm.grading import SlurmGrading


def compare_class(*, source: pathlib.Path, autograder: pathlib.Path, out: pathlib.Path, jobs: int = 1,
                  timeout_s: float = 180.0, thresholds: Thresholds = Thresholds(),
                  boilerplate: pathlib.Path | None = None, known_seeds: tuple[int, ...] = KNOWN_SEEDS,
                  max_reports: int = MAX_REPORTS, progress: bool = True,
                  slurm: "SlurmGrading | None" = None) -> IntegritySummary:
    """Analyse the export or regrade folder ``source`` with ``autograder``'s held-out file; write into ``out``.

    ``slurm``: the held-out logits are computed by a Slurm job array (``autograder/instructor/slurm/``)."""
    source, autograder, out = pathlib.Path(source), pathlib.Path(autograder), pathlib.Path(out)
    check_jobs(jobs)
    if timeout_s <= 0:
        raise NotegradeError(f"--timeout must be positive, got {timeout_s}")
    if not autograder.exists():
        raise NotegradeError(f"{autograder}: no such autograder zip or directory (build one with 'notegrade build')")
    if boilerplate is not None and not pathlib.Path(boilerplate).is_dir():
        raise NotegradeError(f"--boilerplate {boilerplate}: not a directory (give the starter code folder)")
    # Before the export is unpacked again: no Slurm task of an earlier run may still be reading it.
    # At the uid level student code could read an open zip or export zip (an export folder is closed
    # by the sandbox itself, see analysis.py): refused before anything runs.
    refuse_exposed_secrets([*secret_paths(autograder), *([source] if source.is_file() else [])])
    settle_earlier_runs(out, slurm, progress=progress, doing="computing held-out logits")
    private_dir(out)
    cls = read_class(source, unpack_to=out / "export")
    return analyse(cls, autograder=autograder, out=out, jobs=jobs, timeout_s=timeout_s, thresholds=thresholds,
                   boilerplate=boilerplate, known_seeds=known_seeds, max_reports=max_reports, progress=progress,
                   slurm=slurm)


def after_regrade(*, entries: list, results: dict[str, dict | None], export_root: pathlib.Path,
                  autograder: pathlib.Path, out: pathlib.Path, jobs: int, progress: bool,
                  slurm: "SlurmGrading | None" = None) -> IntegritySummary:
    """``notegrade regrade --integrity``: the same analysis on the regraded class, into ``out``.

    ``slurm`` (``regrade --slurm``): the logits on the cluster too, as a job of their own."""
    from autograder.instructor.slurm.integrity import for_regrade

    cls = ClassInput(members=members_from_entries(entries, regraded=results), export_root=export_root, kind="regrade")
    return analyse(cls, autograder=autograder, out=out, jobs=jobs, progress=progress, slurm=for_regrade(slurm))


def report_lines(summary: IntegritySummary, *, paths: bool = True) -> str:
    """What the CLI prints: counts, the flags in one line each, notes, and where the files are."""
    lines = [f"{summary.members} submission(s): held-out predictions kept by grading for {summary.logits_from_grading}, "
             f"computed in the sandbox for {summary.logits_computed}, reused {summary.logits_reused} from an earlier "
             f"run, {len(summary.logits_failed)} without"]
    lines += [f"  no logits: {line}" for line in summary.logits_failed]
    if summary.records_refused:  # a record there but not usable: the sandbox ran instead (said once, not per line)
        shown = "; ".join(summary.records_refused[:3]) + (" ..." if len(summary.records_refused) > 3 else "")
        lines.append(f"  {len(summary.records_refused)} grading record(s) not used, computed again: {shown}")
    lines.append(f"{len(summary.flagged_pairs)} flagged pair(s), {len(summary.flagged_students)} flagged student(s) "
                 "(evidence to review; no score was changed):")
    for row in summary.flagged_pairs:
        lines.append(f"  {row['name_a']} ({row['sid_a']}) + {row['name_b']} ({row['sid_b']}): {row['flags']}")
    for row in summary.flagged_students:
        lines.append(f"  {row['name_a']} ({row['sid_a']}): {row['flags']}")
    if summary.unchecked:
        lines.append(f"{summary.unchecked} results.json without the grader's integrity verdicts (graded by an older "
                     "grader, or not graded): no train-on-test or tampering flags for them")
    lines += [f"note: {note}" for note in summary.notes]
    if summary.problems:
        lines.append(f"{len(summary.problems)} problem(s), listed in integrity.json")
    lines += [f"{name:>10}: {path}" for name, path in summary.paths.items()] if paths else []
    return "\n".join(lines)
