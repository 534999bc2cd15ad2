"""Student code for integrity tests: honest, independently written submissions, and a disguised copy.

:func:`honest_files` fills every solution region of the reference's ``model.py``, ``losses.py``
and ``train.py`` with one of five correct implementations (the reference's own, or one of the four
in :mod:`testkit.honest_losses` / :mod:`testkit.honest_model_train`), keeping the starter code around
them exactly as handed out.  Which implementation each region gets is a line over Z_5: student
``i`` = ``(a, b)`` uses option ``(a + b * g) % 5`` in group ``g`` (a region, or one of the three parts of
``NoteCNN.__init__``), so two different students share the same implementation in at most two of
the eight ``losses.py`` groups and at most one of the four ``model.py`` and three ``train.py``
ones: like honest students, they overlap a little (the canonical one-liners) and never wholesale.
Up to 25 distinct honest students.

:func:`disguise` is what a copier does to a classmate's file: rename the local variables and
reorder the functions (the code is unchanged to a tokenizer, which is what winnowing relies on).

Example
-------
>>> files = honest_files(7)
>>> "raise NotImplementedError" in files["losses.py"], "BEGIN SOLUTION" in files["losses.py"]
(False, False)
>>> honest_files(7) == honest_files(7) != honest_files(8)
True
"""
from __future__ import annotations

import ast
import importlib.resources
import textwrap

from autograder.instructor.assign.markers import find_regions
from testkit.honest_losses import LINKED, LOSSES
from testkit.honest_model_train import INIT_PARTS, MODEL, TRAIN

FILES = ("model.py", "losses.py", "train.py")
P = 5  # implementations per group (the reference's + four); prime, for the line design
MAX_STUDENTS = P * P
REFERENCE = None  # option 0 of a whole-region group: the reference's own lines


def _groups() -> dict[str, list[tuple[str, str, list]]]:
    """File -> ``[(group, region function, options)]``: what varies independently, in order."""
    init = [(f"NoteCNN.__init__:{part}", "NoteCNN.__init__", options) for part, options in INIT_PARTS.items()]
    whole = {name: [(f, f, [REFERENCE, *options]) for f, options in table.items() if f not in LINKED]
             for name, table in (("model.py", MODEL), ("losses.py", LOSSES), ("train.py", TRAIN))}
    return {"model.py": init + whole["model.py"], "losses.py": whole["losses.py"], "train.py": whole["train.py"]}


def reference_text(name: str) -> str:
    return importlib.resources.files("reference").joinpath(name).read_text(encoding="utf-8")


def choices(index: int) -> dict[str, int]:
    """Group -> option number (0 = the reference's) for honest student ``index``."""
    if not 0 <= index < MAX_STUDENTS:
        raise ValueError(f"honest student index must be in [0, {MAX_STUDENTS}), got {index}")
    a, b = index % P, index // P
    picked = {group: (a + b * (g + 1)) % P for name, groups in _groups().items()
              for g, (group, _, _) in enumerate(groups)}
    picked.update({f: picked[leader] for f, leader in LINKED.items()})
    return picked


def _region_text(name: str, function: str, picked: dict[str, int], reference_lines: str) -> str:
    table = {"model.py": MODEL, "losses.py": LOSSES, "train.py": TRAIN}[name]
    parts = [(group, options) for group, fn, options in _groups()[name] if fn == function]
    if not parts and function in LINKED:  # follows its leader's choice
        number = picked[function]
        return reference_lines if number == 0 else table[function][number - 1]
    texts = [options[picked[group]] for group, options in parts]
    return reference_lines if texts == [REFERENCE] else "".join(texts)


def fill(name: str, picked: dict[str, int]) -> str:
    """``name``'s starter code with each solution region replaced by the chosen implementation."""
    text = reference_text(name)
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    previous = 0
    for region in find_regions(text, path=name):
        out.extend(lines[previous : region.begin - 1])
        own = textwrap.dedent("".join(lines[region.begin : region.end - 1]))  # without the markers
        body = _region_text(name, region.function, picked, own)
        out.append(textwrap.indent(body, region.indent, lambda line: bool(line.strip())))
        previous = region.end
    out.extend(lines[previous:])
    filled = "".join(out)
    ast.parse(filled)  # a broken variant fails here, loudly
    return filled


def honest_files(index: int) -> dict[str, str]:
    picked = choices(index)
    return {name: fill(name, picked) for name in FILES}


class _Renamer(ast.NodeTransformer):
    """Renames variables assigned inside functions (parameters and module names are kept)."""

    def __init__(self, new_names: dict[str, str]) -> None:
        self.new_names = new_names

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id in self.new_names:
            node.id = self.new_names[node.id]
        return node


def _local_names(tree: ast.Module) -> list[str]:
    params = {a.arg for node in ast.walk(tree) if isinstance(node, ast.arguments)
              for a in node.args + node.kwonlyargs + node.posonlyargs}
    stored = {node.id for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
              for node in ast.walk(fn) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    return sorted(stored - params)


def disguise(text: str) -> str:
    """``text`` with every local variable renamed and the top-level functions in reverse order."""
    tree = ast.parse(text)
    renames = {name: f"{name}_{i}x" if len(name) < 3 else f"my_{name[::-1]}" for i, name in enumerate(_local_names(tree))}
    tree = _Renamer(renames).visit(tree)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    others = [node for node in tree.body if not isinstance(node, ast.FunctionDef)]
    tree.body = others[:-1] + functions[::-1] + others[-1:] if others else functions[::-1]
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"
