"""An interpreter the sandbox's unprivileged user can run, for local grading as root.

As root, the sandbox runs student code as an unprivileged user (``notegrade-student``), which
must be able to execute the worker's Python.  A venv whose interpreter lives under ``/root``
(mode 700, e.g. a pyenv build) is out of that user's reach, so the sandbox refuses to start.
Gradescope's image has ``/usr/bin/python3``; locally, :func:`ensure_worker_python` makes a venv
of the system Python of the same minor version (``--without-pip``: no downloads) that sees
this environment's site-packages (torch, numpy, ...) through a ``.pth`` file, and points
``NOTEGRADE_WORKER_PYTHON`` at it (the sandbox reads it; grading subprocesses inherit it).

The venv is built in a private temporary directory and renamed into place, so it is never
half-made, and a cached one is reused only when it is ours and nobody else can write to it
(``/tmp`` is world-writable: a planted "venv" would otherwise run as root).

Example
-------
>>> python = ensure_worker_python()  # None when not root, or when this Python is reachable
>>> python is None or (os.access(python, os.X_OK) and os.environ[WORKER_PYTHON_ENV] == python)
True
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import site
import stat
import subprocess
import sys
import tempfile

from autograder.errors import NotegradeError
from autograder.sandbox import WORKER_PYTHON_ENV
from autograder.sandbox.processes import path_is_reachable_by_others

PTH_NAME = "notegrade_project.pth"


def _site_dirs() -> list[str]:
    return [d for d in site.getsitepackages() if os.path.isdir(d)]


def _owned_privately(path: pathlib.Path) -> bool:
    """A real directory (not a symlink), owned by us, writable by nobody else."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def _is_private_and_ours(venv: pathlib.Path) -> bool:
    """The venv and the directories it runs from are ours alone."""
    return all(_owned_privately(part) for part in (venv, venv / "bin", venv / "lib"))


def _usable(venv: pathlib.Path, pth_text: str) -> bool:
    python = venv / "bin" / "python"
    pth = next(iter((venv / "lib").glob(f"python*/site-packages/{PTH_NAME}")), None)
    return (_is_private_and_ours(venv) and os.access(python, os.X_OK) and pth is not None
            and pth.read_text() == pth_text)


def _build(system_python: pathlib.Path, venv: pathlib.Path, pth_text: str) -> None:
    """Make the venv in a private temp dir, then rename it to ``venv`` (atomic, never half-made)."""
    staging = pathlib.Path(tempfile.mkdtemp(prefix=venv.name + ".staging-", dir=venv.parent))
    try:
        built = staging / "venv"
        done = subprocess.run([str(system_python), "-m", "venv", "--without-pip", str(built)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NotegradeError(f"could not create a worker venv with {system_python} -m venv: "
                                 f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        purelib = next((built / "lib").glob("python*/site-packages"))
        (purelib / PTH_NAME).write_text(pth_text)
        built.chmod(0o755)
        try:
            built.rename(venv)
        except OSError as err:
            if not _usable(venv, pth_text):  # not a concurrent run's identical venv: give up
                raise NotegradeError(f"could not create the worker venv {venv}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_worker_python(*, cache_dir: str | os.PathLike | None = None) -> str | None:
    """As root, make sure the sandbox's worker has an interpreter the student user can run.

    Returns the interpreter set in ``$NOTEGRADE_WORKER_PYTHON`` (already set, or made here), or
    None when nothing is needed (not root, or this interpreter is reachable by other users).
    ``cache_dir``: where the venv is kept (default: the system temp dir), reused across runs.
    """
    if os.environ.get(WORKER_PYTHON_ENV):
        return os.environ[WORKER_PYTHON_ENV]
    if os.geteuid() != 0 or path_is_reachable_by_others(sys.executable) is None:
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system_python = pathlib.Path(f"/usr/bin/python{version}")
    if not system_python.is_file() or path_is_reachable_by_others(str(system_python)) is not None:
        raise NotegradeError(
            f"running as root with {sys.executable}, which the sandbox's unprivileged user cannot reach, and there is "
            f"no {system_python} to make a worker interpreter from: install python{version} (apt-get install "
            f"python{version}-venv) or set {WORKER_PYTHON_ENV} to a Python {version} every user can run")
    site_dirs = _site_dirs()
    blocked = [d for d in site_dirs if path_is_reachable_by_others(os.path.join(d, "x")) is not None]
    if blocked:
        raise NotegradeError(f"this environment's packages ({blocked[0]}) are not readable by other users, so the "
                             f"sandboxed worker could not import torch; install them where every user can read them "
                             f"or set {WORKER_PYTHON_ENV}")
    pth_text = "\n".join(site_dirs) + "\n"
    digest = hashlib.sha256(f"{system_python}\n{pth_text}".encode()).hexdigest()[:8]
    parent = pathlib.Path(cache_dir or tempfile.gettempdir())
    venv = parent / f"notegrade-worker-python{version}-{digest}"
    if not _usable(venv, pth_text):
        if _owned_privately(venv):
            shutil.rmtree(venv)  # our own broken leftover (an interrupted run)
        elif os.path.lexists(venv):
            # Not ours (or writable by others): never run it as root; make a private one instead.
            private = pathlib.Path(tempfile.mkdtemp(prefix=venv.name + "-", dir=parent))
            private.chmod(0o755)  # the student user must reach the interpreter inside
            venv = private / "venv"
        _build(system_python, venv, pth_text)
    python = str(venv / "bin" / "python")
    os.environ[WORKER_PYTHON_ENV] = python
    return python
