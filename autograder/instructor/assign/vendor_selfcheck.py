"""The vendored self-check (issue 4, second half): ``selfcheck.py`` and ``_selfcheck/`` in the template.

Students run ``python selfcheck.py`` on their own machine, with no notegrade installed, so the
grader's checks, the untrusted harness, the sandbox, the per-item loop and the self-check itself
are copied into the private package ``_selfcheck/`` with their imports rewritten to it (the
harness keeps its own relative imports); :func:`selfcheck_files` also writes the rubric's visible
items (``_selfcheck/rubric.json``) and the entry point.  What is copied is computed, not listed:
the ``checks``, ``harness`` and ``selfcheck`` packages whole, plus every grading module they
import, followed transitively, and any imported subpackage (``sandbox/``) whole, so a new sandbox
helper comes along without an edit here.  Split
from :mod:`autograder.instructor.assign.template`, which adds these files to the rest of the template.

Example
-------
>>> sorted(_grading_imports("from autograder import sandbox\\nfrom autograder.items import Item\\n",
...                         path="autograder/selfcheck/command.py", package="autograder"))
['items', 'sandbox']
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from autograder.errors import NotegradeError
from autograder.instructor.assign import handout
from autograder.instructor.assign.markers import flatten_imports
from autograder.instructor.assign.sources import module_name, must_parse

SELFCHECK_PACKAGE = "_selfcheck"  # private, so an installed toolkit's `autograder` is never shadowed
SELFCHECK_PACKAGES = ("checks", "harness", "selfcheck")  # vendored whole, with what they import
# selfcheck_plan imports the toolkit's rubric parser only for .toml rubrics (it needs tomllib, which
# Python 3.10 lacks); the vendored copy reads rubric.json and says so when given a .toml.
SELFCHECK_EXCLUDED = ("rubric",)


def _grading_imports(text: str, *, path: str, package: str) -> set[str]:
    """Top-level modules of the grading package that ``text`` imports: ``sandbox`` for both
    ``from autograder.sandbox import X`` and ``from autograder import sandbox`` (and ``from . import``)."""
    found = set()
    for node in ast.walk(ast.parse(text, filename=path)):
        if not isinstance(node, ast.ImportFrom):
            continue
        parts = package.split(".")
        target = ".".join(parts[: len(parts) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module
        names = target.split(".") if target else []
        if names[:1] == ["autograder"]:
            found |= {names[1]} if len(names) > 1 else {alias.name for alias in node.names}
    return found


def _package_files(repo_root: Path, name: str) -> list[str]:
    """Repo-relative ``.py`` files of the grading subpackage ``autograder/<name>/``, sorted."""
    return sorted(p.relative_to(repo_root).as_posix() for p in (repo_root / "autograder" / name).glob("*.py"))


def _selfcheck_sources(repo_root: Path) -> list[str]:
    """Repo-relative sources of the vendored package: the three packages whole, and
    every grading module they import, followed transitively (so a new sandbox helper comes along).

    An imported name that is a subpackage (``autograder/sandbox/__init__.py``) comes whole, like
    ``checks`` and ``harness``, and its files are followed in turn."""
    sources = [source for name in SELFCHECK_PACKAGES for source in _package_files(repo_root, name)]
    modules, packages = set(), set(SELFCHECK_PACKAGES)
    pending = [s for s in sources if not s.startswith("autograder/harness/")]
    while pending:
        item = pending.pop()
        source = item if item.endswith(".py") else f"autograder/{item}.py"
        if not item.endswith(".py"):
            modules.add(item)
        if not (repo_root / source).is_file():
            continue  # reported as missing by the caller
        package = module_name(source).removesuffix(".__init__") if source.endswith("__init__.py") \
            else module_name(source).rpartition(".")[0]
        for name in _grading_imports((repo_root / source).read_text(encoding="utf-8"), path=source, package=package):
            if name in modules or name in packages or name in SELFCHECK_EXCLUDED:
                continue
            if (repo_root / "autograder" / name / "__init__.py").is_file():
                packages.add(name)
                files = _package_files(repo_root, name)
                sources += files
                pending += files
            elif (repo_root / "autograder" / f"{name}.py").is_file():
                pending.append(name)
    return [f"autograder/{name}.py" for name in sorted(modules)] + sources


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

    requirements = repo_root / "autograder" / "gradescope" / "requirements.txt"
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
