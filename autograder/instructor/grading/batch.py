"""Grade a batch: a folder of submission folders, each graded on its own, then a summary.

:func:`is_batch` is the one rule for whether a folder is graded as a batch: ``--batch`` says so (then
files beside the submission folders are listed as ignored: :func:`ignored_rows`), ``--no-batch``
says not, and otherwise a folder is a batch only when it holds nothing but submission folders
(:func:`is_batch_folder`).  A folder that looks like a batch of several submissions but also holds
a stray file is refused with the advice to add ``--batch``, never graded as one empty upload.  Junk
(what zipping on macOS or running Python leaves, hidden names) is never a submission, here and for
``--docker``.  Each submission goes through
:func:`autograder.instructor.grading.one_submission.grade_submission` into ``OUT/<name>/`` by the
one fan-out (:mod:`.fanout`: ``jobs`` grader processes at a time), or as a Slurm job array whose
tasks run :func:`grade_folders`; one that breaks never stops the others, ``OUT/summary.csv`` lists
them all (and the ignored files) and :func:`summary_table` prints them (for ``--docker`` too).

Example
-------
>>> print(summary_table([{"name": "alice", "score": 90.0, "total": 100.0, "seconds": 12.3, "status": "graded"},
...                      {"name": "notes.txt", "score": None, "total": None, "seconds": None, "status": IGNORED}]))
submission        score     time  status
alice          90 / 100    12.3s  graded
notes.txt             -        -  ignored: not a submission folder
"""
from __future__ import annotations

import csv
import io
import os
import pathlib

from autograder.atomic import PRIVATE, private_dir, write_atomically
from autograder.errors import NotegradeError
from autograder.instructor.grading.fanout import Graded, Job, grade_each
from autograder.instructor.grading.local import isolation_of
from autograder.instructor.grading.one_submission import JUNK_NAMES, BatchGrader
from autograder.report import fmt_points
from autograder.results import is_autograder_error


def _entries(folder: pathlib.Path) -> "list[pathlib.Path]":
    """What a batch folder holds, junk aside: the one rule for what can be a submission of a batch."""
    return [p for p in folder.iterdir() if p.name not in JUNK_NAMES and not p.name.startswith(".")]


def _is_submission_folder(path: pathlib.Path) -> bool:
    """A folder that holds one student's work: an assignment file at its top or inside one folder."""
    from autograder.upload import ASSIGNMENT_FILES, single_folder

    folder = single_folder(path, ASSIGNMENT_FILES)
    base = path / folder if folder else path
    return any((base / name).exists() for name in ASSIGNMENT_FILES)


def is_batch_folder(path: pathlib.Path) -> bool:
    """A directory is a batch when it holds nothing but submission folders (junk like .DS_Store aside).

    Never by guess: with a stray notes.txt next to the folders it is no batch (and :func:`is_batch`
    refuses it when the folders look like submissions); a single folder inside is one submission
    graded from that folder (Gradescope's layout for a zipped folder), never a batch of one."""
    if not path.is_dir() or _is_submission_folder(path):
        return False
    entries = _entries(path)
    return len(entries) > 1 and all(p.is_dir() for p in entries)


def submission_like_folders(path: pathlib.Path) -> "list[pathlib.Path]":
    """The folders of ``path`` that each look like one student's submission, when ``path`` has none of the
    assignment's files itself; fewer than two is not a batch (one folder is a zipped upload)."""
    if not path.is_dir() or _is_submission_folder(path):
        return []
    found = sorted(p for p in _entries(path) if p.is_dir() and _is_submission_folder(p))
    return found if len(found) >= 2 else []


def stray_files(path: pathlib.Path) -> "list[str]":
    """What a batch folder holds besides folders (junk aside), sorted: never graded, listed as ignored."""
    return sorted(p.name for p in _entries(path) if not p.is_dir()) if path.is_dir() else []


def batch_problem(path: pathlib.Path) -> "str | None":
    """Why ``path`` can't be graded as a batch (``--batch``), or None."""
    if not path.is_dir():
        return f"{path} is not a folder of submission folders"
    if not any(p.is_dir() for p in _entries(path)):
        stray = stray_files(path)
        return f"{path} holds no submission folders" + (f" (only {_listed(stray)})" if stray else "")
    return None


def is_batch(path: pathlib.Path, flag: "bool | None") -> bool:
    """Grade ``path`` as a batch?  ``flag``: True (``--batch``), False (``--no-batch``) or None (detect).

    Raises :class:`NotegradeError` when ``--batch`` can't apply, and when undetected ``path`` still looks
    like a batch of several submissions (only a stray file beside them), instead of grading it as one
    upload that has no files at its top."""
    path = pathlib.Path(path)
    if flag:
        problem = batch_problem(path)
        if problem:
            raise NotegradeError(f"--batch: {problem}")
        return True
    if flag is False:
        return False
    if is_batch_folder(path):
        return True
    folders = submission_like_folders(path)
    if folders:
        names = ", ".join(p.name for p in folders[:3]) + (", ..." if len(folders) > 3 else "")
        raise NotegradeError(
            f"{path} looks like a batch of {len(folders)} submissions ({names}): it has no model.py etc. at its top, "
            f"and also holds {_listed(stray_files(path))}. Add --batch to grade each folder (other files are listed "
            "as ignored), or --no-batch to grade it as one upload")
    return False


