"""Grade a submission locally exactly as Gradescope would, and print its report.

``notegrade grade SUBMISSION --autograder ZIP_OR_DIR`` builds a temporary ``/autograder``-style
root (``source/`` = the unpacked autograder, ``submission/``, ``submission_metadata.json``,
``results/``) and runs ``python -m autograder.run_autograder`` in a subprocess whose
``PYTHONPATH`` is the autograder's own code, so the zip's code grades, as on Gradescope.  It
writes ``OUT/results.json``, ``OUT/report.html`` and the grader's log ``OUT/stdout.txt``.
SUBMISSION may be a directory (or zip) of one student's files, or a directory of such
directories: then each is graded (``--jobs`` at a time) into ``OUT/<name>/`` plus a summary.

Example
-------
>>> from autograder.grade import grade_submission       # doctest: +SKIP
>>> results = grade_submission(submission="sub", autograder="autograder.zip", out="graded")  # doctest: +SKIP
>>> results["score"]                                    # doctest: +SKIP
100.0
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

from autograder.errors import NotegradeError
from autograder.sandbox.cleanup import remove_tree
from autograder.local_grading import isolation_of, isolation_warning, private_dir, run_grader, stage_tree, stage_zip

EXAMPLES = """examples:
  notegrade grade my_submission/ --autograder autograder.zip
  notegrade grade my_submission/ --autograder autograder_dir/ --metadata submission_metadata.json --out graded/
  notegrade grade all_submissions/ --autograder autograder.zip --jobs 2 --out graded/
  notegrade grade my_submission/ --autograder autograder.zip --docker --image notegrade-autograder
  notegrade grade my_submission/ --autograder autograder.zip --docker --base-image my-local-base:bookworm
"""
# The grader keeps to the rubric's budget (<= 40 min, Gradescope's maximum); this is the outer
# safety net against a wedged grader process.
OUTER_TIMEOUT_S = 45 * 60
_SKIP = {"__pycache__", ".DS_Store", "__MACOSX"}


def _safe_extract(archive: pathlib.Path, dest: pathlib.Path) -> None:
    """Unzip, refusing entries that would land outside ``dest`` (``../`` or absolute paths)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                target = (dest / name).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise NotegradeError(f"{archive}: entry {name!r} would extract outside the target directory")
        stage_zip(archive, dest)  # iterative, bounded in depth and size
    except zipfile.BadZipFile as err:
        raise NotegradeError(f"{archive}: not a valid zip file ({err})") from None


def _place(src: pathlib.Path, dest: pathlib.Path, what: str) -> None:
    """Copy a directory, or unpack a zip, into ``dest``."""
    if src.is_dir():
        # Links are copied as links, never the files they point to (as root that could pull an
        # unreadable file into the submission); iteratively, so a 1,200-deep folder is cut, not fatal.
        stage_tree(src, dest, skip=_SKIP)
    elif src.is_file() and zipfile.is_zipfile(src):
        dest.mkdir(parents=True)
        _safe_extract(src, dest)
    elif src.exists():
        raise NotegradeError(f"{src}: the {what} must be a directory or a .zip file")
    else:
        raise NotegradeError(f"{src}: no such {what}")


def _check_autograder(source: pathlib.Path, origin: pathlib.Path) -> None:
    missing = [name for name in ("rubric.toml", "heldout.safetensors", "autograder/run_autograder.py")
               if not (source / name).is_file()]
    if missing:
        raise NotegradeError(f"{origin}: not an autograder (missing {', '.join(missing)}); build one with "
                             "`notegrade build --rubric FILE --heldout FILE`")


