"""The dependency rules of docs/ARCHITECTURE.md, checked on the source (no module is imported).

Every ``import`` counts, also the ones inside functions: a lazy import is still a dependency, and
the cycle this test was written against (grade -> docker_grade -> grade) was made of lazy ones.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("autograder", "reference")
# The zip's grading code may not reach these; the checks, harness and sandbox sit below the rubric
# and the runner.
BELOW_THE_RUNNER = ("autograder.checks", "autograder.harness", "autograder.sandbox")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in ``path`` that targets our packages."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return [(module, names, line) for module, names, line in found if module.split(".")[0] in PACKAGES]


def _edges() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names, _ in _imports(name, path):
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
            if not targets or len(targets) < len(names):
                targets.add(module)
            graph[name] |= {t for t in targets if t in MODULES and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None (iterative DFS)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def _violations(rule) -> list[str]:
    found = []
    for name, path in MODULES.items():
        for module, names, line in _imports(name, path):
            problem = rule(name, module, names)
            if problem:
                found.append(f"{path.relative_to(REPO)}:{line}: {problem}")
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_autograder_and_reference_modules():
    assert _cycle(_edges()) is None


def test_only_the_instructor_tools_and_the_dispatcher_import_the_instructor_tools():
    def rule(name, module, names):
        inside = name.startswith("autograder.instructor") or name == "autograder.cli"
        if not inside and (module.startswith("autograder.instructor") or
                           (module == "autograder" and "instructor" in names)):
            return f"{name} imports {module} (only autograder/instructor/ and the CLI may)"
    assert _violations(rule) == []


def test_command_modules_are_leaves():
    """The CLI finds a command module by name (autograder.cli.COMMANDS); no module imports one."""
    from autograder.cli import COMMANDS

    # reference/'s command modules are also the students' scripts (make_features.py, ...): their
    # library functions and their CLI ship together as one flat file, so the rule is the toolkit's.
    commands = {module for module, _ in COMMANDS.values() if module.startswith("autograder.")}

    def rule(name, module, names):
        hit = [m for m in [module] + [f"{module}.{n}" for n in names] if m in commands]
        # A command package's facade may hand its entry point on (autograder.selfcheck -> .command).
        if hit and not (MODULES[name].name == "__init__.py" and all(h.startswith(name + ".") for h in hit)):
            return f"{name} imports the command module {hit[0]} (move what it needs into its folder's library module)"
    assert _violations(rule) == []


def test_the_checks_harness_and_sandbox_never_import_the_rubric_or_the_runner():
    def rule(name, module, names):
        if name.startswith(BELOW_THE_RUNNER):
            for target in [module] + [f"{module}.{n}" for n in names]:
                if target.startswith(("autograder.rubric", "autograder.run_autograder", "autograder.heldout_guard")):
                    return f"{name} imports {target}"
    assert _violations(rule) == []


def test_the_harness_imports_only_itself():
    """It is copied next to student code as a package of its own (notegrade_harness)."""
    def rule(name, module, names):
        if name.startswith("autograder.harness") and not module.startswith("autograder.harness"):
            return f"{name} imports {module}"
    assert _violations(rule) == []


def test_reference_imports_only_public_names_of_the_grader():
    def rule(name, module, names):
        if name.startswith("reference") and module.startswith("autograder"):
            private = [n for n in names if n.startswith("_")] + [p for p in module.split(".") if p.startswith("_")]
            if private:
                return f"{name} imports the private name(s) {', '.join(private)} of {module}"
    assert _violations(rule) == []


def test_the_top_level_of_the_package_is_what_the_zip_ships():
    """autograder/*.py and its subpackages, apart from the dispatcher, the self-check (student side)
    and the instructor tools, are exactly the grading code the zip ships."""
    from autograder.instructor.build.grading_code import grading_modules

    shipped = {f.split("/")[1].removesuffix(".py") for f in grading_modules()}
    top = {p.name.removesuffix(".py") for p in (REPO / "autograder").iterdir()
           if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert top - shipped == {"cli", "selfcheck", "instructor"}
    assert shipped <= top | {"gradescope"}


@pytest.mark.parametrize("folder", ["autograder/instructor"])
def test_at_most_a_handful_of_modules_sit_directly_in_the_instructor_folder(folder):
    assert len(list((REPO / folder).glob("*.py"))) <= 3
