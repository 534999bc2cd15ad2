"""Which files of the ``autograder`` package the autograder zip ships: the grading code.

The grading code is the import closure of :data:`GRADING_ROOTS` (the runner, the sandbox, the
checks and the worker harness), computed from the source
(:func:`autograder.instructor.build.import_closure.reach`) rather than listed, so a
new grading module comes along without an edit and no instructor tool, reference solution or test
does.  Every third-party import it makes must be one the Gradescope runtime installs
(:data:`RUNTIME_PACKAGES`, what ``requirements.txt`` pins), or the build stops with a message naming
the file.  Split from :mod:`autograder.instructor.build.package`, which packages the result.

Example
-------
>>> files = grading_modules()
>>> "autograder/run_autograder.py" in files, any(f.startswith("autograder/instructor/") for f in files)
(True, False)
"""
from __future__ import annotations

import sys
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.instructor.build.import_closure import reach

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../autograder
# Where grading starts: the runner, plus modules it loads by name or runs as scripts in the worker.
GRADING_ROOTS = ("run_autograder.py", "sandbox", "checks", "harness")
# Third-party imports the grading code may use: what requirements.txt installs (import names).
RUNTIME_PACKAGES = {"torch", "numpy", "safetensors", "gradescope_utils", "tomli"}
# The harness imports the student's flat modules by name inside the worker.
STUDENT_MODULES = {"model", "losses", "train"}
SKIPPED = ("__pycache__", ".pyc", ".pyo", ".DS_Store")


def _is_skipped(path: Path) -> bool:
    return any(part == "__pycache__" for part in path.parts) or path.name.endswith(SKIPPED)


def grading_modules(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Archive names of the grading code in ``package_dir`` (an ``autograder`` package): the import
    closure of :data:`GRADING_ROOTS`.

    Data files beside an included module (e.g. a JSON schema in ``checks/``) come along.
    Raises :class:`NotegradeError` when the closure imports something the runtime lacks.
    """
    repo_root = package_dir.parent
    todo: list[Path] = []
    for root in GRADING_ROOTS:
        path = package_dir / root
        if path.is_dir():
            todo += sorted(p for p in path.rglob("*.py") if not _is_skipped(p))
        elif path.is_file():
            todo.append(path)
        else:
            raise NotegradeError(f"the grading code is incomplete: {path.relative_to(repo_root)} is missing")
    reached = reach(todo, package_dir)
    seen, missing = reached.files, reached.missing
    problems: list[str] = []
    stdlib = set(sys.stdlib_module_names) | {"tomllib"}
    for path in sorted(seen):
        allowed = stdlib | RUNTIME_PACKAGES | (STUDENT_MODULES if "harness" in path.parts else set())
        for name in sorted(reached.imports[path].others - allowed):
            problems.append(f"{path.relative_to(repo_root)} imports {name!r}")
    if missing:
        raise NotegradeError("the grading code is incomplete (no such module or package __init__.py): "
                             + "; ".join(sorted(missing)))
    if problems:
        raise NotegradeError("the grading code needs packages the Gradescope runtime does not install ("
                             + ", ".join(sorted(RUNTIME_PACKAGES)) + "): " + "; ".join(problems))
    files = set(seen)
    # Data files beside included modules come along, but not the top-level package's own (demo_rubric.toml:
    # the demo's rubric is the instructor's, never the grader's).
    for folder in {p.parent for p in seen} - {package_dir}:
        files.update(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".py") and not _is_skipped(p))
    return sorted(str(Path("autograder") / p.relative_to(package_dir)) for p in files)
