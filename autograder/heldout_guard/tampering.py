"""Tampering: submission code that reaches into the grader, for the instructor-only integrity line.

Two sources, merged into ``extra_data["integrity"]["tampering"]`` (``[{"kind", "detail"}]``):

- a **static scan** of every submitted ``.py`` file, on the trusted side, before any of it runs:
  references (names, attributes, imports, string constants used as names) to what honest
  assignment code never needs: ``gc``, ``ctypes``, frame access (``sys._getframe``, ``inspect``,
  ``f_back``, ``tb_frame``), ``sys.modules``, ``__wrapped__``/``__closure__``/``cell_contents``,
  ``torch._C``, the dispatch machinery, the grader's own harness, dynamic code (``exec``,
  ``eval``, ``__import__``, ``importlib``);
- the worker's **audit records** (``autograder/harness/watch.py``): what that code actually did.

Nothing here changes a score: the checks decide from outputs, and these lines tell instructors
where to look.  (The loss check's own static scan fails forbidden built-ins; that is separate.)

Example
-------
>>> scan_sources({"model.py": "import gc\\nx = [o for o in gc.get_objects()]\\n"})
[{'kind': 'static scan', 'detail': 'model.py line 1: imports gc (the garbage collector: every object of the grader)'}, {'kind': 'static scan', 'detail': 'model.py line 2: gc.get_objects'}]
"""
from __future__ import annotations

import ast
from typing import Iterable

MAX_FINDINGS = 30
_MODULES = {"gc": "the garbage collector: every object of the grader", "ctypes": "raw memory access",
            "inspect": "frame inspection", "importlib": "dynamic imports", "builtins": "the interpreter's built-ins",
            "notegrade_harness": "the grader's own harness", "sys": None, "torch": None}
_ATTRIBUTES = {"__wrapped__", "__closure__", "cell_contents", "__globals__", "f_back", "f_locals", "f_globals",
               "tb_frame", "gi_frame", "_getframe", "_current_frames", "modules", "get_objects", "get_referrers",
               "get_referents", "settrace", "setprofile", "addaudithook", "_C", "_DisableTorchDispatch",
               "_python_dispatch", "_pop_mode", "_push_mode", "_unset_dispatch_mode", "_set_dispatch_mode",
               "_pop_mode_temporarily", "TorchDispatchMode", "__torch_dispatch__", "__torch_function__"}
_CALLS = {"exec", "eval", "compile", "__import__", "globals"}
_IGNORED_ATTRIBUTE_OWNERS = {"modules": "sys"}  # `self.modules()` of a Module is fine; `sys.modules` is not


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


class _Scan(ast.NodeVisitor):
    def __init__(self, name: str) -> None:
        self.name, self.found = name, []

    def _add(self, node: ast.AST, what: str) -> None:
        entry = f"{self.name} line {getattr(node, 'lineno', '?')}: {what}"
        if entry not in self.found:
            self.found.append(entry)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._module(node, node.module or "")
        for alias in node.names:
            if alias.name in _ATTRIBUTES or alias.name in ("_getframe", "modules"):
                self._add(node, f"imports {node.module}.{alias.name}")

    def _module(self, node: ast.AST, module: str) -> None:
        root = module.split(".")[0]
        why = _MODULES.get(root)
        if why:
            self._add(node, f"imports {module} ({why})")
        elif module.startswith(("torch._C", "torch.utils._python_dispatch")):
            self._add(node, f"imports {module} (torch internals)")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in _ATTRIBUTES:
            dotted = _dotted(node)
            owner = _IGNORED_ATTRIBUTE_OWNERS.get(node.attr)
            if owner is None or dotted.split(".")[0] == owner:
                self._add(node, dotted or node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in _CALLS:
            self._add(node, f"{node.func.id}() (dynamic code)")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and (node.value in _ATTRIBUTES - {"modules", "_C"} or
                                            node.value in ("gc", "ctypes", "notegrade_harness")):
            self._add(node, f"the string {node.value!r} (a name looked up at run time?)")


def scan_sources(sources: "dict[str, str]") -> "list[dict]":
    """Findings for every ``.py`` file of ``sources`` (name -> text), at most :data:`MAX_FINDINGS`."""
    findings: "list[dict]" = []
    for name in sorted(sources):
        if not name.endswith(".py"):
            continue
        try:
            tree = ast.parse(sources[name])
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # the import reports the syntax error
        scan = _Scan(name)
        try:
            scan.visit(tree)
        except RecursionError:
            findings.append({"kind": "static scan", "detail": f"{name}: too deeply nested to scan"})
        findings += [{"kind": "static scan", "detail": entry} for entry in scan.found]
    return findings[:MAX_FINDINGS]


def merge(*groups: "Iterable[dict]") -> "list[dict]":
    """One list without duplicates (by kind and detail), in order, at most :data:`MAX_FINDINGS` * 2."""
    merged: "list[dict]" = []
    seen = set()
    for group in groups:
        for record in group or ():
            if not isinstance(record, dict):
                continue
            key = (str(record.get("kind"))[:60], str(record.get("detail"))[:300])
            if key not in seen:
                seen.add(key)
                merged.append({"kind": key[0], "detail": key[1]})
    return merged[: MAX_FINDINGS * 2]
