"""The grading runtime for local grading: a venv built from the autograder's ``requirements.txt``, as on Gradescope.

Gradescope grades in ``/autograder/venv``, which ``setup.sh`` builds from the zip's pinned
``requirements.txt`` (CPU torch, numpy, safetensors, gradescope-utils): nothing else.  Grading
locally with the toolkit's own packages would let ``import librosa`` score 100 here and 50 there,
so ``notegrade grade`` and ``regrade`` grade in the same runtime by default: :func:`ensure_runtime`
builds a venv of Debian's ``/usr/bin/python3`` with exactly those pins and caches it by the hash of
``requirements.txt`` and the Python version.

- **Where**: ``$NOTEGRADE_RUNTIME_CACHE``, else ``/var/cache/notegrade/runtimes`` as root (the
  sandbox's unprivileged user must be able to run it: nothing under ``/root``), else
  ``$XDG_CACHE_HOME/notegrade/runtimes`` (``~/.cache/notegrade/runtimes``).
- **Atomic**: built in a private staging directory beside it and renamed into place; a lock file
  makes concurrent graders (``--jobs``) wait for one build instead of racing.
- **Trusted only if private**: a cached runtime is used only when every file and directory in it
  is ours and writable by nobody else (it runs as root when grading as root); otherwise it is
  rebuilt in a fresh private directory.
- **Where the wheels come from**: pip's own configuration (``pip.conf``, ``PIP_FIND_LINKS``,
  ``PIP_EXTRA_INDEX_URL``), plus the zip's bundled ``wheels/`` when it has them.  The CPU build of
  torch (``torch==2.13.0+cpu``) is on the PyTorch CPU index, not PyPI: where pip can't find it the
  message says which variable to set.

Example
-------
(Skipped by the doctest run: a first call builds a venv from the pinned requirements, minutes
and a download.)

>>> runtime = ensure_runtime(Path("autograder/gradescope/requirements.txt"))  # doctest: +SKIP
>>> runtime.python, runtime.built                                             # doctest: +SKIP
(PosixPath('/var/cache/notegrade/runtimes/py3.11-1b2c...'), False)
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from autograder.errors import NotegradeError

SYSTEM_PYTHON = Path("/usr/bin/python3")
STAMP = ".notegrade-runtime"
RECIPE = "1"  # bump when the build below changes
IMPORTS = "import torch, numpy, safetensors, gradescope_utils"
PIP_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Runtime:
    """A built grading runtime: its interpreter, whether this call built it, and how long that took."""

    python: Path
    built: bool
    seconds: float
    torch: str


def cache_root() -> Path:
    """Where runtimes are kept (see the module doc)."""
    if os.environ.get("NOTEGRADE_RUNTIME_CACHE"):
        return Path(os.environ["NOTEGRADE_RUNTIME_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/notegrade/runtimes")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "notegrade" / "runtimes"


def _python_version(python: Path) -> str:
    done = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NotegradeError(f"{python} does not run: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def runtime_key(requirements_text: str, python_version: str) -> str:
    return hashlib.sha256(f"{RECIPE}\n{python_version}\n{requirements_text}".encode()).hexdigest()[:16]


def _private(path: Path) -> bool:
    """Ours, not a symlink to elsewhere (links inside the venv are fine), and writable by nobody else."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return info.st_uid == os.geteuid()
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022


def trusted(venv: Path, key: str) -> bool:
    """A complete runtime for ``key`` that nobody else could have changed."""
    try:
        if not (venv / "bin" / "python").exists() or (venv / STAMP).read_text().strip() != key:
            return False
        for directory, dirs, files in os.walk(venv):
            if not all(_private(Path(directory) / name) for name in [".", *dirs, *files]):
                return False
        return True
    except OSError:
        return False


def _run(command: "list[str]", what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-800:]
        hint = ("; pip could not find a wheel: torch's CPU build is on https://download.pytorch.org/whl/cpu "
                "(set PIP_EXTRA_INDEX_URL to it, or PIP_FIND_LINKS to a folder of wheels), or grade with "
                "--python PYTHON") if "No matching distribution" in tail or "Could not find" in tail else ""
        raise NotegradeError(f"could not build the grading runtime ({what}): {tail}{hint}")


def _build(venv: Path, requirements: Path, key: str, wheels: "Path | None", log: Callable[[str], None]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=venv.parent))
    try:
        built = staging / "venv"
        _run([str(SYSTEM_PYTHON), "-m", "venv", str(built)], f"{SYSTEM_PYTHON} -m venv")
        pip = [str(built / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input",
               "install", "--quiet", "--only-binary=:all:", "-r", str(requirements)]
        if wheels is not None:
            pip[-2:-2] = ["--find-links", str(wheels)]
        log(f"building the grading runtime from {requirements.name} in {venv} (once; pip install, about a minute)")
        _run(pip, "pip install -r requirements.txt")
        _run([str(built / "bin" / "python"), "-c", IMPORTS], "the installed runtime does not import")
        (built / STAMP).write_text(key + "\n")
        for directory, dirs, files in os.walk(built):  # readable by the sandbox's user, writable by us only
            for name in [".", *dirs, *files]:
                path = Path(directory) / name
                if not path.is_symlink():
                    mode = os.lstat(path).st_mode
                    path.chmod((mode & ~0o022) | (0o555 if stat.S_ISDIR(mode) or mode & 0o111 else 0o444))
        built.rename(venv)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _torch_version(venv: Path) -> str:
    """torch's version from its dist-info (importing torch to ask would take a second or two)."""
    found = sorted(venv.glob("lib/python*/site-packages/torch-*.dist-info"))
    return found[0].name.removeprefix("torch-").removesuffix(".dist-info") if found else ""


def ensure_runtime(requirements: Path, *, wheels: "Path | None" = None, cache: "Path | None" = None,
                   log: "Callable[[str], None]" = lambda line: None) -> Runtime:
    """The cached runtime for ``requirements`` (built first when missing or not trustworthy)."""
    started = time.monotonic()
    if not SYSTEM_PYTHON.is_file():
        raise NotegradeError(f"{SYSTEM_PYTHON} is missing: the grading runtime is a venv of the system Python "
                             "(apt-get install python3 python3-venv), or grade with --python PYTHON")
    text = requirements.read_text(encoding="utf-8")
    version = _python_version(SYSTEM_PYTHON)
    key = runtime_key(text, version)
    root = Path(cache) if cache is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    if not _private(root):
        raise NotegradeError(f"{root} can be written by other users: a grading runtime there could be replaced; "
                             "make it yours (chmod go-w) or set NOTEGRADE_RUNTIME_CACHE")
    venv = root / f"py{version}-{key}"
    with open(root / f".lock-{key}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others then find it done
        built = False
        if not trusted(venv, key):
            if os.path.lexists(venv):
                if _private(venv):
                    shutil.rmtree(venv, ignore_errors=True)  # our own leftover, or incomplete
                if os.path.lexists(venv):  # not ours: leave it, build privately beside it
                    venv = Path(tempfile.mkdtemp(prefix=venv.name + "-", dir=root)) / "venv"
                    venv.parent.chmod(0o755)
            _build(venv, requirements, key, wheels, log)
            built = True
    return Runtime(python=venv / "bin" / "python", built=built, seconds=round(time.monotonic() - started, 1),
                   torch=_torch_version(venv))
