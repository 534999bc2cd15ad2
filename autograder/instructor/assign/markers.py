"""Solution markers and flat imports: the two source transformations behind ``notegrade assign``.

A solution region sits inside a function body (otter-grader / nbgrader style)::

    def l1_loss(pred, target):
        \"\"\"Mean absolute error.\"\"\"
        # BEGIN SOLUTION: return the mean of the absolute differences
        return (pred - target).abs().mean()
        # END SOLUTION

:func:`template_source` replaces it with ``raise NotImplementedError("TODO: <hint>")`` at the
marker's indentation.  :func:`flatten_imports` rewrites ``from reference.X import ...`` (and
``from .X``, ``from autograder.X``) to ``from X import ...`` for the flat student layout.

Example
-------
>>> print(flatten_imports("from reference.features import SAMPLE_RATE\\n", path="nsynth.py",
...                       package="reference", modules={"reference.features": "features"}), end="")
from features import SAMPLE_RATE
"""
from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass

from autograder.errors import NotegradeError

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION(?P<colon>:(?P<hint>.*))?$")
END = re.compile(r"^(?P<indent>[ \t]*)# END SOLUTION$")
# Anything that looks like a marker but is not spelled exactly like one is an error, not code.
MARKER_LIKE = re.compile(r"#\s*(BEGIN|END)[\s_:-]*SOLU", re.IGNORECASE)
TOP_PACKAGES = ("reference", "autograder")
DOCTEST_FROM = re.compile(r"^(?P<head>\s*(?:>>>|\.\.\.)\s+from\s+)(?P<module>[\w.]+)(?P<tail>\s+import\b)")
DOCTEST_IMPORT = re.compile(r"^\s*(?:>>>|\.\.\.)\s+import\s+(?P<module>[\w.]+)")


@dataclass(frozen=True)
class Region:
    """One solution region: marker lines ``begin``/``end`` (1-based), its indent, hint and function."""

    begin: int
    end: int
    indent: str
    hint: str
    function: str


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _function_bodies(tree: ast.Module, lines: list[str]) -> list[tuple[str, int, int, int]]:
    """(qualname, first body line, last body line incl. trailing comments, body indent) per function."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    first = child.body[0]
                    if ast.get_docstring(child, clean=False) is not None:
                        start = first.end_lineno + 1  # a region may not swallow the docstring
                    else:
                        start = first.lineno
                        # comments between the signature and the first statement belong to the body
                        while start - 1 > child.lineno and not _is_code(lines[start - 2]):
                            start -= 1
                    indent, last = first.col_offset, child.end_lineno
                    while last < len(lines) and not _is_code(lines[last]) and (
                        not lines[last].strip() or _indent(lines[last]) >= indent
                    ):
                        last += 1
                    found.append((qual, start, last, indent))
                visit(child, qual + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _enclosing_function(bodies: list, line: int, indent: int) -> str | None:
    inside = [b for b in bodies if b[1] <= line <= b[2] and indent >= b[3]]
    return max(inside, key=lambda b: b[1])[0] if inside else None


def find_regions(text: str, *, path: str) -> list[Region]:
    """Parse and validate the solution markers of one file; every problem is reported as path:line."""
    lines = text.splitlines()
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as err:
        raise NotegradeError(f"{path}:{err.lineno}: does not parse: {err.msg}") from err
    bodies = _function_bodies(tree, lines)
    comment_lines = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                     if tok.type == tokenize.COMMENT}
    errors: list[str] = []
    regions: list[Region] = []
    open_at: tuple[int, str, str, str | None] | None = None  # (line, indent, hint, function)
    for number, raw in enumerate(lines, 1):
        if number not in comment_lines:  # a marker inside a string (a docstring example) is text
            continue
        line = raw.rstrip()
        begin, end = BEGIN.match(line), END.match(line)
        if not (begin or end):
            if MARKER_LIKE.search(line):
                errors.append(f"{path}:{number}: malformed marker {line.strip()!r}; "
                              "write '# BEGIN SOLUTION: <hint>' or '# END SOLUTION' on a line of its own")
            continue
        match = begin or end
        function = _enclosing_function(bodies, number, _indent(line))
        if begin:
            hint = (begin["hint"] or "").strip()
            if open_at:
                errors.append(f"{path}:{number}: nested BEGIN SOLUTION (the region at line {open_at[0]} is still open)")
                continue
            if not hint:
                errors.append(f"{path}:{number}: BEGIN SOLUTION needs a hint: '# BEGIN SOLUTION: <what to implement>'")
            if function is None:
                errors.append(f"{path}:{number}: BEGIN SOLUTION outside a function body (after the signature and docstring)")
            open_at = (number, match["indent"], hint, function)
            continue
        if open_at is None:
            errors.append(f"{path}:{number}: END SOLUTION without a BEGIN SOLUTION")
            continue
        start, indent, hint, opened_in = open_at
        open_at = None
        body = lines[start : number - 1]
        if match["indent"] != indent:
            errors.append(f"{path}:{number}: END SOLUTION is not indented like its BEGIN SOLUTION (line {start})")
        elif function != opened_in and opened_in is not None:
            errors.append(f"{path}:{number}: END SOLUTION is in {function or 'no function'}, "
                          f"its BEGIN SOLUTION (line {start}) in {opened_in}")
        elif not any(_is_code(b) for b in body):
            errors.append(f"{path}:{start}: empty solution region (no code between the markers)")
        else:
            shallow = next((start + 1 + i for i, b in enumerate(body) if b.strip() and _indent(b) < len(indent)), None)
            if shallow:
                errors.append(f"{path}:{shallow}: line inside the solution region (line {start}) is less indented than its markers")
            elif opened_in is not None and hint:
                regions.append(Region(start, number, indent, hint, opened_in))
    if open_at:
        errors.append(f"{path}:{open_at[0]}: BEGIN SOLUTION has no matching END SOLUTION")
    if errors:
        raise NotegradeError("; ".join(errors))
    return regions


def template_source(text: str, *, path: str) -> str:
    """``text`` with each solution region replaced by ``raise NotImplementedError("TODO: <hint>")``."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    previous_end = 0
    for region in find_regions(text, path=path):
        out.extend(lines[previous_end : region.begin - 1])
        out.append(f"{region.indent}raise NotImplementedError({_literal('TODO: ' + region.hint)})\n")
        previous_end = region.end
    out.extend(lines[previous_end:])
    return "".join(out)


