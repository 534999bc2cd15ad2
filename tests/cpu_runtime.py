"""The grading runtime Gradescope gets (CPU torch 2.13, no torchaudio), as a local venv for tests.

``setup.sh`` installs ``autograder/gradescope/requirements.txt`` into ``/autograder/venv``; this
builds the same venv (from the tests' cached wheelhouse, :func:`tests.docker_support.ensure_wheelhouse`)
under ``/var/cache/notegrade/test-runtimes/`` where the sandbox's unprivileged user can run it,
once per requirements hash.  Tests point ``NOTEGRADE_WORKER_PYTHON`` at it, so student code runs
against the CPU build of torch, as on Gradescope.

Example
-------
>>> python = ensure_cpu_runtime()                                   # doctest: +SKIP
>>> subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
...                text=True).stdout.strip()                        # doctest: +SKIP
'2.13.0+cpu'
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.docker_support import REQUIREMENTS, ensure_wheelhouse

ROOT = Path("/var/cache/notegrade/test-runtimes")


def ensure_cpu_runtime() -> str:
    """The python of a venv with the grading requirements (CPU torch); built when missing."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    target = ROOT / f"cpu-{digest}"
    python = target / "bin" / "python"
    if (target / ".complete").is_file():
        return str(python)
    ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(ROOT, 0o755)
    with open(ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes must not build it at once
        if (target / ".complete").is_file():
            return str(python)
        wheels = ensure_wheelhouse()
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(target)], check=True, capture_output=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--no-index", "--find-links", str(wheels), "-r", str(REQUIREMENTS)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise RuntimeError(f"cannot build the CPU grading runtime: {done.stderr.strip()[-600:]}")
        for path in [target, *target.rglob("*")]:  # reachable by the sandbox's unprivileged user
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o055 if path.is_dir() else path.stat().st_mode | 0o044)
        (target / ".complete").write_text(digest + "\n")
    return str(python)
