"""The student self-check: the rubric's visible items run on a student's folder, as Gradescope would.

Student side: ``notegrade assign`` vendors this package (with the checks, the harness, the sandbox
and the per-item loop) into the template's ``_selfcheck/``.  ``command``: options, :func:`main`
and the text report (``notegrade selfcheck`` / ``python selfcheck.py``); ``run``: staging the
upload and running the items in the sandbox; ``plan``: the visible items exported to
``_selfcheck/rubric.json`` and read back.
"""
from __future__ import annotations


def command_line(argv: "list[str] | None" = None, **kwargs) -> int:
    """The template's ``python selfcheck.py`` entry point (see :func:`autograder.selfcheck.command.command_line`)."""
    from autograder.selfcheck.command import command_line as run

    return run(argv, **kwargs)
