"""The vendored self-check (issue 4, second half): ``selfcheck.py`` and ``_selfcheck/`` in the template.

Students run ``python selfcheck.py`` on their own machine, with no notegrade installed, so the
grader's checks, the untrusted harness, the sandbox, the per-item loop and the self-check itself
are copied into the private package ``_selfcheck/`` with their imports rewritten to it (the
harness keeps its own relative imports); :func:`selfcheck_files` also writes the rubric's visible
items (``_selfcheck/rubric.json``) and the entry point.  What is copied is computed, not listed
(with the import walker ``notegrade build`` uses, :mod:`autograder.instructor.build.import_closure`):
the ``checks``, ``harness`` and ``selfcheck`` packages whole, plus every grading module they
import, followed transitively, and any imported subpackage (``sandbox/``) whole, so a new sandbox
helper comes along without an edit here.  Split
from :mod:`autograder.instructor.assign.template`, which adds these files to the rest of the template.

Example
-------
>>> sources = _selfcheck_sources(Path(__file__).resolve().parents[3])
>>> "autograder/items.py" in sources, "autograder/sandbox/core.py" in sources, "autograder/rubric/tables.py" in sources
(True, True, False)
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.instructor.assign import handout
from autograder.instructor.assign.markers import flatten_imports
from autograder.instructor.assign.sources import module_name, must_parse
from autograder.instructor.build.import_closure import reach
from autograder.layout import CHECKOUT_REQUIREMENTS

SELFCHECK_PACKAGE = "_selfcheck"  # private, so an installed toolkit's `autograder` is never shadowed
SELFCHECK_PACKAGES = ("checks", "harness", "selfcheck")  # vendored whole, with what they import
# selfcheck_plan imports the toolkit's rubric parser only for .toml rubrics (it needs tomllib, which
# Python 3.10 lacks); the vendored copy reads rubric.json and says so when given a .toml.
SELFCHECK_EXCLUDED = ("rubric",)


def _package_files(repo_root: Path, name: str) -> list[Path]:
    """The ``.py`` files of the grading subpackage ``autograder/<name>/``, sorted."""
    return sorted((repo_root / "autograder" / name).glob("*.py"))


def _selfcheck_sources(repo_root: Path) -> list[str]:
    """Repo-relative sources of the vendored package: the three packages whole, and every grading module
    they reach (:func:`autograder.instructor.build.import_closure.reach`, so a new sandbox helper comes
    along), an imported subpackage (``autograder/sandbox/``) whole.  The top package's ``__init__`` is the
    handout's own (:data:`handout.SELFCHECK_INIT`)."""
    package_dir = repo_root / "autograder"
    start = [path for name in SELFCHECK_PACKAGES for path in _package_files(repo_root, name)]
    reached = reach(start, package_dir, exclude=tuple(f"autograder.{name}" for name in SELFCHECK_EXCLUDED),
                    whole_packages=True)
    if reached.missing:
        raise NotegradeError("cannot vendor the self-check: " + "; ".join(sorted(reached.missing)))
    return sorted(p.relative_to(repo_root).as_posix() for p in reached.files - {package_dir / "__init__.py"})


def _dotted(source: str) -> str:
    """``autograder/checks/__init__.py`` -> ``autograder.checks``; ``autograder/items.py`` -> ``autograder.items``."""
    return module_name(source).removesuffix(".__init__")


def selfcheck_files(*, repo_root: Path, rubric: Path | None) -> dict[str, bytes]:
    """Template files for ``python selfcheck.py``: target name -> bytes (none without a rubric).

    The trusted checks, the untrusted harness, the sandbox, the per-item loop and the self-check
    itself go to ``_selfcheck/``, imports rewritten to that package (the harness keeps its relative
    imports: the sandbox copies it next to student code as a package of its own); the rubric's
    visible items go to ``_selfcheck/rubric.json`` with the front-end hash of the held-out features;
    the entry point ``selfcheck.py`` is handout text.  Like every template file they go through the
    leak check, ``--check`` and the zip.
    """
    if rubric is None:
        return {}
    from autograder import __version__
    from autograder.rubric import load_rubric
    from autograder.selfcheck.plan import EXPORT_NAME, export_rubric

    sources = _selfcheck_sources(repo_root)
    missing = [s for s in sources if not (repo_root / s).is_file()]
    if missing:
        raise NotegradeError(f"cannot vendor the self-check: missing {', '.join(missing)}")
    harness = [s for s in sources if s.startswith("autograder/harness/")]
    # Harness modules are mapped too: the trusted side may import one (e.g. harness.device), the
    # harness files themselves keep their relative imports.
    grading_map = {"autograder": SELFCHECK_PACKAGE} | {
        _dotted(s): SELFCHECK_PACKAGE + _dotted(s).removeprefix("autograder") for s in sources}
    files: dict[str, bytes] = {}
    for source in sources:
        text = (repo_root / source).read_text(encoding="utf-8")
        if source in harness:
            out = _harness_source(text, path=source)
        else:
            out = flatten_imports(text, path=source, package=module_name(source).rpartition(".")[0], modules=grading_map,
                                  why=f"it is not vendored into {SELFCHECK_PACKAGE}/ (see SELFCHECK_EXCLUDED in autograder/instructor/assign/vendor_selfcheck.py)")
        target = f"{SELFCHECK_PACKAGE}/{source.removeprefix('autograder/')}"
        must_parse(out, target=target)
        files[target] = out.encode("utf-8")
    files[f"{SELFCHECK_PACKAGE}/__init__.py"] = handout.SELFCHECK_INIT.format(version=__version__).encode("utf-8")
    # The imports the grading runtime has (what `notegrade build` ships as requirements.txt), so that
    # `import librosa` fails in the self-check as it does on Gradescope.
    from autograder.import_policy import import_names

    requirements = repo_root / CHECKOUT_REQUIREMENTS
    export = export_rubric(load_rubric(rubric), frontend_hash=_frontend_hash(repo_root / "reference" / "features.py"),
                           allowed_imports=import_names(requirements.read_text(encoding="utf-8")))
    files[f"{SELFCHECK_PACKAGE}/{EXPORT_NAME}"] = (json.dumps(export, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    files["selfcheck.py"] = handout.SELFCHECK_SCRIPT.encode("utf-8")
    return files


def _harness_source(text: str, *, path: str) -> str:
    """A harness file, unchanged: the sandbox copies the harness as a package of its own next to
    student code, so it may import only torch, numpy, the standard library and itself (``from .x``)."""
    problems = []
    for node in ast.walk(ast.parse(text, filename=path)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        problems += [f"{path}:{node.lineno}: the harness imports {name}; it may import only itself (from .x import ...)"
                     for name in names if name.split(".")[0] in ("reference", "autograder")]
        if isinstance(node, ast.ImportFrom) and node.level > 1:
            problems.append(f"{path}:{node.lineno}: the harness imports from outside itself")
    if problems:
        raise NotegradeError("; ".join(problems))
    return text


def _frontend_hash(features_source: Path) -> str | None:
    """The shipped front-end's hash (held-out features are made with it), or None without one."""
    if not features_source.is_file():
        return None
    return handout.frontend_module(features_source).frontend_hash()
