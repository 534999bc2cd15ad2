"""The grading runtime's imports, enforced: student code may import the standard library and what the
autograder's ``requirements.txt`` installs, nothing else.

UNTRUSTED side.  On Gradescope the runtime is a venv built from ``requirements.txt``, so ``import
librosa`` fails there.  Where student code runs with other packages around (the self-check on a
student's laptop, or ``notegrade grade --python``), this finder makes it fail the same way, with the
same ``ModuleNotFoundError: No module named 'librosa'`` and hence the same message naming the file
and line.  It only refuses imports made *by student code* (the first frame outside importlib is a
file of the submission): torch's own lazy imports are left alone.  This is a parity aid, not a wall;
the walls are the sandbox's.

Python skips the import system for a module already in ``sys.modules`` (the toolkit's torch
build loads ``tqdm`` itself), so a finder alone would let ``import tqdm`` through here and not on
Gradescope.  ``__import__`` and ``importlib.import_module`` are therefore wrapped too: every
import statement of a submission file passes the same rule, loaded already or not.  The same
wrapper imports ``losses.py`` under ``spawn_guard.no_new_tasks`` by whatever route it comes (a
helper thread started at import would outlive the loss probes' guards).

The grader writes the policy (``import_policy.json`` beside this file: ``{"allowed": [...]}``)
before the first student import; without it nothing is restricted.
"""
from __future__ import annotations

import builtins
import importlib
import importlib.abc
import json
import os
import sys
from typing import Any

from .spawn_guard import no_new_tasks

POLICY_FILE = "import_policy.json"
ALWAYS = {"model", "losses", "train", "notegrade_harness", "__main__"}
_IMPORTLIB = os.path.dirname(importlib.__file__)


class _StudentImports(importlib.abc.MetaPathFinder):
    """Refuses student imports of top-level modules outside the policy."""

    def __init__(self, policy_path: str, submission: str) -> None:
        self.policy_path, self.submission = policy_path, os.path.realpath(submission) + os.sep
        self._allowed: "set[str] | None" = None
        self._files: "dict[str, bool]" = {}

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

    def refused(self, fullname: str) -> "str | None":
        """The top-level name the policy refuses in ``fullname``, or None."""
        top = fullname.partition(".")[0]
        if top in ALWAYS or top in sys.stdlib_module_names:
            return None
        allowed = self._policy()
        return None if allowed is None or top in allowed else top

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        top = self.refused(fullname)
        if top is None or not self._from_student():
            return None
        # Exactly what Python says where the package is not installed (the grading venv).
        raise ModuleNotFoundError(f"No module named {top!r}", name=top)

    def is_student_file(self, filename: Any) -> bool:
        if not isinstance(filename, str):
            return False
        known = self._files.get(filename)
        if known is None:  # import statements run in hot loops (torch imports inside functions): resolve once
            known = self._files[filename] = os.path.realpath(filename).startswith(self.submission)
        return known


def _wrap_import(finder: _StudentImports) -> None:
    """``__import__`` and ``importlib.import_module`` apply the finder's rule to modules loaded already."""
    original_import, original_import_module = builtins.__import__, importlib.import_module

    def student_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level == 0 and name:
            caller = globals.get("__file__") if isinstance(globals, dict) else None
            if finder.is_student_file(caller):
                top = finder.refused(name)
                if top is not None:
                    raise ModuleNotFoundError(f"No module named {top!r}", name=top)
            if name.partition(".")[0] == "losses" and "losses" not in sys.modules:
                with no_new_tasks():
                    return original_import(name, globals, locals, fromlist, level)
        return original_import(name, globals, locals, fromlist, level)

    def student_import_module(name: str, package: Any = None) -> Any:
        if not name.startswith("."):
            top = finder.refused(name)
            if top is not None and finder.is_student_file(sys._getframe(1).f_code.co_filename):
                raise ModuleNotFoundError(f"No module named {top!r}", name=top)
            if name.partition(".")[0] == "losses" and "losses" not in sys.modules:
                with no_new_tasks():
                    return original_import_module(name, package)
        return original_import_module(name, package)

    student_import.__name__, student_import_module.__name__ = "__import__", "import_module"
    builtins.__import__, importlib.import_module = student_import, student_import_module


def install(submission: str) -> None:
    """Put the finder first on ``sys.meta_path`` and wrap the import functions (once, at worker
    start, before any student import)."""
    if not any(isinstance(f, _StudentImports) for f in sys.meta_path):
        finder = _StudentImports(os.path.join(os.path.dirname(__file__), POLICY_FILE), submission)
        sys.meta_path.insert(0, finder)
        _wrap_import(finder)
