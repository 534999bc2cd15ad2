"""Grade one submission in a temporary Gradescope layout, with the autograder's own code.

:func:`grade_submission` builds a private ``/autograder``-style root (``source/`` = the unpacked
autograder, ``submission/``, ``submission_metadata.json``, ``results/``) and runs ``python -m
autograder.run_autograder`` in a subprocess whose ``PYTHONPATH`` is the autograder's own code, so
the zip's code grades, as on Gradescope, in the grading runtime of :func:`grading_python`.  It
writes ``OUT/results.json``, ``OUT/report.html`` and the grader's log ``OUT/stdout.txt``.
``notegrade grade`` (:mod:`autograder.instructor.grading.run`) calls it for one submission; a batch,
a regrade and ``calibrate`` hand it to the one fan-out (:mod:`autograder.instructor.grading.fanout`)
as the grader of each submission, as a :class:`BatchGrader`, whose grader processes are forked from
a zygote that imported torch once (:mod:`.warm_graders`).

Example
-------
(Skipped by the doctest run: it needs an autograder zip and grades in the grading runtime, a
venv built on first use; ``tests/instructor/grading/`` runs it.)

>>> results = grade_submission(submission="sub", autograder="autograder.zip", out="graded")  # doctest: +SKIP
>>> results["score"]                                    # doctest: +SKIP
100.0
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

from autograder import layout
from autograder.atomic import PRIVATE, open_private, private_dir, write_atomically, write_json_atomically
from autograder.errors import NotegradeError
from autograder.instructor.grading.local import run_grader, secret_paths, stage_tree, stage_zip
from autograder.sandbox.cleanup import remove_tree

if TYPE_CHECKING:
    from autograder.instructor.grading.warm_graders import WarmGraders

# The grader keeps to the rubric's budget (<= 40 min, Gradescope's maximum); this is the outer
# safety net against a wedged grader process.
OUTER_TIMEOUT_S = 45 * 60
# Never graded, never a submission folder of a batch: what zipping on macOS or running Python leaves.
JUNK_NAMES = {"__pycache__", ".DS_Store", "__MACOSX"}


def _safe_extract(archive: pathlib.Path, dest: pathlib.Path) -> None:
    """Unzip, refusing entries that would land outside ``dest`` (``../`` or absolute paths)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                target = (dest / name).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise NotegradeError(f"{archive}: entry {name!r} would extract outside the target directory")
        stage_zip(archive, dest)  # iterative, bounded in depth and size
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:  # damaged or unsupported entries
        raise NotegradeError(f"{archive}: not a readable zip ({type(err).__name__}: {err})") from None


def _place(src: pathlib.Path, dest: pathlib.Path, what: str) -> None:
    """Copy a directory, or unpack a zip, into ``dest``."""
    if src.is_dir():
        # Links are copied as links, never the files they point to (as root that could pull an
        # unreadable file into the submission); iteratively, so a 1,200-deep folder is cut, not fatal.
        stage_tree(src, dest, skip=JUNK_NAMES)
    elif src.is_file() and zipfile.is_zipfile(src):
        dest.mkdir(parents=True)
        _safe_extract(src, dest)
    elif src.is_file() and (src.suffix.lower() == ".zip" or _starts_like_a_zip(src)):
        raise NotegradeError(f"{src}: not a readable zip ({_zip_error(src)}: damaged, cut short or no zip at all); "
                             f"the {what} must be a directory or a .zip file that unzips")
    elif src.exists():
        raise NotegradeError(f"{src}: the {what} must be a directory or a .zip file")
    else:
        raise NotegradeError(f"{src}: no such {what}")


