"""Which isolation level a sandbox gets, and the one line that says so.

TRUSTED side.  Four levels (recorded in results.json ``extra_data["isolation"]`` and in the
instructor's log; what each promises is in the package docstring):

- ``bubblewrap``: namespaces (:mod:`autograder.sandbox.bubblewrap`) *and* the uid fallback's
  walls inside them; needs root and a machine that allows user namespaces;
- ``uid``: a fresh unprivileged uid per submission (:mod:`autograder.sandbox.users`), rlimits,
  the network filter, the hardened scratch folder; needs root;
- ``rootless``: the same namespaces and mounts as ``bubblewrap``, but student code keeps the
  grader's own (non-root) uid; needs bubblewrap and unprivileged user namespaces, not root;
- ``none``: student code runs as the grader's own user with nothing hidden: it can read and write
  whatever the grader can.

``$NOTEGRADE_ISOLATION`` (``auto``, the default, or a level) chooses.  ``auto`` is, as root,
``bubblewrap`` where a trivial bwrap run works, else ``uid``; not root, ``rootless`` where a trivial
bwrap run works, else ``none``.  ``run_as="self"`` (the students' self-check) never takes a student
uid: ``rootless`` where it works, else ``none`` (as root: ``none``).  Asking for a level the
machine cannot give is an error, never a silent downgrade; so is ``rootless`` as root (student
code would be root inside the namespace).  :func:`best_available` is what a Slurm task checks
before it grades anything.

Example
-------
>>> requested({ISOLATION_ENV: "uid"}), requested({})
('uid', 'auto')
>>> candidates("auto", root=False, environ={}), candidates("auto", root=True, environ={})
(('rootless', 'none'), ('bubblewrap', 'uid'))
"""
from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Any

from autograder.errors import NotegradeError
from autograder.sandbox import bubblewrap, launch, seccomp

ISOLATION_ENV = "NOTEGRADE_ISOLATION"
CHOICES = ("auto", "bubblewrap", "uid", "rootless", "none")
BOXED = ("bubblewrap", "rootless")  # the levels whose worker runs under bwrap
STUDENT_UID = ("bubblewrap", "uid")  # the levels that run student code as a fresh uid (root only)


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


def candidates(run_as: str, *, root: bool, environ: "dict[str, str] | None" = None) -> "tuple[str, ...]":
    """The levels to try, strongest first, for the caller's ``run_as`` and ``$NOTEGRADE_ISOLATION``.

    ``"student"`` needs a student uid (root, not ``none``); ``"self"`` never takes one."""
    wanted = requested(environ)
    if run_as == "student" and (wanted in ("none", "rootless") or not root):
        raise NotegradeError(f"run_as='student' needs a separate uid (root), but the grader is "
                             f"{'root' if root else 'not root'} and {ISOLATION_ENV}={wanted}")
    if wanted == "none":
        return ("none",)
    if wanted in STUDENT_UID:
        if not root:
            raise NotegradeError(f"isolation level {wanted} needs root (student code runs as a separate uid); run the "
                                 f"grader as root, or use {ISOLATION_ENV}=rootless (bubblewrap as your own user)")
        if run_as == "self":
            return ("none",)  # the self-check runs as its user: no student uid to give
        return (wanted,)
    if wanted == "rootless":
        if root:
            raise NotegradeError(f"{ISOLATION_ENV}=rootless is for a grader that is not root (student code keeps the "
                                 "grader's uid, which as root is root): use bubblewrap or uid, or auto")
        return ("rootless",)
    if root:
        return ("none",) if run_as == "self" else ("bubblewrap", "uid")
    return ("rootless", "none")


def resolve(run_as: str, *, root: bool, environ: "dict[str, str] | None" = None) -> str:
    """The first level :func:`candidates` would try, or ``auto`` when there is a choice (kept for callers)."""
    levels = candidates(run_as, root=root, environ=environ)
    return levels[0] if len(levels) == 1 else "auto"


def _network(python: str) -> "tuple[bytes | None, str]":
    """(the seccomp program, or None where this machine cannot install it; the phrase for the log)."""
    program = seccomp.network_filter() if seccomp.installs_here(python) else None
    if program is not None:
        return program, seccomp.network_filter_status()
    why = seccomp.network_filter_status() if seccomp.network_filter() is None else "this machine refuses seccomp filters"
    return None, f"network NOT blocked ({why})"


