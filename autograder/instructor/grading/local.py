"""What local grading (``notegrade grade`` / ``regrade`` as root) does so student code learns nothing of the instructor's.

Without a PID namespace (the uid fallback) any uid can read every process's command line in
``/proc``, so a student's code can climb its ancestors and find ``--autograder /path/autograder.zip``
or ``--out graded/``.  The rules here:

- **Arguments through a root-only channel.**  :func:`hide_arguments` re-executes the CLI with its
  arguments in a ``memfd`` named by an environment variable (a process's environment and file
  descriptors are readable only by its own uid), so the running command line is
  ``python -m autograder.cli`` and names no path.  :func:`received_arguments` reads them back.
- **Private outputs.**  Folders the grader creates are 0700 and its files 0600
  (:func:`autograder.atomic.private_dir`, :data:`autograder.atomic.PRIVATE`): results of other
  students in a batch cannot be listed or read.
- **No secret left open at the uid level.**  :func:`refuse_exposed_secrets` stops a grading run
  before it starts, where student code would run as another uid without namespaces, when the
  autograder zip, its held-out file or the batch/export folder lets other users read it (the
  message names the ``chmod`` that fixes it); the graders get the same paths
  (:data:`autograder.sandbox.exposure.PRIVATE_PATHS_ENV`) and refuse too, should they end up at that level.
- **A root-only copy of everything graded.**  The autograder (held-out labels included) and the
  submission are placed in a ``mkdtemp`` folder (0700) before grading; :func:`stage_tree` and
  :func:`stage_zip` copy iteratively, never following links (they are recreated as links, which the
  sandbox then reports), never deeper than :data:`MAX_DEPTH` levels (a 1,200-deep folder is cut,
  with a note, instead of a ``RecursionError`` that would stop a batch); files too large for any
  sandbox become sparse files of the same size (the sandbox says "model.pt is 2.0 GB").
- **A grader that is killed is cleaned up.**  :func:`run_grader` stops an overdue grader with SIGTERM
  (it still writes results.json), then SIGKILL, and afterwards reclaims the student uids of graders
  that died (:func:`autograder.sandbox.users.reclaim_stale`): no process of a student uid outlives
  ``notegrade grade``.
- **A stopped grading run stops its graders.**  :func:`stop_graders` (the SIGTERM handler of a Slurm
  array task: Slurm sends it when the task is cancelled or reaches its time limit, and submitit
  would ignore it) passes SIGTERM on to every running grader, which still writes its results.json
  as an autograder error that a rerun grades again, and no new grader starts.

Example
-------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "heldout.safetensors").write_bytes(b"x"); _ = (folder / "heldout.secret").write_bytes(b"k")
>>> [p.name for p in secret_paths(folder)], secret_paths(folder / "autograder.zip")[0].name
(['heldout.safetensors', 'heldout.secret'], 'autograder.zip')
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import zipfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autograder.instructor.grading.warm_graders import WarmGraders
    from autograder.sandbox.tree_copy import CopyRules

ARGV_FD_ENV = "NOTEGRADE_ARGV_FD"
MAX_DEPTH = 32  # folder levels staged from a submission (the sandbox itself copies 16)
SPARSE_FROM = 1 << 30  # larger files are staged as sparse files of the same size (no sandbox takes them)
TERM_GRACE_S = 30.0  # between SIGTERM and SIGKILL for an overdue grader
_RUNNING: "set[subprocess.Popen]" = set()  # graders of this process, for stop_graders
_STOPPED = threading.Event()


# -- arguments ---------------------------------------------------------------------------
def hide_arguments(argv: "list[str]") -> None:
    """As root, re-execute ``python -m autograder.cli`` with ``argv`` in a memfd (never returns);
    otherwise, or when already done, return at once."""
    if os.geteuid() != 0 or ARGV_FD_ENV in os.environ or not hasattr(os, "memfd_create"):
        return
    fd = os.memfd_create("notegrade-arguments", 0)
    os.write(fd, json.dumps(argv).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    env = {**os.environ, ARGV_FD_ENV: str(fd)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "autograder.cli"], env)


def received_arguments() -> "list[str] | None":
    """The arguments :func:`hide_arguments` passed on (and forget the channel), or None."""
    value = os.environ.pop(ARGV_FD_ENV, None)
    if value is None or not value.isdigit():
        return None
    fd = int(value)
    try:
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    finally:
        os.close(fd)
    argv = json.loads(data)
    return [str(a) for a in argv] if isinstance(argv, list) else None


# -- staging -----------------------------------------------------------------------------
def _staging_note(kind: str, rel: str, detail: str, rules: CopyRules) -> str:
    """A note on what :func:`stage_tree` left out (the sandbox words its own refusal later)."""
    if kind == "too_deep":
        return f"{rel[:200]}...: nested deeper than {rules.max_depth} levels, not copied"
    if kind == "not_regular":
        return f"{rel}: not a regular file"
    return f"{rel}: {detail or kind}"


def stage_tree(src: "str | os.PathLike", dest: "str | os.PathLike", *, skip: "set[str]" = frozenset()) -> "list[str]":
    """Copy the folder ``src`` to the new folder ``dest`` (see the module doc); notes on what was cut.

    The copy is the sandbox's own (:func:`autograder.sandbox.tree_copy.copy_tree`) with staging's
    rules: links recreated as links, files over :data:`SPARSE_FROM` sparse, no size bounds, names in
    ``skip`` left out at any level, an unreadable entry a note."""
    from autograder.sandbox.tree_copy import CopyRules, copy_tree  # numpy: not at the CLI's start

    os.mkdir(dest, 0o755)
    rules = CopyRules(max_depth=MAX_DEPTH, skip=frozenset(skip), skip_dirs=frozenset(), keep_links=True,
                      sparse_from=SPARSE_FROM, note_errors=True, explain=_staging_note)
    # ``src`` is the instructor's own path: a link to the folder is followed there, and nowhere below.
    return list(copy_tree(os.path.realpath(src), os.fspath(dest), rules=rules).problems.values())


def stage_zip(archive: "str | os.PathLike", dest: "str | os.PathLike", *, max_bytes: int = 4 << 30) -> "list[str]":
    """Unpack ``archive`` into the (new or empty) folder ``dest``: no entry outside it, none deeper than
    :data:`MAX_DEPTH`, at most ``max_bytes`` unpacked; notes on what was left out."""
    dest = pathlib.Path(dest)
    dest.mkdir(exist_ok=True)
    notes: "list[str]" = []
    budget = max_bytes
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
            if not parts or info.filename.startswith("/") or ".." in parts:
                notes.append(f"{info.filename[:200]}: outside the archive's folder, not unpacked")
                continue
            if len(parts) > MAX_DEPTH:
                notes.append(f"{'/'.join(parts)[:200]}...: nested deeper than {MAX_DEPTH} levels, not unpacked")
                continue
            target = dest
            for part in parts[:-1] if not info.is_dir() else parts:
                target = target / part
                if not target.is_dir():
                    target.mkdir(exist_ok=True)
            if info.is_dir():
                continue
            if info.file_size > budget:
                notes.append(f"{'/'.join(parts)}: the archive unpacks to over {max_bytes >> 20} MB, not unpacked")
                continue
            budget -= info.file_size
            with zf.open(info) as reader, open(target / parts[-1], "xb") as writer:
                while chunk := reader.read(1 << 20):
                    writer.write(chunk)
    return notes


# -- the grader process ------------------------------------------------------------------
def run_grader(command: "list[str]", *, timeout_s: float, warm: "WarmGraders | None" = None,
               **popen: Any) -> "int | None":
    """Run the grader; on ``timeout_s`` SIGTERM (results.json is still written), then SIGKILL.
    Returns its exit status, or None when it had to be stopped.  Student uids of graders that
    died are reclaimed afterwards.  ``warm``: a batch's zygotes, which fork the grader when they
    can (:mod:`.warm_graders`); otherwise a new process."""
    from autograder.errors import NotegradeError
    from autograder.sandbox import users

    if _STOPPED.is_set():
        raise NotegradeError("not graded: this grading run was stopped (SIGTERM) before it reached this submission")
    process = (warm.start(command, **popen) if warm is not None else None) or subprocess.Popen(command, **popen)
    _RUNNING.add(process)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return None
    finally:
        if process.poll() is None:  # interrupted (Ctrl-C): the grader got the SIGINT too
            try:
                process.wait(timeout=TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _RUNNING.discard(process)
        users.reclaim_stale()


def stop_graders(signum: int = signal.SIGTERM, frame: Any = None) -> None:
    """Stop this process's grading: running graders get SIGTERM, new ones are refused (a signal handler)."""
    _STOPPED.set()
    for process in list(_RUNNING):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)