def _starts_like_a_zip(path: pathlib.Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _zip_error(path: pathlib.Path) -> str:
    """What the zip reader says about a file that is no readable zip."""
    try:
        zipfile.ZipFile(path).close()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        return str(err) or type(err).__name__
    return "no end-of-archive record"


def _check_autograder(source: pathlib.Path, origin: pathlib.Path) -> None:
    missing = [name for name in (layout.RUBRIC_FILE, layout.HELDOUT_FILE, f"{layout.GRADING_PACKAGE}/run_autograder.py")
               if not (source / name).is_file()]
    if missing:
        raise NotegradeError(f"{origin}: not an autograder (missing {', '.join(missing)}); build one with "
                             "`notegrade build --rubric FILE --heldout FILE`")


def check_metadata_file(path: "str | os.PathLike") -> None:
    """A metadata file the instructor names (``--metadata``) must be one the late penalty can use: else a
    :class:`NotegradeError` naming it and what is wrong (never a silent grade without a penalty; only
    Gradescope's own missing file is lenient, in the grader)."""
    from autograder.late import metadata_problem

    path = pathlib.Path(path)
    fix = "give the submission_metadata.json Gradescope writes (created_at, assignment.due_date)"
    if not path.is_file():
        raise NotegradeError(f"{path}: no such metadata file; {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NotegradeError(f"metadata file {path} is not UTF-8 text (a JSON file is); {fix}") from None
    except json.JSONDecodeError as err:
        raise NotegradeError(f"metadata file {path} is not valid JSON ({err}); {fix}") from None
    except OSError as err:
        raise NotegradeError(f"metadata file {path} cannot be read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise NotegradeError(f"metadata file {path} holds a JSON {type(data).__name__}, not an object; {fix}")
    problem = metadata_problem(data)
    if problem:
        raise NotegradeError(f"metadata file {path} cannot date the submission ({problem}); {fix}")


def grade_submission(*, submission: str | os.PathLike, autograder: str | os.PathLike,
                     metadata: str | os.PathLike | None = None, out: str | os.PathLike,
                     quiet: bool = False, python: str | os.PathLike | None = None,
                     private: "tuple[str | os.PathLike, ...]" = (), warm: "WarmGraders | None" = None) -> dict:
    """Grade one submission in a temporary Gradescope layout; return the results.json dict.

    Writes ``out/results.json``, ``out/report.html`` (instructor view) and ``out/stdout.txt``.
    ``quiet`` also captures the grader's stderr (its progress bar) into the log.  ``python`` is
    the interpreter that grades; by default the grading runtime built from the autograder's own
    requirements.txt (:func:`grading_python`), as on Gradescope.  Another one needs torch, numpy,
    safetensors and gradescope-utils; results.json's ``extra_data["runtime"]`` says which graded.
    ``private``: more paths the grader must find closed to others at the ``uid`` level (a batch or
    export folder), besides the autograder's own (:func:`.local.secret_paths`).  Every output is
    0600 in 0700 folders.  ``warm``: a batch's zygotes (:class:`BatchGrader` passes them), which fork
    the grader with torch already imported; the grade is the same.
    """
    submission, autograder, out = pathlib.Path(submission), pathlib.Path(autograder), pathlib.Path(out)
    for path, what in ((submission, "submission"), (autograder, "autograder")):
        if not path.exists():
            raise NotegradeError(f"{path}: no such {what} (a directory or a .zip file)")
    if metadata is not None:
        check_metadata_file(metadata)
    private_dir(out)
    root = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-grade-"))  # 0700: the held-out file is read from here
    try:
        source = layout.source_dir(root)
        _place(autograder, source, "autograder")
        _check_autograder(source, autograder)
        _place(submission, layout.submission_dir(root), "submission")
        if metadata is not None:
            shutil.copyfile(metadata, layout.metadata_file(root))
        layout.results_dir(root).mkdir()
        python, runtime_env = grading_python(source, python, quiet=quiet)
        from autograder.sandbox.exposure import PRIVATE_PATHS_ENV, env_value

        env = {**os.environ, "AUTOGRADER_ROOT": str(root), "PYTHONPATH": str(source),
               PRIVATE_PATHS_ENV: env_value([*secret_paths(autograder), *private])}
        env.pop("PYTHONSTARTUP", None)
        for key, value in runtime_env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        log_path = out / "stdout.txt"
        with open_private(log_path) as log:
            code = run_grader([str(python or sys.executable), "-m", "autograder.run_autograder"], cwd=source,
                              env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log if quiet else None,
                              timeout_s=OUTER_TIMEOUT_S, warm=warm)
            if code is None and not layout.results_file(root).is_file():
                raise NotegradeError(f"the grader did not finish within {OUTER_TIMEOUT_S} s; see {log_path}")
        try:
            results = json.loads(layout.results_file(root).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise NotegradeError(f"the grader left no valid results.json ({err}); its log {log_path} ends with:\n{tail}") from None
        from autograder.report import html_report

        write_json_atomically(out / layout.RESULTS_FILE, results, mode=PRIVATE)
        write_atomically(out / "report.html", html_report(results, audience="instructor"), mode=PRIVATE, fsync=False)
        return results
    finally:
        remove_tree(root)  # iterative: a submission's deep folder cannot make this raise


class BatchGrader:
    """:func:`grade_submission` for each submission of a batch (a fan-out's grader), its processes forked
    warm (:mod:`.warm_graders`: one zygote per job slot); ``options`` are grade_submission's.  A context
    manager: :func:`.fanout.grade_each` enters it (the zygotes start with the first submission), and
    leaving it ends them; outside it each grader is a new process.  It pickles without its zygotes
    (a Slurm task gets the grader and starts its own)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.warm: "WarmGraders | None" = None

    def __call__(self, **job: Any) -> dict:
        return grade_submission(**job, **self.options, warm=self.warm)

    def __enter__(self) -> "BatchGrader":
        from autograder.instructor.grading.warm_graders import WarmGraders

        self.warm = WarmGraders()
        return self

    def __exit__(self, *exc: Any) -> None:
        warm, self.warm = self.warm, None
        if warm is not None:
            warm.close()

    def __getstate__(self) -> dict:
        return {"options": self.options, "warm": None}


def grading_python(source: pathlib.Path, python: "str | os.PathLike | None", *, quiet: bool = False
                   ) -> "tuple[str, dict[str, str | None]]":
    """(the interpreter that grades, environment changes for the grader).

    ``python`` given: that one ("custom" runtime; the sandbox's worker follows ``$NOTEGRADE_WORKER_PYTHON``
    if set).  Otherwise the grading runtime, a cached venv built from the autograder's requirements.txt
    (:mod:`autograder.instructor.grading.runtime`), whose interpreter then also runs the worker."""
    if python is not None:
        return str(python), {"NOTEGRADE_RUNTIME_KIND": "custom"}
    from autograder.import_policy import requirements_of
    from autograder.instructor.grading.runtime import ensure_runtime

    requirements = requirements_of(source)
    if requirements is None:
        raise NotegradeError("the autograder has no requirements.txt to build its grading runtime from; rebuild it "
                             "with `notegrade build`, or grade with --python PYTHON")
    wheels = source / "wheels"
    runtime = ensure_runtime(requirements, wheels=wheels if wheels.is_dir() else None,
                             log=lambda line: print(f"[notegrade] {line}", file=sys.stderr, flush=True))
    if runtime.built and not quiet:
        print(f"[notegrade] grading runtime ready in {runtime.seconds:.0f} s: {runtime.python} (torch {runtime.torch})",
              file=sys.stderr, flush=True)
    return str(runtime.python), {"NOTEGRADE_RUNTIME_KIND": "grading-venv", "NOTEGRADE_WORKER_PYTHON": None}