def grade_submission(*, submission: str | os.PathLike, autograder: str | os.PathLike,
                     metadata: str | os.PathLike | None = None, out: str | os.PathLike,
                     quiet: bool = False, python: str | os.PathLike | None = None) -> dict:
    """Grade one submission in a temporary Gradescope layout; return the results.json dict.

    Writes ``out/results.json``, ``out/report.html`` (instructor view) and ``out/stdout.txt``.
    ``quiet`` also captures the grader's stderr (its progress bar) into the log.  ``python`` is
    the interpreter that grades; by default the grading runtime built from the autograder's own
    requirements.txt (:func:`grading_python`), as on Gradescope.  Another one needs torch, numpy,
    safetensors and gradescope-utils; results.json's ``extra_data["runtime"]`` says which graded.
    """
    submission, autograder, out = pathlib.Path(submission), pathlib.Path(autograder), pathlib.Path(out)
    for path, what in ((submission, "submission"), (autograder, "autograder")):
        if not path.exists():
            raise NotegradeError(f"{path}: no such {what} (a directory or a .zip file)")
    if metadata is not None and not pathlib.Path(metadata).is_file():
        raise NotegradeError(f"{metadata}: no such metadata file")
    private_dir(out)
    root = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-grade-"))  # 0700: the held-out file is read from here
    try:
        _place(autograder, root / "source", "autograder")
        _check_autograder(root / "source", autograder)
        _place(submission, root / "submission", "submission")
        if metadata is not None:
            shutil.copyfile(metadata, root / "submission_metadata.json")
        (root / "results").mkdir()
        python, runtime_env = grading_python(root / "source", python, quiet=quiet)
        env = {**os.environ, "AUTOGRADER_ROOT": str(root), "PYTHONPATH": str(root / "source")}
        env.pop("PYTHONSTARTUP", None)
        for key, value in runtime_env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        log_path = out / "stdout.txt"
        with open(log_path, "wb") as log:
            code = run_grader([str(python or sys.executable), "-m", "autograder.run_autograder"], cwd=root / "source",
                              env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log if quiet else None,
                              timeout_s=OUTER_TIMEOUT_S)
            if code is None and not (root / "results" / "results.json").is_file():
                raise NotegradeError(f"the grader did not finish within {OUTER_TIMEOUT_S} s; see {log_path}")
        try:
            results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise NotegradeError(f"the grader left no valid results.json ({err}); its log {log_path} ends with:\n{tail}") from None
        from autograder.report import html_report

        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (out / "report.html").write_text(html_report(results, audience="instructor"), encoding="utf-8")
        return results
    finally:
        remove_tree(root)  # iterative: a submission's deep folder cannot make this raise


def grading_python(source: pathlib.Path, python: "str | os.PathLike | None", *, quiet: bool = False
                   ) -> "tuple[str, dict[str, str | None]]":
    """(the interpreter that grades, environment changes for the grader).

    ``python`` given: that one ("custom" runtime; the sandbox's worker follows ``$NOTEGRADE_WORKER_PYTHON``
    if set).  Otherwise the grading runtime, a cached venv built from the autograder's requirements.txt
    (:mod:`autograder.instructor.grading_runtime`), whose interpreter then also runs the worker."""
    if python is not None:
        return str(python), {"NOTEGRADE_RUNTIME_KIND": "custom"}
    from autograder.import_policy import requirements_of
    from autograder.instructor.grading_runtime import ensure_runtime

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


def _is_submission_folder(path: pathlib.Path) -> bool:
    """A folder that holds one student's work: an assignment file at its top or inside one folder."""
    from autograder.submission import ASSIGNMENT_FILES, single_folder

    folder = single_folder(path, ASSIGNMENT_FILES)
    base = path / folder if folder else path
    return any((base / name).exists() for name in ASSIGNMENT_FILES)


def _is_batch(path: pathlib.Path) -> bool:
    """A directory is a batch when it holds nothing but submission folders (junk like .DS_Store aside).

    Never by guess: a stray notes.txt next to the folders makes it one submission (and ``--batch``
    then says why it isn't one); a single folder inside is one submission graded from that folder
    (Gradescope's layout for a zipped folder), never a batch of one."""
    if not path.is_dir() or _is_submission_folder(path):
        return False
    entries = [p for p in path.iterdir() if p.name not in _SKIP and not p.name.startswith(".")]
    return len(entries) > 1 and all(p.is_dir() for p in entries)