def _probe(python: str, *, user: Any, limits: Any) -> "tuple[bool, str]":
    setup = launch.ChildSetup(limits, nproc=limits.max_processes, address_space_mb=0)
    who = {"user": user.uid, "group": user.gid, "extra_groups": []} if user is not None else {}
    return bubblewrap.probe(python, preexec=setup, user=who)


def _userns_note() -> str:
    path = bubblewrap.executable()
    return "" if path and bubblewrap.disables_userns(path) else \
        " (this bubblewrap is older than 0.8: student code may create further user namespaces)"


def choose(levels: "tuple[str, ...] | str", *, python: str, user: Any, limits: Any) -> "tuple[Isolation, bytes | None]":
    """The level a sandbox really runs at (the first of ``levels``, from :func:`candidates`, that
    works here; a level string is taken as ``candidates`` would give it), with the sentence for the
    instructor's log, and the network filter to install."""
    if isinstance(levels, str):
        levels = {"auto": ("bubblewrap", "uid") if user is not None else ("rootless", "none")}.get(levels, (levels,))
    program, network = _network(python)
    refused = ""
    for level in levels:
        if level in BOXED:
            works, why = _probe(python, user=user if level == "bubblewrap" else None, limits=limits)
            if not works:
                if level == levels[-1]:
                    raise NotegradeError(f"{ISOLATION_ENV}={level}, but {why}")
                refused = f" ({level} unavailable: {why})"
                continue
        if level == "bubblewrap":
            return Isolation("bubblewrap", (
                f"bubblewrap: student code runs as a fresh uid in new user, PID, mount, IPC, UTS, network "
                f"and cgroup namespaces; it sees only the interpreter, its packages, the harness and its submission "
                f"copy, with a private {limits.tmp_mb} MB /tmp{_userns_note()}; {network}"), user.uid), program
        if level == "uid":
            return Isolation("uid", (
                f"uid: student code runs as a fresh uid{refused}, without namespaces: it shares the grader's "
                f"view of the filesystem, processes and network; files the grader keeps are closed to it; {network}"),
                user.uid), program
        if level == "rootless":
            return Isolation("rootless", (
                f"rootless: student code runs as the grader's own user {_who()} in new user, PID, mount, IPC, UTS, "
                f"network and cgroup namespaces; it sees only the interpreter, its packages, the harness and its "
                f"submission copy (the only place it can write), with a private {limits.tmp_mb} MB /tmp"
                f"{_userns_note()}; {network}"), None), program
    return Isolation("none", f"NOT ISOLATED ({_why_none(refused)}): student code runs as the grader's own user "
                             f"{_who()} and can read and write whatever the grader can; {network}"), program


def _who() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def _why_none(refused: str) -> str:
    if refused:
        return "the grader is not root" + refused
    if os.geteuid() != 0:
        return f"isolation was switched off ({ISOLATION_ENV}=none)"
    return f"isolation was switched off (run_as='self' or {ISOLATION_ENV}=none)"


def root_level(python: str, *, limits: Any = None) -> "str | None":
    """The level a root grader of this machine gets (``bubblewrap`` probed once, as root, without a
    student uid), or None when this process is not root: what ``notegrade`` checks before a grading
    run, to refuse it while a secret is open at the ``uid`` level.  The grader's own choice stays the
    authority: it checks again at the level it really gets."""
    if os.geteuid() != 0:
        return None
    levels = candidates("auto", root=True)
    if levels != ("bubblewrap", "uid"):
        return levels[0]
    from autograder.sandbox.limits import SandboxLimits

    works, _ = _probe(python, user=None, limits=limits or SandboxLimits())
    return "bubblewrap" if works else "uid"


def best_available(*, python: str, limits: Any = None) -> "tuple[str, str]":
    """(the level ``auto`` gives a grader of this user here, why not better): what a Slurm task checks
    before it runs student code (as root: ``bubblewrap`` or ``uid``, which need no probe to exist)."""
    if os.geteuid() == 0:
        return "uid", ""
    from autograder.sandbox.limits import SandboxLimits

    works, why = _probe(python, user=None, limits=limits or SandboxLimits())
    return ("rootless", "") if works else ("none", why)
