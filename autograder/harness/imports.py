"""The grading runtime's imports, enforced: student code may import the standard library and what the
autograder's ``requirements.txt`` installs, nothing else.

UNTRUSTED side.  On Gradescope the runtime is a venv built from ``requirements.txt``, so ``import
librosa`` fails there.  Where student code runs with other packages around (the self-check on a
student's laptop, or ``notegrade grade --python``), this finder makes it fail the same way, with the
same ``ModuleNotFoundError: No module named 'librosa'`` and hence the same message naming the file
and line.  It only refuses imports made *by student code* (the first frame outside importlib is a
file of the submission): torch's own lazy imports are left alone.  This is a parity aid, not a wall;
the walls are the sandbox's.

The grader writes the policy (``import_policy.json`` beside this file: ``{"allowed": [...]}``)
before the first student import; without it nothing is restricted.
"""
from __future__ import annotations

import importlib.abc
import json
import os
import sys
from typing import Any

POLICY_FILE = "import_policy.json"
ALWAYS = {"model", "losses", "train", "notegrade_harness", "__main__"}
_IMPORTLIB = os.path.dirname(importlib.__file__)


class _StudentImports(importlib.abc.MetaPathFinder):
    """Refuses student imports of top-level modules outside the policy."""

    def __init__(self, policy_path: str, submission: str) -> None:
        self.policy_path, self.submission = policy_path, os.path.realpath(submission) + os.sep
        self._allowed: "set[str] | None" = None

    def _policy(self) -> "set[str] | None":
        # Read when first needed and kept once found: the grader writes it before its first request,
        # while torch's own imports at start-up may come earlier.
        if self._allowed is None:
            try:
                with open(self.policy_path, encoding="utf-8") as handle:
                    self._allowed = set(json.load(handle)["allowed"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return self._allowed

    def _from_student(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not (filename.startswith("<frozen") or filename.startswith(_IMPORTLIB)):
                return os.path.realpath(filename).startswith(self.submission)
            frame = frame.f_back
        return False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        top = fullname.partition(".")[0]
        if top in ALWAYS or top in sys.stdlib_module_names:
            return None
        allowed = self._policy()
        if allowed is None or top in allowed or not self._from_student():
            return None
        # Exactly what Python says where the package is not installed (the grading venv).
        raise ModuleNotFoundError(f"No module named {top!r}", name=top)


def install(submission: str) -> None:
    """Put the finder first on ``sys.meta_path`` (once, at worker start, before any student import)."""
    if not any(isinstance(f, _StudentImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _StudentImports(os.path.join(os.path.dirname(__file__), POLICY_FILE), submission))