def _listed(names: "list[str]") -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


IGNORED = "ignored: not a submission folder"


def ignored_rows(path: pathlib.Path) -> "list[dict]":
    """Summary rows (:func:`summary_table`, summary.csv) for the files beside a batch's submission folders."""
    return [{"name": name, "score": None, "total": None, "status": IGNORED, "seconds": None} for name in stray_files(path)]


def grade_batch(*, submissions: str | os.PathLike, autograder: str | os.PathLike,
                metadata: str | os.PathLike | None = None, out: str | os.PathLike, jobs: int = 1,
                python: str | os.PathLike | None = None, slurm=None) -> list[dict]:
    """Grade every submission directory in ``submissions`` (``jobs`` grader processes at a time, or
    with ``slurm``, a :class:`~autograder.instructor.slurm.grading.SlurmGrading`, as a Slurm job array).

    Returns one summary row per submission (``name, score, total, status, seconds, isolation``); writes
    ``out/<name>/results.json`` etc. and ``out/summary.csv`` (which also lists the files beside the
    submission folders as ignored, :func:`ignored_rows`).  One failure never stops the batch.
    """
    out = private_dir(out)  # 0700 when created: no other student reads these results
    folders = batch_folders(pathlib.Path(submissions))
    if slurm is not None:  # a Slurm job array: each task runs grade_folders over a shard
        rows = slurm.grade_batch(folders, autograder=autograder, metadata=metadata, out=out, python=python, jobs=jobs)
    else:  # the batch folder itself is a secret too: other students' work
        rows = grade_folders(folders, autograder=autograder, metadata=metadata, out=out, python=python, jobs=jobs,
                             private=(pathlib.Path(submissions),))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=["name", "score", "total", "status", "seconds", "isolation"],
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows + ignored_rows(pathlib.Path(submissions)))
    write_atomically(out / "summary.csv", table.getvalue(), mode=PRIVATE, fsync=False)
    return rows


def batch_folders(submissions: pathlib.Path) -> list[pathlib.Path]:
    """The submission directories of a batch, sorted."""
    return sorted(p for p in _entries(submissions) if p.is_dir())


def grade_folders(folders: "list[pathlib.Path]", *, autograder: str | os.PathLike, metadata: str | os.PathLike | None,
                  out: pathlib.Path, python: str | os.PathLike | None, jobs: int = 1, progress: bool = True,
                  stop_on_sigterm: bool = False, private: "tuple[pathlib.Path, ...]" = ()) -> list[dict]:
    """Each folder graded into ``out/<name>/``, ``jobs`` at a time (here, and in each ``grade DIR --slurm``
    task, which passes ``stop_on_sigterm``); their summary rows, in order (never raises for one).
    ``private``: the batch folder, which each grader refuses to use at the ``uid`` level while others may read it."""
    # quiet: each grader's own progress bar goes to its log, not across the batch's
    grade = BatchGrader(quiet=True, python=python, private=private)
    todo = [Job(folder.name, folder, pathlib.Path(out) / folder.name, metadata and pathlib.Path(metadata))
            for folder in folders]
    return [summary_row(graded) for graded in grade_each(todo, grade, autograder=autograder, parallel=jobs,
                                                          progress=progress, stop_on_sigterm=stop_on_sigterm)]


def summary_row(graded: Graded) -> dict:
    """A batch's row for one graded submission (``name, score, total, status, seconds``; ``isolation``)."""
    seconds = round(graded.seconds, 1)
    if graded.results is None:
        return {"name": graded.job.key, "score": None, "total": None, "status": f"failed: {graded.problem}"[:500],
                "seconds": seconds}
    results = graded.results
    total = (results.get("extra_data") or {}).get("total_points")
    return {"name": graded.job.key, "score": results.get("score"), "total": total,
            "status": "autograder error" if is_autograder_error(results) else "graded", "seconds": seconds,
            "isolation": isolation_of(results).get("level")}


def summary_table(rows: list[dict]) -> str:
    """A plain-text table of a batch's scores; rows with ``peak_mb`` (containers) add a peak-memory column."""
    width = max([len("submission")] + [len(r["name"]) for r in rows])
    peak = any("peak_mb" in r for r in rows)
    lines = [f"{'submission':<{width}}  {'score':>11}  {'time':>7}" + (f"  {'peak MB':>7}" if peak else "") + "  status"]
    for r in rows:
        score = ("-" if r["score"] is None else f"{fmt_points(r['score'])} / {fmt_points(r['total'])}" if r["total"]
                 else fmt_points(r["score"]))
        memory = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
        seconds = "-" if r.get("seconds") is None else f"{r['seconds']:.1f}s"
        lines.append(f"{r['name']:<{width}}  {score:>11}  {seconds:>7}" + (f"  {memory:>7}" if peak else "")
                     + f"  {r['status']}")
    return "\n".join(lines)
