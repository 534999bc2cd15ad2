"""The grading runtime Gradescope gets (CPU torch 2.13, no torchaudio), as a local venv for tests.

``setup.sh`` installs ``autograder/gradescope/requirements.txt`` into ``/autograder/venv``; the
toolkit's own :func:`autograder.instructor.grading.runtime.ensure_runtime` builds the same venv for
``notegrade grade`` (cached by requirements hash where the sandbox's unprivileged user can run it).
The tests use that one builder, with the wheels from the tests' cached wheelhouse
(:func:`testkit.docker_support.ensure_wheelhouse`), so test and toolkit share one cached runtime.
Tests point ``NOTEGRADE_WORKER_PYTHON`` at it, so student code runs against the CPU build of torch,
as on Gradescope.

Example
-------
>>> python = ensure_cpu_runtime()                                   # doctest: +SKIP
>>> subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
...                text=True).stdout.strip()                        # doctest: +SKIP
'2.13.0+cpu'
"""
from __future__ import annotations

from testkit.docker_support import REQUIREMENTS, ensure_wheelhouse


def ensure_cpu_runtime() -> str:
    """The python of a venv with the grading requirements (CPU torch); built when missing."""
    from autograder.instructor.grading.runtime import ensure_runtime

    return str(ensure_runtime(REQUIREMENTS, wheels=ensure_wheelhouse()).python)
