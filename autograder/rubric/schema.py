"""Check one TOML table against a key schema: unknown keys (with a did-you-mean), missing required
keys and wrong types, each appended to a shared list of problems.

A schema maps each key to ``(accepted types, required)``.  The rubric's tables
(:mod:`autograder.rubric.tables`) and the Slurm profile (:mod:`autograder.rubric.cluster`) are
checked with it; it sits apart so that both can import it without importing each other.

Example
-------
>>> problems = []
>>> check_table({"titel": "A2", "points": True}, {"title": ((str,), True), "points": ((int, float), False)},
...             "rubric: ", problems)
>>> for p in problems: print(p)
rubric: unknown key 'titel' (did you mean 'title'?)
rubric: 'points' must be a number, got bool True
rubric: missing required key 'title'
>>> is_valid({"points": 3}, {"points": ((int, float), False)}, "points")
True
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join({"str": "a string", "int": "a number", "float": "a number", "list": "a list",
                        "dict": "a table", "bool": "true/false"}[t.__name__] for t in types[:1])


def check_table(table: Mapping[str, Any], schema: dict, where: str, problems: list[str]) -> None:
    """Unknown keys (with a did-you-mean), missing required keys and wrong types."""
    for key, value in table.items():
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(schema)})"
            problems.append(f"{where}unknown key {key!r}{hint}")
            continue
        types, _ = schema[key]
        # bool is an int in Python; a rubric saying `points = true` is a mistake, not 1 point.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            problems.append(f"{where}{key!r} must be {_type_name(types)}, got {type(value).__name__} {value!r}")
    for key, (_, required) in schema.items():
        if required and key not in table:
            problems.append(f"{where}missing required key {key!r}")


def is_valid(table: Mapping[str, Any], schema: dict, key: str) -> bool:
    types = schema[key][0]
    value = table.get(key)
    return key in table and isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
