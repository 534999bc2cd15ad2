"""Run code in a copy of the student template as a student would: flat imports, no repository on sys.path."""
from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Prepended to every subprocess: the repo is not on sys.path and its packages cannot be imported,
# as on a student's laptop, so only the template's flat imports can work.
FLAT_PRELUDE = textwrap.dedent(
    f"""
    import importlib.abc, pathlib, sys
    _repo = pathlib.Path({str(REPO)!r})
    sys.path[:] = [p for p in sys.path if p and pathlib.Path(p).resolve() != _repo]
    sys.path.insert(0, str(pathlib.Path.cwd()))
    class _NoRepo(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("reference", "autograder"):
                raise ImportError(f"{{name}} is instructor-only: students do not have it")
    sys.meta_path.insert(0, _NoRepo())
    """
)
