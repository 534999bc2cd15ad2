"""Grading the submissions of a regrade: ``--jobs`` at a time, resumable, one failure never fatal.

Kept apart from :mod:`autograder.instructor.regrade.run` (which reads the export and writes the
gradebooks) because this is the part that runs student code and decides what can be reused.  Each
submission is graded in ``submissions/<id>/`` by the local grader or, with ``--docker``, in a
container, through the one fan-out (:mod:`autograder.instructor.grading.fanout`), here and in each
``regrade --slurm`` task.  ``grade_key.json`` holds the sha256s of the autograder, the rebuilt
metadata and the submission's files, written last and as soon as each grade ends, so a rerun skips
exactly the grades that finished with the same inputs (an "Autograder error" result gets no key: a
rerun grades it again).  Whatever a grade raises becomes that submission's error (and ``error.txt``).

Example
-------
>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "model.py").write_text("x = 1\\n")
>>> sha256_of(folder) == sha256_of(folder) != sha256_of(folder / "model.py")
True
"""
from __future__ import annotations

import functools
import hashlib
import json
import pathlib

from autograder.atomic import PRIVATE, private_dir, write_atomically
from autograder.errors import NotegradeError
from autograder.instructor.export.archive import ExportEntry
from autograder.instructor.grading.fanout import Graded, GradeFn, Job, grade_each
from autograder.results import is_autograder_error

Outcome = tuple[dict | None, str | None, bool]  # (results, error, reused) of one export entry


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
                   base_image: str | None = None, private: "tuple[pathlib.Path, ...]" = ()) -> GradeFn:
    """The grader used when the caller gives none: a local grader process (in the grading runtime built
    from the autograder's requirements.txt, or ``python``), or a container per submission.  ``private``:
    the export, which a local grader refuses to use at the ``uid`` level while others may read it."""
    if not docker:
        from autograder.instructor.grading.one_submission import BatchGrader

        # quiet: the grader's own progress bar goes to its log, not across ours
        return BatchGrader(quiet=True, python=python, private=private)
    try:
        from autograder.instructor.grading.docker import grading as docker_grading
    except ImportError:
        raise NotegradeError("--docker needs autograder/instructor/grading/docker/grading.py, which this install "
                             "lacks; drop --docker to grade in local processes") from None
    # Fails fast when there is no engine, and builds (or finds) the image once, not per submission.
    return docker_grading.container_grader(autograder, image=image, base_image=base_image)


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


def _prepare(work: pathlib.Path, *, metadata: dict, key: dict[str, str]) -> "dict | None":
    """The results of a finished earlier grade with the same ``key``; else ``work`` readied for grading (None)."""
    private_dir(work)  # a student's metadata and results: the instructor's only
    earlier = earlier_grade(work, key)
    if earlier is not None:
        return earlier
    (work / "grade_key.json").unlink(missing_ok=True)
    (work / "error.txt").unlink(missing_ok=True)
    write_atomically(work / "submission_metadata.json", json.dumps(metadata, indent=2, sort_keys=True), mode=PRIVATE,
                     fsync=False)
    return None


def _error_line(err: BaseException) -> str:
    """How a regrade names what stopped a grade (grades.csv, problems.txt): always with its type."""
    return f"{type(err).__name__}: {err}"


def _record(graded: Graded, *, keys: dict[str, dict[str, str]]) -> None:
    """Right after one grade ends (in its grading thread): results.json and the key, or error.txt."""
    work = graded.job.out.parent
    if graded.results is None:
        write_atomically(work / "error.txt", _error_line(graded.error) + "\n\n" + graded.details, mode=PRIVATE,
                         fsync=False)
        return
    write_atomically(work / "results.json", json.dumps(graded.results, indent=2), mode=PRIVATE, fsync=False)
    # An autograder error is the grader's failure, not the student's grade (e.g. its process got
    # SIGTERM when a Slurm task was cancelled, or Ctrl-C): it shows in this run's gradebook, and
    # with no key a rerun grades it again instead of reusing it.
    if not is_autograder_error(graded.results):
        write_atomically(work / "grade_key.json", json.dumps(keys[graded.job.key], indent=2),  # last: marks it complete
                         mode=PRIVATE, fsync=False)


def grade_all(jobs_in: list[tuple[ExportEntry, dict]], *, out: pathlib.Path, autograder: pathlib.Path,
              grade: GradeFn, jobs: int, progress: bool, stop_on_sigterm: bool = False) -> dict[str, Outcome]:
    """``{entry key: (results, error, reused)}`` for every ``(entry, metadata)`` job; never raises for one.

    ``stop_on_sigterm``: a ``regrade --slurm`` task (SIGTERM stops its graders, see the fan-out)."""
    autograder_sha = sha256_of(autograder)
    outcomes: dict[str, Outcome] = {}
    keys: dict[str, dict[str, str]] = {}
    todo: list[Job] = []
    for entry, meta in jobs_in:
        work = out / "submissions" / entry.key
        try:
            keys[entry.key] = grade_key(entry, meta, autograder_sha)
            earlier = _prepare(work, metadata=meta, key=keys[entry.key])
        except Exception as err:  # noqa: BLE001 - e.g. an unreadable submission folder: that one only
            outcomes[entry.key] = (None, _error_line(err), False)
            continue
        if earlier is not None:
            outcomes[entry.key] = (earlier, None, True)
        else:
            todo.append(Job(entry.key, entry.folder, work / "graded", work / "submission_metadata.json"))
    for graded in grade_each(todo, grade, autograder=autograder, parallel=jobs, progress=progress, desc="regrade",
                             on_done=functools.partial(_record, keys=keys), stop_on_sigterm=stop_on_sigterm):
        outcomes[graded.job.key] = (graded.results, None if graded.error is None else _error_line(graded.error), False)
    return outcomes
