"""Two rules both template generators apply: a source's dotted module name, and "it parses".

:mod:`autograder.instructor.assign.template` (the shipped files) and
:mod:`autograder.instructor.assign.vendor_selfcheck` (the vendored self-check) both name repo sources as
modules (to rewrite imports) and refuse to write a generated Python file that does not parse.
The rules live here because ``assign`` imports ``vendor_selfcheck``, which cannot import it back.

Example
-------
>>> module_name("reference/nsynth.py"), module_name("autograder/checks/__init__.py")
('reference.nsynth', 'autograder.checks.__init__')
"""
from __future__ import annotations

import ast

from autograder.errors import NotegradeError


def module_name(source: str) -> str:
    """``reference/nsynth.py`` -> ``reference.nsynth`` (a package's ``__init__`` is kept)."""
    return source.removesuffix(".py").replace("/", ".")


def must_parse(text: str, *, target: str) -> None:
    """NotegradeError naming ``target`` and the line if generated ``text`` is not valid Python."""
    try:
        ast.parse(text, filename=target)
    except SyntaxError as err:
        raise NotegradeError(f"generated {target} does not parse: line {err.lineno}: {err.msg}") from err
