"""Which isolation level a sandbox gets, and the one line that says so.

TRUSTED side.  Three levels (recorded in results.json ``extra_data["isolation"]`` and in the
instructor's log; what each promises is in the package docstring):

- ``bubblewrap``: namespaces (:mod:`autograder.sandbox.bubblewrap`) *and* the uid fallback's
  walls inside them; needs root and a machine that allows user namespaces;
- ``uid``: a fresh unprivileged uid per submission (:mod:`autograder.sandbox.users`), rlimits,
  the network filter, the hardened scratch folder; needs root;
- ``none``: student code runs as the grader's own user (a student's self-check, or a grader
  that is not root): it can read and write whatever the grader can.

``$NOTEGRADE_ISOLATION`` (``auto``, the default, or a level) chooses; ``auto`` is
``bubblewrap`` where a trivial bwrap run works (probed once per process), else ``uid`` as root,
else ``none``.  Asking for a level the machine cannot give is an error, never a silent downgrade.

Example
-------
>>> requested({ISOLATION_ENV: "uid"}), requested({})
('uid', 'auto')
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from _selfcheck.errors import NotegradeError

ISOLATION_ENV = "NOTEGRADE_ISOLATION"
CHOICES = ("auto", "bubblewrap", "uid", "none")


@dataclass
class Isolation:
    """The level a sandbox runs at and a sentence of detail for the instructor."""

    level: str
    detail: str

    def as_dict(self) -> "dict[str, str]":
        return {"level": self.level, "detail": self.detail}


def requested(environ: "dict[str, str] | None" = None) -> str:
    """The level asked for in ``$NOTEGRADE_ISOLATION`` (``auto`` when unset)."""
    value = (os.environ if environ is None else environ).get(ISOLATION_ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise NotegradeError(f"{ISOLATION_ENV}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def resolve(run_as: str, *, root: bool, environ: "dict[str, str] | None" = None) -> str:
    """``auto``/``bubblewrap``/``uid``/``none`` from the caller's ``run_as`` and the environment.

    ``run_as="self"`` is always ``none``; ``"student"`` refuses ``none``; not root, only ``none``."""
    wanted = "none" if run_as == "self" else requested(environ)
    if run_as == "student" and wanted == "none":
        raise NotegradeError(f"run_as='student' needs isolation, but {ISOLATION_ENV}=none")
    if not root:
        if wanted in ("bubblewrap", "uid") or run_as == "student":
            raise NotegradeError(f"isolation level {wanted if wanted != 'auto' else 'uid'} needs root (student code "
                                 "runs as a separate uid); run the grader as root or unset " + ISOLATION_ENV)
        return "none"
    return wanted
