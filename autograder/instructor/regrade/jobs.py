"""Grading the submissions of a regrade: ``--jobs`` at a time, resumable, one failure never fatal.

Kept apart from :mod:`autograder.instructor.regrade.command` (which reads the export and writes the
gradebooks) because this is the part that runs student code and decides what can be reused.  Each
submission is graded in ``submissions/<id>/`` by the local grader or, with ``--docker``, in a
container; ``grade_key.json`` holds the sha256s of the autograder, the rebuilt metadata and the
submission's files, written last, so a rerun skips exactly the grades that finished with the same
inputs (an "Autograder error" result gets no key: a rerun grades it again).  Whatever a grade
raises becomes that submission's error (and ``error.txt``).

Example
-------
>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "model.py").write_text("x = 1\\n")
>>> sha256_of(folder) == sha256_of(folder) != sha256_of(folder / "model.py")
True
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import pathlib
import tempfile
import traceback
from typing import Callable

from tqdm import tqdm

from autograder.errors import NotegradeError
from autograder.instructor.export.archive import ExportEntry
from autograder.results import is_autograder_error

GradeFn = Callable[..., dict]


def _file_digest(path: pathlib.Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:  # in chunks: a hostile submission may hold a 2 GB file
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def sha256_of(path: pathlib.Path) -> str:
    """sha256 of a file, or of a directory's relative paths and bytes (caches excluded)."""
    if path.is_file():
        return _file_digest(path).hex()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        digest.update(rel.encode() + b"\0" + _file_digest(file))
    return digest.hexdigest()


def default_grader(docker: bool, image: str | None, autograder: pathlib.Path, *, python: str | None = None,
                   base_image: str | None = None) -> GradeFn:
    """The grader used when the caller gives none: a local grader process (in the grading runtime built
    from the autograder's requirements.txt, or ``python``), or a container per submission."""
    if not docker:
        from autograder.instructor.grading.command import grade_submission

        # quiet: the grader's own progress bar goes to its log, not across ours
        return functools.partial(grade_submission, quiet=True, python=python)
    try:
        from autograder.instructor.grading.docker import fanout as docker_grade
    except ImportError:
        raise NotegradeError("--docker needs autograder/instructor/grading/docker/fanout.py, which this install lacks; "
                             "drop --docker to grade in local processes") from None
    # Fail fast when there is no engine, and build (or find) the image once, not per submission.
    client = docker_grade.docker_client()
    with tempfile.TemporaryDirectory(prefix="notegrade-regrade-") as tmp:
        source = docker_grade.unpack_autograder(autograder, pathlib.Path(tmp))
        tag = docker_grade.ensure_image(client, source=source, tag=image, base_image=base_image)
    return functools.partial(docker_grade.grade_submission, image=tag, client=client)


def grade_key(entry: ExportEntry, metadata: dict, autograder_sha: str) -> dict[str, str]:
    """What a grade depends on: the sha256s of the autograder, the rebuilt metadata and the files."""
    meta_text = json.dumps(metadata, indent=2, sort_keys=True)
    return {"autograder_sha256": autograder_sha, "metadata_sha256": hashlib.sha256(meta_text.encode()).hexdigest(),
            "submission_sha256": sha256_of(entry.folder)}


def earlier_grade(work: pathlib.Path, key: dict[str, str]) -> dict | None:
    """The results.json a finished earlier grade left in ``work`` with the same ``key``, else None."""
    key_path, results_path = work / "grade_key.json", work / "results.json"
    if key_path.is_file() and results_path.is_file():
        try:
            if json.loads(key_path.read_text()) == key:
                return json.loads(results_path.read_text())
        except (json.JSONDecodeError, OSError):
            pass  # a half-written earlier run: grade again
    return None


def _grade_one(entry: ExportEntry, *, work: pathlib.Path, metadata: dict, autograder: pathlib.Path,
               autograder_sha: str, grade: GradeFn) -> tuple[dict | None, str | None, bool]:
    """``(results, error, reused)`` for one submission; never raises."""
    work.mkdir(parents=True, exist_ok=True)
    meta_text = json.dumps(metadata, indent=2, sort_keys=True)
    key = grade_key(entry, metadata, autograder_sha)
    key_path, results_path = work / "grade_key.json", work / "results.json"
    earlier = earlier_grade(work, key)
    if earlier is not None:
        return earlier, None, True
    key_path.unlink(missing_ok=True)
    (work / "error.txt").unlink(missing_ok=True)
    (work / "submission_metadata.json").write_text(meta_text)
    try:
        results = grade(submission=entry.folder, autograder=autograder, metadata=work / "submission_metadata.json",
                        out=work / "graded")
    except Exception as err:  # noqa: BLE001 — one submission's failure must not stop the batch
        detail = f"{type(err).__name__}: {err}"
        (work / "error.txt").write_text(detail + "\n\n" + traceback.format_exc())
        return None, detail, False
    results_path.write_text(json.dumps(results, indent=2))
    # An autograder error is the grader's failure, not the student's grade (e.g. its process got
    # SIGTERM when a Slurm task was cancelled, or Ctrl-C): it shows in this run's gradebook, and
    # with no key a rerun grades it again instead of reusing it.
    if not is_autograder_error(results):
        key_path.write_text(json.dumps(key, indent=2))  # last: marks the grade complete for resume
    return results, None, False


def grade_all(jobs_in: list[tuple[ExportEntry, dict]], *, out: pathlib.Path, autograder: pathlib.Path,
              grade: GradeFn, jobs: int, progress: bool) -> dict[str, tuple[dict | None, str | None, bool]]:
    """``{entry key: (results, error, reused)}`` for every ``(entry, metadata)`` job; never raises for one."""
    autograder_sha = sha256_of(autograder)
    outcomes: dict[str, tuple[dict | None, str | None, bool]] = {}
    # Threads are enough: each grade runs in its own grader process (or container).
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(jobs_in), desc="regrade", unit="submission", disable=not progress) as bar:
        futures = {pool.submit(_grade_one, entry, work=out / "submissions" / entry.key, metadata=meta,
                               autograder=autograder, autograder_sha=autograder_sha, grade=grade): entry.key
                   for entry, meta in jobs_in}
        for future in cf.as_completed(futures):
            try:
                outcomes[futures[future]] = future.result()
            except Exception as err:  # noqa: BLE001 — e.g. an unreadable submission folder: that one only
                outcomes[futures[future]] = (None, f"{type(err).__name__}: {err}", False)
            bar.update(1)
    return outcomes
