"""Which files of the ``autograder`` package the autograder zip ships: the grading code.

The grading code is the import closure of :data:`GRADING_ROOTS` (the runner, the sandbox, the
checks and the worker harness), computed from the source with :mod:`ast` rather than listed, so a
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

import ast
import sys
from pathlib import Path

from autograder.errors import NotegradeError

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


def _module_file(name: str, package_dir: Path) -> Path | None:
    """``autograder.x.y`` -> its file in ``package_dir`` (module or package ``__init__``), if any."""
    base = package_dir.joinpath(*name.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_name(base.name + ".py")):
        if candidate.is_file():
            return candidate
    return None  # e.g. ``from autograder import __version__``: a name, not a module


def _imports(path: Path, package_dir: Path) -> tuple[set[str], set[str], set[str]]:
    """(``autograder.*`` modules, ``autograder.*`` names that may be submodules, other top-level
    names) that ``path`` imports.

    Imports guarded by ``except ImportError``/``ModuleNotFoundError`` are optional and not
    reported as third-party requirements (``autograder.*`` ones are still followed).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(("autograder", *path.relative_to(package_dir).parent.parts))
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            or isinstance(h.type, ast.Tuple) and any(getattr(e, "id", "") in ("ImportError", "ModuleNotFoundError")
                                                     for e in h.type.elts)
            for h in node.handlers):
            optional.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    ours: set[str] = set()
    maybe: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import name``: name may be a submodule, so follow it when it is one.
            if base == "autograder" or base.startswith("autograder."):
                maybe.update(f"{base}.{alias.name}" for alias in node.names)
            modules = [base]
        else:
            continue
        for name in modules:
            if name == "autograder" or name.startswith("autograder."):
                ours.add(name)
            elif id(node) not in optional:
                others.add(name.split(".")[0])
    return ours, maybe, others


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
    seen: set[Path] = set()
    problems: list[str] = []
    missing: set[str] = set()
    stdlib = set(sys.stdlib_module_names) | {"tomllib"}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        ours, maybe, others = _imports(path, package_dir)
        for name in sorted(ours | maybe):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # the module and every package on its way
                found = _module_file(".".join(parts[:depth]), package_dir)
                if found is None and name in ours:
                    missing.add(f"{path.relative_to(repo_root)} imports {'.'.join(parts[:depth])}")
                    break
                if found is not None and found not in seen:
                    todo.append(found)
        allowed = stdlib | RUNTIME_PACKAGES | (STUDENT_MODULES if "harness" in path.parts else set())
        for name in sorted(others - allowed):
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
