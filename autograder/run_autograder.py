"""Grade one submission in Gradescope's layout and always leave ``results/results.json``.

The root is ``AUTOGRADER_ROOT`` (default ``/autograder``) and holds ``source/`` (the unpacked
autograder: ``rubric.toml``, ``heldout.safetensors``, this package), ``submission/``,
``submission_metadata.json`` and ``results/``.  Each rubric item's check runs in the sandbox
within min(item timeout, what is left of the rubric's global budget); an item that can't start
in time is "not run: time budget exhausted", with its points withheld and said so.  results.json
is written atomically in ``finally:`` whatever happens; when the grader itself fails it holds a
visible "Autograder error" test, and the traceback goes to a hidden test and to stdout (which
Gradescope shows to instructors only).

Run it as ``python -m autograder.run_autograder`` (what the zip's ``run_autograder`` does).

Example
-------
>>> import os, tempfile
>>> root = tempfile.mkdtemp()            # no rubric: still a valid results.json, explaining why
>>> results = main(root=root)  # doctest: +ELLIPSIS
[notegrade] autograder error:
...NotegradeError: .../source/rubric.toml: rubric file not found
<BLANKLINE>
>>> results["score"], results["tests"][0]["name"]
(0.0, 'Autograder error')
>>> os.path.isfile(os.path.join(root, "results", "results.json"))
True
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

from autograder import layout
from autograder.atomic import write_json_atomically
from autograder.errors import NotegradeError
from autograder.items import MIN_ITEM_SECONDS, grade_items  # noqa: F401  (re-exported; shared with the self-check)
from autograder.upload import prepare as prepare_submission

# Only the standard library (and the stdlib-only modules above) is imported up here, so `python -m` installs its SIGTERM handler
# within milliseconds; the grading modules (torch, gradescope-utils) are imported by `_grade`,
# still before any student code runs, so a submission that rewrites files under source/
# (possible when not running as root) can't change the grader.

DEFAULT_ROOT = layout.DEFAULT_ROOT


class _Terminated(BaseException):
    """SIGTERM (Gradescope's or a user's): stop grading but still write results.json.

    A BaseException, so no ``except Exception`` in a check can swallow it."""



def _names(names: "list[str]", most: int = 50) -> str:
    r"""File names for the log, comma-separated; a name with control characters (the student chose it,
    and it could rewrite the terminal) is shown escaped.

    >>> _names(["model.py", "a\x1b[2Jb"]), _names([]), _names(["x"] * 3, most=2)
    ("model.py, 'a\\x1b[2Jb'", 'none', 'x, x and 1 more')
    """
    if not names:
        return "none"
    shown = ", ".join(n if n.isprintable() else repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")

def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated(f"the grader received signal {signum} and stopped early")


def _open_sandbox(*, submission: pathlib.Path, limits: dict, hide: list[pathlib.Path],
                  private: "list[pathlib.Path] | tuple" = ()) -> Any:
    """The worker sandbox with the rubric's limits; as root it runs student code as an unprivileged
    user and strips other users' access to ``hide`` (rubric, held-out labels, metadata, results);
    at the ``uid`` level it refuses to start while one of ``private`` is still open to others."""
    from autograder.harness.device import DEVICE_ENV, select_device
    from autograder.sandbox import Sandbox, SandboxLimits

    # Held-out inference on the GPU when this machine has one (a Slurm GPU node), unless told otherwise.
    # The driver says so without importing torch here: the worker is spawned first, so its torch
    # import overlaps the grader's own (a worker whose torch cannot use the GPU falls back to the CPU).
    try:
        device = select_device(os.environ.get(DEVICE_ENV), cuda_available=os.path.exists("/proc/driver/nvidia/version"))
    except ValueError as err:
        raise NotegradeError(f"{DEVICE_ENV}: {err}") from None
    return Sandbox(submission, limits=SandboxLimits(**limits), use_gpu=device == "cuda", hide=[str(p) for p in hide],
                   private=[str(p) for p in private])


def _grade(root: pathlib.Path, started: float, state: dict) -> Any:
    from autograder.checks import REGISTRY, CheckContext
    from autograder.late import read_metadata
    from autograder.results import build_results
    from autograder.rubric import load_rubric

    from autograder.checks.common import Phases

    phases = state["timings"] = Phases(started)  # for the instructor: extra_data["timings"]
    source = layout.source_dir(root)
    rubric = load_rubric(source / layout.RUBRIC_FILE)
    state["rubric"] = rubric

    metadata, note = read_metadata(layout.metadata_file(root))
    heldout = source / layout.HELDOUT_FILE
    if not heldout.is_file():
        raise NotegradeError(f"{heldout}: the held-out file is missing from the autograder (rebuild it with `notegrade build`)")
    upload = layout.submission_dir(root)
    upload.mkdir(exist_ok=True)  # an empty submission is graded (every item fails), not an error
    # The upload itself is hidden too: student code gets only the assignment's files (see submission.py).
    # The held-out file and the secret are closed themselves, not only through source/: Gradescope
    # unpacks the zip with modes of its own, and the uid level then checks them before student code
    # runs, with whatever `notegrade` names in $NOTEGRADE_PRIVATE_PATHS (its zip, a batch folder).
    secrets = [heldout, source / layout.SECRET_FILE]
    hide = [source, *secrets, layout.metadata_file(root), layout.results_dir(root), upload]
    from autograder.sandbox.exposure import paths_from_env

    private = [*secrets, *map(pathlib.Path, paths_from_env())]
    try:
        from tqdm import tqdm
        progress = tqdm(total=len(rubric.items), desc="grading", unit="item", file=sys.stderr, disable=None)
    except ImportError:  # tqdm is a convenience; Gradescope's image may not have it
        progress = None
    staging = pathlib.Path(tempfile.mkdtemp(prefix="notegrade-upload-"))
    try:
        prepared = prepare_submission(upload, staging / layout.SUBMISSION_DIR, files=rubric.submission_files,
                                      max_file_mb=rubric.sandbox.get("max_file_mb", 50.0))
        print(f"submission: graded {prepared.folder or 'the top folder'}; copied {_names(prepared.copied)}; "
              f"ignored {_names(prepared.ignored)}", flush=True)
        phases.mark("setup")  # imports, rubric, metadata, the upload copied
        # The held-out guard digests exactly the graded files (after the layout is resolved).
        guard = _guard_session(rubric=rubric, source=source, submission=prepared.path, metadata=metadata)
        phases.mark("guard")
        context = CheckContext(heldout_path=heldout, heldout_run=guard.run,
                               max_source_kb=rubric.heldout.max_source_kb, checkpoint_policy=rubric.checkpoint)
        with _open_sandbox(submission=prepared.path, limits=rubric.sandbox, hide=hide, private=private) as sandbox:
            phases.mark("sandbox_start")  # uid, scratch copy, isolation, the worker spawned (not yet ready)
            # The grader's own torch (the checks' oracles, torch.load of model.pt) now, while the worker
            # imports its copy on the other core: the two imports overlap instead of following each other.
            import torch.nn.functional  # noqa: F401
            phases.mark("grader_imports")
            _log_isolation(sandbox, state)
            _import_policy(sandbox, source)
            grade_items(rubric=rubric, sandbox=guard.watch(sandbox), registry=guard.registry(REGISTRY),
                        context=context,
                        deadline=started + rubric.time_budget_s, graded=state["graded"], progress=progress)
            phases.mark("items")
            phases["worker_ready_wait"] = round(sandbox.startup_seconds, 3)  # inside items: waiting for the worker
            print(f"sandbox: {sandbox.describe()}", flush=True)  # the instructor's log (results/stdout)
            runtime = runtime_info(sandbox)
        if sandbox.leftovers:
            print(f"[notegrade] the student uid keeps a reservation; could not remove: {sandbox.leftovers[:5]}", flush=True)
    finally:
        if progress is not None:
            progress.close()
        shutil.rmtree(staging, ignore_errors=True)
    phases.mark("sandbox_close")
    results = build_results(rubric=rubric, graded=state["graded"], metadata=metadata, metadata_note=note,
                            execution_time=time.monotonic() - started, guard=guard)
    add_submission_notes(results.data, prepared.notes(files=rubric.submission_files))
    results.data["extra_data"]["submission"] = {"folder": prepared.folder, "copied": prepared.copied,
                                                "ignored": prepared.ignored[:200]}
    results.data["extra_data"]["runtime"] = runtime
    _record_isolation(results.data, state)
    phases.mark("results")
    results.data["extra_data"]["timings"] = _timings(state)
    return results


def _timings(state: dict) -> dict:
    """``extra_data["timings"]``: each phase's wall seconds, the items', and the python start before ``main``."""
    items = {g.item.number: round(g.duration_s, 3) for g in state["graded"]}
    heldout = next((g.outcome.data.get("phases") for g in state["graded"]
                    if isinstance(g.outcome.data, dict) and isinstance(g.outcome.data.get("phases"), dict)), None)
    return {"before_main": state.get("before_main"), **state["timings"], "item_seconds": items, "heldout": heldout}


def _process_age() -> "float | None":
    """Seconds since this process started (python's start and the imports before ``main``), on Linux."""
    from autograder.sandbox.processes import process_age_seconds

    age = process_age_seconds(os.getpid())
    return None if age is None else round(age, 3)


def _log_isolation(sandbox: Any, state: dict) -> None:
    """The isolation level goes to the instructor's log now and to results.json's extra_data later."""
    state["isolation"] = sandbox.isolation.as_dict()
    print(f"[notegrade] isolation: {sandbox.isolation.level} ({sandbox.isolation.detail})", flush=True)


def _record_isolation(data: dict, state: dict) -> None:
    if state.get("isolation") and isinstance(data.get("extra_data"), dict):
        data["extra_data"]["isolation"] = state["isolation"]


def _guard_session(**kwargs: Any) -> Any:
    """This run's per-submission held-out guard: secret, digest, rate limit, source scan (``heldout_guard/``)."""
    from autograder.heldout_guard.session import Session

    return Session.prepare(**kwargs)


def _import_policy(sandbox: Any, source: pathlib.Path) -> None:
    """Student code may import the standard library and what requirements.txt installs (the grading
    runtime's packages), here exactly as on Gradescope, whichever Python grades."""
    from autograder.import_policy import import_names, requirements_of, write_policy

    requirements = requirements_of(source)
    if requirements is None:
        print("imports: no requirements.txt in the autograder; student imports are not restricted", flush=True)
        return
    allowed = import_names(requirements.read_text(encoding="utf-8"))
    write_policy(sandbox, allowed)
    print(f"imports: the standard library and {', '.join(allowed)} (from {requirements.name})", flush=True)


def add_submission_notes(data: dict, notes: "list[str]") -> None:
    """Put the notes about the upload (folder graded, files ignored) at the top of the visible output."""
    if notes:
        data["output"] = "\n".join(f"**Note:** {line}" for line in notes) + "\n\n" + data.get("output", "")


def runtime_info(sandbox: Any) -> dict:
    """results.json ``extra_data["runtime"]``: the Python and torch that ran student code, and which runtime.

    ``kind``: ``$NOTEGRADE_RUNTIME_KIND`` as set by whoever started the grader (``notegrade grade``:
    "grading-venv" or "custom"; ``--docker``: "docker"), else "gradescope" in Gradescope's
    ``/autograder/venv`` and "toolkit" otherwise.  ``grader``: "forked" when a batch's warm zygote
    forked this grader (:mod:`autograder.instructor.grading.warm_server`), else "process"."""
    info = sandbox.worker_info
    kind = os.environ.get("NOTEGRADE_RUNTIME_KIND") or (
        "gradescope" if pathlib.Path(sys.prefix) == pathlib.Path("/autograder/venv") else "toolkit")
    return {"python": str(info.get("python") or sys.version.split()[0]), "torch": str(info.get("torch") or ""),
            "kind": kind, "executable": sandbox.python,
            "grader": "forked" if os.environ.get("NOTEGRADE_GRADER_FORKED") == "1" else "process"}


_LAST_RESORT = {"score": 0.0, "output": "The autograder failed before it could grade; please tell the course staff.",
                "tests": [{"name": "Autograder error", "score": 0.0, "max_score": 0.0, "status": "failed",
                           "output": "The autograder failed before it could grade.", "visibility": "visible"}]}


def main(*, root: str | os.PathLike | None = None) -> dict:
    """Grade ``root`` (default ``$AUTOGRADER_ROOT`` or ``/autograder``); return the results.json dict."""
    started = time.monotonic()
    root = pathlib.Path(root or os.environ.get("AUTOGRADER_ROOT") or DEFAULT_ROOT)
    results_path = layout.results_file(root)
    state: dict[str, Any] = {"rubric": None, "graded": [], "before_main": _process_age()}
    data: dict = _LAST_RESORT
    try:
        data = _grade(root, started, state).data
    except BaseException as err:  # noqa: BLE001 - whatever happened, the student gets a results.json
        details = traceback.format_exc()
        print(f"[notegrade] autograder error:\n{details}", flush=True)
        summary = str(err) if isinstance(err, NotegradeError) else f"{type(err).__name__}: {err}"
        try:
            from autograder.results import error_results

            data = error_results(rubric=state["rubric"], graded=state["graded"], error=summary, details=details,
                                 execution_time=time.monotonic() - started).data
            _record_isolation(data, state)
        except BaseException:  # even the error report failed (e.g. interrupted mid-import): the last resort
            print(f"[notegrade] could not build the error results:\n{traceback.format_exc()}", flush=True)
        if isinstance(err, (KeyboardInterrupt, SystemExit)):  # `finally` writes, then stop as asked
            raise
    finally:
        write_json_atomically(results_path, data)
    return json.loads(json.dumps(data))


def _cli() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    results = main()
    print(f"[notegrade] score {results['score']} written to results/results.json", flush=True)
    return 0  # Gradescope reads results.json; it is always written, whatever the outcome


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown: results.json is written (atomically, in ``main``'s
    ``finally:``), the sandbox closed and stdio flushed here, and unloading torch's thousands of
    modules would only cost ~0.4 s of CPU per submission that Gradescope and a batch wait for."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    _exit_now(_cli())