def _literal(text: str) -> str:
    """A readable Python string literal: double quotes, or single ones when the text has double quotes."""
    if "\\" not in text and "'" not in text and '"' in text:
        return f"'{text}'"
    return json.dumps(text, ensure_ascii=False)


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)] if level - 1 < len(parts) else []
    return ".".join(base + ([module] if module else []))


def flatten_imports(text: str, *, path: str, package: str, modules: dict[str, str], why: str = "") -> str:
    """Rewrite imports of shipped modules to the flat layout; refuse any other reference/autograder import.

    ``modules`` maps dotted names to flat names (``"autograder.errors": "errors"``); ``package`` is
    the source file's package, for relative imports.  Doctest lines (``>>> from reference.X import``)
    are rewritten the same way.
    """
    lines = text.splitlines(keepends=True)
    errors: list[str] = []
    reason = why or "it is not shipped to students (add it to MANIFEST or stop importing it)"
    for node in ast.walk(ast.parse(text, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in TOP_PACKAGES:
                    errors.append(f"{path}:{node.lineno}: 'import {alias.name}' cannot be flattened; "
                                  "write 'from reference.X import name' (or 'from .X import name')")
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node.module, node.level, package)
            if target.split(".")[0] not in TOP_PACKAGES and node.level == 0:
                continue
            if target not in modules:
                errors.append(f"{path}:{node.lineno}: imports {target or '.'}: {reason}")
                continue
            pattern = re.compile(r"from\s+" + r"\." * node.level + re.escape(node.module or "") + r"\s+import\b")
            line = lines[node.lineno - 1]
            rewritten = pattern.sub(f"from {modules[target]} import", line[node.col_offset :], count=1)
            if rewritten == line[node.col_offset :]:
                errors.append(f"{path}:{node.lineno}: cannot rewrite this import; keep 'from {target} import' on one line")
            lines[node.lineno - 1] = line[: node.col_offset] + rewritten
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"(reference|autograder)(\.\w+)+", node.value):
                errors.append(f"{path}:{node.lineno}: string {node.value!r} names a module students do not have")
    for number, line in enumerate(lines, 1):
        found = DOCTEST_FROM.match(line)
        imported = DOCTEST_IMPORT.match(line)
        if found and found["module"].split(".")[0] in TOP_PACKAGES:
            if found["module"] in modules:
                lines[number - 1] = DOCTEST_FROM.sub(lambda m: m["head"] + modules[m["module"]] + m["tail"], line, count=1)
            else:
                errors.append(f"{path}:{number}: doctest imports {found['module']}: {reason}")
        elif imported and imported["module"].split(".")[0] in TOP_PACKAGES:
            errors.append(f"{path}:{number}: doctest 'import {imported['module']}' cannot be flattened")
    if errors:
        raise NotegradeError("; ".join(errors))
    return "".join(lines)