def stop_graders_on_sigterm() -> None:
    """Install :func:`stop_graders` for SIGTERM (from the main thread only, where Python allows it)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_graders)


def isolation_of(results: dict) -> dict:
    """``extra_data["isolation"]`` of a results.json (``{}`` when the grader recorded none)."""
    extra = results.get("extra_data") if isinstance(results, dict) else None
    value = extra.get("isolation") if isinstance(extra, dict) else None
    return value if isinstance(value, dict) else {}


def isolation_warning(levels: "list[str | None]") -> "str | None":
    """One line when any submission was graded without isolation (level ``none``)."""
    bare = [level for level in levels if level == "none"]
    if not bare:
        return None
    who = f"{len(bare)} of {len(levels)} submissions were" if len(levels) > 1 else "this submission was"
    return (f"warning: {who} graded WITHOUT isolation: student code ran as the grader's own user and could read and "
            "write whatever it can (install bubblewrap for the rootless level, or grade as root for a separate uid; "
            "results.json's extra_data.isolation says why)")


# -- secrets at the uid level ------------------------------------------------------------
def secret_paths(autograder: "str | os.PathLike") -> "list[pathlib.Path]":
    """What of an autograder must be closed to other users: the zip itself, or an unpacked
    autograder's held-out file and secret (those that exist)."""
    from autograder import layout

    autograder = pathlib.Path(autograder)
    if not autograder.is_dir():
        return [autograder]
    return [path for path in (autograder / layout.HELDOUT_FILE, autograder / layout.SECRET_FILE) if path.exists()]


def refuse_exposed_secrets(paths: "list[str | os.PathLike]", *, python: "str | None" = None) -> None:
    """Before a grading run as root: where graders would run student code at the ``uid`` level, a
    one-line :class:`NotegradeError` for the first of ``paths`` other users may read (with the
    ``chmod`` that fixes it).  Not root: nothing to check (student code keeps the grader's own uid).
    The level is probed (bubblewrap, ~0.2 s) only when a path is open: private paths cost a ``stat``."""
    from autograder.sandbox import exposure

    open_paths = [path for path in paths if exposure.exposure(path) is not None]
    if open_paths and os.geteuid() == 0:
        from autograder.sandbox import isolation  # the probe's imports too, only when needed

        exposure.refuse_exposed(open_paths, level=isolation.root_level(python or sys.executable) or "none")
