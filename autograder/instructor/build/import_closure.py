"""The instructor tools' one import walker: what an ``autograder`` module imports, and what a set of them reaches.

Read from the source with :mod:`ast` (nothing is imported).  Two tools stand on it:
:mod:`autograder.instructor.build.grading_code` (the grading code the autograder zip ships: the
files the runner, the sandbox, the checks and the harness reach) and
:mod:`autograder.instructor.assign.vendor_selfcheck` (the self-check's vendored copy: the checks,
the harness and the self-check, with every package they reach whole).  Every ``import`` counts,
also the ones inside functions; a relative import is resolved against the file's package;
``from autograder.x import name`` may name a submodule, which is followed when it is one; third-party
imports guarded by ``except ImportError`` are optional.

Example
-------
>>> found = imports_of("from autograder import sandbox\\nfrom .common import x\\nimport numpy\\n",
...                    path="autograder/checks/demo.py", package="autograder.checks")
>>> sorted(found.ours), sorted(found.maybe), sorted(found.others)
(['autograder', 'autograder.checks.common'], ['autograder.checks.common.x', 'autograder.sandbox'], ['numpy'])
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

TOP = "autograder"
OPTIONAL = ("ImportError", "ModuleNotFoundError")


@dataclass(frozen=True)
class Imports:
    """What one file imports: ``ours`` (``autograder.*`` modules), ``maybe`` (``autograder.x.name`` of
    ``from autograder.x import name``: a submodule when there is such a file) and ``others`` (other
    top-level names, optional ones left out)."""

    ours: frozenset = frozenset()
    maybe: frozenset = frozenset()
    others: frozenset = frozenset()


def _optional_nodes(tree: ast.AST) -> "set[int]":
    """ids of the nodes inside ``try:`` blocks that catch ImportError or ModuleNotFoundError."""
    found: "set[int]" = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in OPTIONAL
                or isinstance(h.type, ast.Tuple) and any(getattr(e, "id", "") in OPTIONAL for e in h.type.elts)
                for h in node.handlers):
            found.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return found


def imports_of(text: str, *, path: str, package: str) -> Imports:
    """The imports of the source ``text`` (the file ``path``, in the dotted ``package``)."""
    tree = ast.parse(text, filename=path)
    optional = _optional_nodes(tree)
    ours: "set[str]" = set()
    maybe: "set[str]" = set()
    others: "set[str]" = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == TOP or base.startswith(TOP + "."):
                maybe.update(f"{base}.{alias.name}" for alias in node.names)
            modules = [base]
        else:
            continue
        for name in modules:
            if name == TOP or name.startswith(TOP + "."):
                ours.add(name)
            elif id(node) not in optional:
                others.add(name.split(".")[0])
    return Imports(frozenset(ours), frozenset(maybe), frozenset(others))


def package_of(path: Path, package_dir: Path) -> str:
    """The dotted package a file of ``package_dir`` (an ``autograder`` folder) belongs to."""
    return ".".join((TOP, *path.relative_to(package_dir).parent.parts))


def module_file(name: str, package_dir: Path) -> "Path | None":
    """``autograder.x.y`` -> its file in ``package_dir`` (module or package ``__init__``), if any."""
    base = package_dir.joinpath(*name.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_name(base.name + ".py")):
        if candidate.is_file():
            return candidate
    return None  # e.g. ``from autograder import __version__``: a name, not a module


@dataclass
class Reached:
    """What :func:`reach` found: the files, what each imports, and imports of modules that do not exist."""

    files: "set[Path]" = field(default_factory=set)
    imports: "dict[Path, Imports]" = field(default_factory=dict)
    missing: "set[str]" = field(default_factory=set)


def reach(start: Iterable[Path], package_dir: Path, *, exclude: "tuple[str, ...]" = (),
          whole_packages: bool = False) -> Reached:
    """The files of ``package_dir`` that the files ``start`` reach through their imports, transitively,
    with every package ``__init__`` on the way.  Imports of modules named in ``exclude`` (dotted, with
    their submodules) are not followed; ``whole_packages``: a file of a subpackage brings all of that
    subpackage's files (``autograder/sandbox/*.py``)."""
    repo_root = package_dir.parent
    found = Reached()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in found.files:
            continue
        found.files.add(path)
        if whole_packages and path.parent != package_dir:
            folder = package_dir / path.relative_to(package_dir).parts[0]
            todo += sorted(p for p in folder.glob("*.py") if p not in found.files)
        imports = found.imports[path] = imports_of(path.read_text(encoding="utf-8"), path=str(path),
                                                   package=package_of(path, package_dir))
        for name in sorted(imports.ours | imports.maybe):
            if any(name == e or name.startswith(e + ".") for e in exclude):
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # the module and every package on its way
                hit = module_file(".".join(parts[:depth]), package_dir)
                if hit is None and name in imports.ours:
                    found.missing.add(f"{path.relative_to(repo_root)} imports {'.'.join(parts[:depth])}")
                    break
                if hit is not None and hit not in found.files:
                    todo.append(hit)
    return found
