"""The doctests of ``autograder/`` and ``reference/`` run in every pytest run (pyproject: testpaths
and ``--doctest-modules``); the few that are skipped say why (checked on the source)."""
from __future__ import annotations

import ast
import shlex
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("autograder", "reference")
REASON = "skipped by the doctest run"  # then why, in the docstring's prose (any case)


def _docstrings(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text:
                yield getattr(node, "name", "<module>"), text


def test_the_default_run_collects_the_doctests_of_the_package_and_the_reference():
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in shlex.split(options["addopts"])
    assert set(PACKAGES) <= set(options["testpaths"])
    assert "corpus" in options["norecursedirs"]  # tests/corpus: submissions, not our code


def test_every_skipped_doctest_says_why_and_they_stay_few():
    skipping, silent = [], []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for name, text in _docstrings(path):
                if "doctest: +SKIP" not in text:
                    continue
                where = f"{path.relative_to(REPO)}:{name}"
                skipping.append(where)
                reason = text.lower().find(REASON)
                if reason == -1 or reason > text.find("doctest: +SKIP"):
                    silent.append(where)
    assert silent == [], f"say why before the first skipped example ({REASON!r} ...)"
    assert len(skipping) <= 11, skipping  # each needs data, a zip, a venv or minutes (see the reasons)