def batch_problem(path: pathlib.Path) -> "str | None":
    """Why ``path`` can't be graded as a batch (``--batch``), or None."""
    if not path.is_dir():
        return f"{path} is not a folder of submission folders"
    entries = [p for p in path.iterdir() if p.name not in _SKIP and not p.name.startswith(".")]
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

    Returns one summary row per submission (``name, score, total, status, seconds``); writes
    ``out/<name>/results.json`` etc. and ``out/summary.csv``.  One failure never stops the batch.
    """
    from tqdm import tqdm

    out = private_dir(out)  # 0700 when created: no other student reads these results
    folders = batch_folders(pathlib.Path(submissions))
    one = functools.partial(grade_folder, autograder=autograder, metadata=metadata, out=out, python=python)
    if slurm is not None:  # a Slurm job array: each task runs grade_folder over a shard
        rows = slurm.grade_batch(folders, autograder=autograder, metadata=metadata, out=out, python=python, jobs=jobs)
    else:
        # Threads only wait: each grading runs in its own grader process (process parallelism).
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            rows = list(tqdm(pool.map(one, folders), total=len(folders), desc="grading", unit="submission", disable=None))
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "score", "total", "status", "seconds"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def batch_folders(submissions: pathlib.Path) -> list[pathlib.Path]:
    """The submission directories of a batch, sorted."""
    return sorted(p for p in submissions.iterdir() if p.is_dir() and p.name not in _SKIP and not p.name.startswith("."))


def grade_folder(folder: pathlib.Path, *, autograder: str | os.PathLike, metadata: str | os.PathLike | None,
                 out: pathlib.Path, python: str | os.PathLike | None = None) -> dict:
    """Grade one submission of a batch into ``out/<name>/``; its summary row (never raises for it)."""
    started = time.monotonic()
    try:
        results = grade_submission(submission=folder, autograder=autograder, metadata=metadata,
                                   out=pathlib.Path(out) / folder.name, quiet=True, python=python)
        errored = any((t.get("extra_data") or {}).get("kind") == "autograder_error" for t in results.get("tests", []))
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", type=pathlib.Path,
                        help="a submission directory or zip, or a directory of submission directories")
    parser.add_argument("--autograder", type=pathlib.Path, required=True,
                        help="the autograder zip (from `notegrade build`) or its unpacked directory")
    parser.add_argument("--metadata", type=pathlib.Path, default=None,
                        help="a submission_metadata.json (for the late penalty); without it no penalty applies")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("graded"),
                        help="where results.json, report.html and the grader's stdout.txt go")
    parser.add_argument("--batch", action="store_true",
                        help="SUBMISSION is a folder of submission folders (detected when it holds nothing else)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="submissions graded in parallel (with a batch; with --slurm: in each array task)")
    parser.add_argument("--docker", action="store_true", help="grade inside the autograder's Docker image, as Gradescope does")
    parser.add_argument("--image", default=None, help="with --docker: the image tag to build or reuse")
    parser.add_argument("--base-image", default=None,
                        help="with --docker: the image to build FROM (default: $NOTEGRADE_BASE_IMAGE, else "
                             "gradescope/autograder-base:latest)")
    parser.add_argument("--python", default=None,
                        help="the interpreter that grades (default: a cached venv built from the autograder's "
                             "requirements.txt, as setup.sh builds on Gradescope)")
    parser.add_argument("--isolation", choices=("auto", "bubblewrap", "uid", "none"), default=None,
                        help="how student code is isolated (default: $NOTEGRADE_ISOLATION, else auto: bubblewrap where "
                             "the machine allows namespaces, else a separate uid; both need root)")
    try:  # the instructor tools are absent from the autograder zip; --slurm is theirs
        from autograder.instructor.slurm import options as slurm_options
    except ImportError:
        return
    slurm_options.add_arguments(parser)


def main(*, submission: pathlib.Path, autograder: pathlib.Path, metadata: pathlib.Path | None = None,
         out: pathlib.Path = pathlib.Path("graded"), jobs: int = 1, python: str | None = None, slurm=None,
         is_batch: "bool | None" = None) -> int:
    """Grade one submission (print its report) or a directory of them (print a summary; ``slurm``: on Slurm).

    ``is_batch``: True (``--batch``), or None: a batch only when the folder holds nothing but
    submission folders (see :func:`_is_batch`)."""
    from autograder.report import markdown_report

    if jobs < 1:
        raise NotegradeError(f"--jobs must be at least 1, got {jobs}")
    if is_batch is None:
        is_batch = _is_batch(submission)
    elif is_batch and batch_problem(submission):
        raise NotegradeError(f"--batch: {batch_problem(submission)}")
    if slurm is not None and not is_batch:
        raise NotegradeError(f"--slurm grades a batch: {submission} is not a directory of submission directories")
    if jobs > 1 and not is_batch:
        raise NotegradeError(f"--jobs {jobs} grades several submissions at once, but {submission} is one submission "
                             "(a batch is a folder holding nothing but submission folders; say so with --batch)")
    if is_batch:
        rows = grade_batch(submissions=submission, autograder=autograder, metadata=metadata, out=out, jobs=jobs,
                           python=python, slurm=slurm)
        print(summary_table(rows))
        print(f"\nresults in {out}/<submission>/results.json; summary in {out / 'summary.csv'}")
        _warn_without_isolation([r.get("isolation") for r in rows if r.get("isolation")])
        return 0 if all(r["status"] == "graded" for r in rows) else 1
    results = grade_submission(submission=submission, autograder=autograder, metadata=metadata, out=out, python=python)
    print(markdown_report(results, audience="instructor"))
    print(f"results: {out / 'results.json'}  report: {out / 'report.html'}  grader log: {out / 'stdout.txt'}")
    _warn_without_isolation([isolation_of(results).get("level")])
    errored = any((t.get("extra_data") or {}).get("kind") == "autograder_error" for t in results.get("tests", []))
    return 1 if errored else 0


def _warn_without_isolation(levels: list) -> None:
    line = isolation_warning(levels)
    if line:
        print(line, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.isolation:  # read by every grader process this one starts (autograder.sandbox.isolation)
        os.environ["NOTEGRADE_ISOLATION"] = args.isolation
    slurm = None
    if hasattr(args, "slurm"):  # refuses --slurm with --docker, and Slurm flags without --slurm
        from autograder.instructor.slurm.grading import from_arguments as slurm_grading

        slurm = slurm_grading(args, command="grade")
    if args.docker:
        try:
            from autograder.instructor import docker_grade
        except ImportError:
            raise NotegradeError("--docker needs autograder/instructor/docker_grade.py, which this install lacks; "
                                 "drop --docker to grade in local processes") from None
        if args.python is not None:
            raise NotegradeError("--python does not apply with --docker (the image's own runtime grades)")
        return int(docker_grade.main(submission=args.submission, autograder=args.autograder, metadata=args.metadata,
                                     out=args.out, image=args.image, jobs=args.jobs, base_image=args.base_image,
                                     batch=True if args.batch else None) or 0)
    for flag, value in (("--image", args.image), ("--base-image", args.base_image)):
        if value is not None:
            raise NotegradeError(f"{flag} only applies with --docker")
    return main(submission=args.submission, autograder=args.autograder, metadata=args.metadata, out=args.out,
                jobs=args.jobs, python=args.python, slurm=slurm, is_batch=True if args.batch else None)
