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
import pwd
from dataclasses import dataclass
from typing import Any

from autograder.errors import NotegradeError
from autograder.sandbox import bubblewrap, launch, seccomp

ISOLATION_ENV = "NOTEGRADE_ISOLATION"
CHOICES = ("auto", "bubblewrap", "uid", "none")


@dataclass
class Isolation:
    """The level a sandbox runs at, a sentence of detail for the instructor, and the student uid.

    The uid is kept out of the sentence: it is fresh for every grading, and the rest of results.json
    is the same when a submission is graded again (regrades and Slurm runs compare them)."""

    level: str
    detail: str
    uid: "int | None" = None

    def as_dict(self) -> "dict[str, str | int]":
        return {"level": self.level, "detail": self.detail} | ({} if self.uid is None else {"uid": self.uid})


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


def _network(python: str) -> "tuple[bytes | None, str]":
    """(the seccomp program, or None where this machine cannot install it; the phrase for the log)."""
    program = seccomp.network_filter() if seccomp.installs_here(python) else None
    if program is not None:
        return program, seccomp.network_filter_status()
    why = seccomp.network_filter_status() if seccomp.network_filter() is None else "this machine refuses seccomp filters"
    return None, f"network NOT blocked ({why})"


def choose(level: str, *, python: str, user: Any, limits: Any) -> "tuple[Isolation, bytes | None]":
    """The level a sandbox really runs at (``level`` from :func:`resolve`; ``auto`` probes bubblewrap
    as ``user``), with the sentence for the instructor's log, and the network filter to install."""
    program, network = _network(python)
    refused = ""
    if level in ("auto", "bubblewrap"):
        setup = launch.ChildSetup(limits, nproc=limits.max_processes, address_space_mb=0)
        works, why = bubblewrap.probe(python, preexec=setup,
                                      user={"user": user.uid, "group": user.gid, "extra_groups": []})
        if works:
            return Isolation("bubblewrap", (
                f"bubblewrap: student code runs as a fresh uid in new user, PID, mount, IPC, UTS, network "
                f"and cgroup namespaces; it sees only the interpreter, its packages, the harness and its submission "
                f"copy, with a private {limits.tmp_mb} MB /tmp; {network}"), user.uid), program
        if level == "bubblewrap":
            raise NotegradeError(f"{ISOLATION_ENV}=bubblewrap, but {why}")
        refused = f" (bubblewrap unavailable: {why})"
    if level in ("auto", "uid"):
        return Isolation("uid", (
            f"uid: student code runs as a fresh uid{refused}, without namespaces: it shares the grader's "
            f"view of the filesystem, processes and network; files the grader keeps are closed to it; {network}"),
            user.uid), program
    who = pwd.getpwuid(os.getuid()).pw_name
    why = "the grader is not root" if os.geteuid() != 0 else \
        f"isolation was switched off (run_as='self' or {ISOLATION_ENV}=none)"
    return Isolation("none", f"NOT ISOLATED ({why}): student code runs as the grader's own user {who} and can read "
                             f"and write whatever the grader can; {network}"), program
