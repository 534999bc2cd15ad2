"""Grade a batch: a folder of submission folders, each graded on its own, then a summary.

A folder is a batch only when it holds nothing but submission folders (:func:`is_batch_folder`;
``--batch`` says so explicitly, and :func:`batch_problem` says why a folder isn't one).  Each
submission goes through :func:`autograder.instructor.grading.one_submission.grade_submission` into
``OUT/<name>/`` (``jobs`` grader processes at a time, or as a Slurm job array); one that breaks
never stops the others, and ``OUT/summary.csv`` lists them all.

Example
-------
>>> print(summary_table([{"name": "alice", "score": 90.0, "total": 100.0, "seconds": 12.3, "status": "graded"}]))
submission        score     time  status
alice          90 / 100    12.3s  graded
"""
from __future__ import annotations

import concurrent.futures
import csv
import functools
import os
import pathlib
import time

from autograder.errors import NotegradeError
from autograder.instructor.grading.local import isolation_of, private_dir
from autograder.instructor.grading.one_submission import JUNK_NAMES, grade_submission
from autograder.results import is_autograder_error


def _is_submission_folder(path: pathlib.Path) -> bool:
    """A folder that holds one student's work: an assignment file at its top or inside one folder."""
    from autograder.upload import ASSIGNMENT_FILES, single_folder

    folder = single_folder(path, ASSIGNMENT_FILES)
    base = path / folder if folder else path
    return any((base / name).exists() for name in ASSIGNMENT_FILES)


def is_batch_folder(path: pathlib.Path) -> bool:
    """A directory is a batch when it holds nothing but submission folders (junk like .DS_Store aside).

    Never by guess: a stray notes.txt next to the folders makes it one submission (and ``--batch``
    then says why it isn't one); a single folder inside is one submission graded from that folder
    (Gradescope's layout for a zipped folder), never a batch of one."""
    if not path.is_dir() or _is_submission_folder(path):
        return False
    entries = [p for p in path.iterdir() if p.name not in JUNK_NAMES and not p.name.startswith(".")]
    return len(entries) > 1 and all(p.is_dir() for p in entries)


def batch_problem(path: pathlib.Path) -> "str | None":
    """Why ``path`` can't be graded as a batch (``--batch``), or None."""
    if not path.is_dir():
        return f"{path} is not a folder of submission folders"
    entries = [p for p in path.iterdir() if p.name not in JUNK_NAMES and not p.name.startswith(".")]
    stray = [p.name for p in entries if not p.is_dir()]
    if stray:
        return (f"{path} holds files besides submission folders ({', '.join(sorted(stray)[:5])}): move them out, "
                "or grade it as one submission (without --batch)")
    if not entries:
        return f"{path} holds no submission folders"
    return None


def grade_batch(*, submissions: str | os.PathLike, autograder: str | os.PathLike,
                metadata: str | os.PathLike | None = None, out: str | os.PathLike, jobs: int = 1,
                python: str | os.PathLike | None = None, slurm=None) -> list[dict]:
    """Grade every submission directory in ``submissions`` (``jobs`` grader processes at a time, or
    with ``slurm``, a :class:`~autograder.instructor.slurm.grading.SlurmGrading`, as a Slurm job array).

    Returns one summary row per submission (``name, score, total, status, seconds, isolation``); writes
    ``out/<name>/results.json`` etc. and ``out/summary.csv``.  One failure never stops the batch.
    """
    out = private_dir(out)  # 0700 when created: no other student reads these results
    folders = batch_folders(pathlib.Path(submissions))
    if slurm is not None:  # a Slurm job array: each task runs grade_folders over a shard
        rows = slurm.grade_batch(folders, autograder=autograder, metadata=metadata, out=out, python=python, jobs=jobs)
    else:
        rows = grade_folders(folders, autograder=autograder, metadata=metadata, out=out, python=python, jobs=jobs)
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "score", "total", "status", "seconds", "isolation"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def batch_folders(submissions: pathlib.Path) -> list[pathlib.Path]:
    """The submission directories of a batch, sorted."""
    return sorted(p for p in submissions.iterdir() if p.is_dir() and p.name not in JUNK_NAMES and not p.name.startswith("."))


def grade_folders(folders: "list[pathlib.Path]", *, autograder: str | os.PathLike, metadata: str | os.PathLike | None,
                  out: pathlib.Path, python: str | os.PathLike | None, jobs: int = 1, progress: bool = True) -> list[dict]:
    """:func:`grade_folder` over ``folders``, ``jobs`` at a time, in order (here and in a Slurm task)."""
    from tqdm import tqdm

    one = functools.partial(grade_folder, autograder=autograder, metadata=metadata, out=out, python=python)
    # Threads only wait: each grading runs in its own grader process (process parallelism).
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(tqdm(pool.map(one, folders), total=len(folders), desc="grading", unit="submission",
                         disable=None if progress else True))


def grade_folder(folder: pathlib.Path, *, autograder: str | os.PathLike, metadata: str | os.PathLike | None,
                 out: pathlib.Path, python: str | os.PathLike | None = None) -> dict:
    """Grade one submission of a batch into ``out/<name>/``; its summary row (never raises for it)."""
    started = time.monotonic()
    try:
        results = grade_submission(submission=folder, autograder=autograder, metadata=metadata,
                                   out=pathlib.Path(out) / folder.name, quiet=True, python=python)
        errored = is_autograder_error(results)
        total = (results.get("extra_data") or {}).get("total_points")
        return {"name": folder.name, "score": results.get("score"), "total": total,
                "status": "autograder error" if errored else "graded", "seconds": round(time.monotonic() - started, 1),
                "isolation": isolation_of(results).get("level")}
    except Exception as err:  # noqa: BLE001 - one broken submission never stops the batch
        why = str(err) if isinstance(err, NotegradeError) else f"{type(err).__name__}: {err}"
        return {"name": folder.name, "score": None, "total": None, "status": f"failed: {why}"[:500],
                "seconds": round(time.monotonic() - started, 1)}


def summary_table(rows: list[dict]) -> str:
    """A plain-text table of a batch's scores."""
    width = max([len("submission")] + [len(r["name"]) for r in rows])
    lines = [f"{'submission':<{width}}  {'score':>11}  {'time':>7}  status"]
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:g} / {r['total']:g}" if r["total"] else f"{r['score']:g}"
        lines.append(f"{r['name']:<{width}}  {score:>11}  {r['seconds']:>6.1f}s  {r['status']}")
    return "\n".join(lines)
