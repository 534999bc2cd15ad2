"""The whole package supports the Python it declares (pyproject's requires-python: 3.10, Gradescope's image).

The machines here have 3.11 only, so this asks vermin, which reads the source and knows which
version each module, function and syntax needs.  A 3.11-only import behind a fallback is marked
``# novermin`` where it stands (autograder/rubric: tomllib, else tomli).  Issue 19.16:
``export_due_dates`` imported tomllib bare, so ``regrade`` and ``integrity`` failed on 3.10.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _declared_minimum() -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'requires-python = ">=(\d+\.\d+)"', text).group(1)


def _vermin(*paths: Path) -> subprocess.CompletedProcess:
    vermin = Path(sys.executable).with_name("vermin")  # requirements/dev.txt installs it beside pytest
    return subprocess.run([str(vermin), f"--target={_declared_minimum()}-", "--no-tips", "--violations",
                           *map(str, paths)], capture_output=True, text=True, timeout=300)


def test_every_module_runs_on_the_declared_minimum_python():
    result = _vermin(REPO / "autograder", REPO / "reference", REPO / "student_template")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_sees_a_bare_3_11_import(tmp_path):
    (tmp_path / "new.py").write_text("import tomllib\n")
    result = _vermin(tmp_path)
    assert result.returncode != 0 and "'tomllib' module requires" in result.stdout, result.stdout + result.stderr
