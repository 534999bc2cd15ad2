"""The imports student code may use: the standard library plus what the autograder's ``requirements.txt`` installs.

TRUSTED side, standard library only.  :func:`import_names` turns requirement lines into top-level
module names (``gradescope-utils`` -> ``gradescope_utils``, ``setuptools`` -> ``setuptools``,
``pkg_resources``, ...), from the installed packages' metadata where present and the normalised
name otherwise.  :func:`write_policy` hands the list to the worker's import finder
(``autograder/harness/imports.py``) before any student code runs, so that ``import librosa`` fails
with Python's own message in the self-check and in local grading, as it does on Gradescope.

Example
-------
>>> import_names("torch==2.13.0+cpu\\ngradescope-utils==0.5.0\\ntomli==2.5.0; python_version < '3.11'\\n# x\\n")[:1]
['functorch']
>>> "gradescope_utils" in import_names("gradescope-utils==0.5.0")
True
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from autograder.atomic import PUBLIC, write_atomically
from autograder.layout import CHECKOUT_REQUIREMENTS, REQUIREMENTS_FILE

POLICY_FILE = "import_policy.json"  # = autograder/harness/imports.py's
HARNESS_PACKAGE = "notegrade_harness"  # = the sandbox's name for the harness copy
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Import names of common distributions whose names differ, for environments where they are not installed.
KNOWN = {"gradescope_utils": ["gradescope_utils"], "typing_extensions": ["typing_extensions"], "pyyaml": ["yaml"],
         "scikit_learn": ["sklearn"], "pillow": ["PIL"], "setuptools": ["_distutils_hack", "pkg_resources", "setuptools"],
         "torch": ["functorch", "torch", "torchgen"], "sympy": ["isympy", "sympy"], "markupsafe": ["markupsafe"],
         "jinja2": ["jinja2"]}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def requirement_names(text: str) -> "list[str]":
    """Distribution names of ``requirements.txt`` lines (comments, options and markers ignored)."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _NAME.match(line)
        if match:
            names.append(match.group(1))
    return names


def import_names(text: str) -> "list[str]":
    """Sorted top-level import names of the distributions ``text`` (a requirements.txt) installs."""
    try:
        import importlib.metadata as metadata

        installed = metadata.packages_distributions()
    except Exception:  # noqa: BLE001 - metadata is a convenience; the fallbacks below still apply
        installed = {}
    by_dist: "dict[str, set[str]]" = {}
    for top, dists in installed.items():
        for dist in dists:
            by_dist.setdefault(_norm(dist), set()).add(top)
    names: "set[str]" = set()
    for dist in requirement_names(text):
        key = _norm(dist)
        # The known list first: the same names wherever this runs (a Debian setuptools adds "debian").
        names |= set(KNOWN.get(key) or by_dist.get(key) or [key])
    return sorted(n for n in names if n.isidentifier())


def requirements_of(source: Path) -> "Path | None":
    """The requirements.txt of an unpacked autograder (the zip's root; in a source checkout, gradescope/)."""
    for candidate in (source / REQUIREMENTS_FILE, source / CHECKOUT_REQUIREMENTS):
        if candidate.is_file():
            return candidate
    return None


def write_policy(sandbox: Any, allowed: "list[str] | None") -> None:
    """Give the sandbox's worker the allowed imports (None: no restriction).  Written into the harness
    copy (read-only for student code) before the first student import; restarted workers read it too."""
    if allowed is None:
        return
    path = os.path.join(sandbox.lib_dir, HARNESS_PACKAGE, POLICY_FILE)
    write_atomically(path, json.dumps({"allowed": sorted(set(allowed))}), mode=PUBLIC, fsync=False)
