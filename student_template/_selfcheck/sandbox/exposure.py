"""No secret open to other users at the ``uid`` level: the check, its one-line refusal and the fix.

TRUSTED side.  At the ``uid`` level (root, no user namespaces: Docker without privileges,
Gradescope) student code runs as a fresh uid *on the grader's own filesystem*: whatever others may
read, it may read.  So a grader at that level refuses to start, naming the path and the ``chmod``
that fixes it, when a secret it was told about is open to others: a file with the "other" read
bit, a folder with the "other" read or search bit.  Only the path itself is checked (a folder
closed to others keeps everything below it; the parent chain is the instructor's business), and
only the "other" bits: a student uid has a group of its own number, no supplementary groups.

The secrets are the autograder zip (or its held-out file and secret), the held-out file a grader
reads, and a batch or export folder of other students' work; ``notegrade`` passes its own to each
grader in ``$NOTEGRADE_PRIVATE_PATHS`` (:data:`PRIVATE_PATHS_ENV`, a JSON list).  At the bubblewrap
levels nothing is refused: none of these paths is mounted in the sandbox, so student code cannot
reach them whatever their mode.  At ``none`` student code is the grader's own user anyway.

Example
-------
>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp()); zip_path = folder / "autograder.zip"
>>> _ = zip_path.write_bytes(b"PK"); zip_path.chmod(0o644)
>>> print(exposure(zip_path).replace(str(folder), "DIR"))
DIR/autograder.zip is readable by other users, and student code runs here as another uid without namespaces (isolation uid): make it private with `chmod 600 DIR/autograder.zip`, then grade again
>>> zip_path.chmod(0o600); folder.chmod(0o711)
>>> exposure(zip_path), exposure(folder) is not None, refuse_exposed([folder], level="bubblewrap")
(None, True, None)
"""
from __future__ import annotations

import json
import os
import shlex
import stat
from typing import Iterable

from _selfcheck.errors import NotegradeError

PRIVATE_PATHS_ENV = "NOTEGRADE_PRIVATE_PATHS"
REFUSING_LEVELS = ("uid",)  # the levels where student code shares the grader's filesystem as another uid


def exposure(path: "str | os.PathLike") -> "str | None":
    """One line saying how ``path`` is open to other users and the ``chmod`` that closes it, or None
    (private, or missing: a path that does not exist exposes nothing)."""
    try:
        info = os.stat(path)  # the instructor's own path: a link to the zip is the zip
    except OSError:
        return None
    folder = stat.S_ISDIR(info.st_mode)
    if not info.st_mode & (stat.S_IROTH | stat.S_IXOTH if folder else stat.S_IROTH):
        return None
    quoted = shlex.quote(os.fspath(path))
    fix = f"chmod -R go-rwx {quoted}" if folder else f"chmod 600 {quoted}"
    what = "open to other users (they may list or enter it)" if folder else "readable by other users"
    return (f"{os.fspath(path)} is {what}, and student code runs here as another uid without namespaces "
            f"(isolation uid): make it private with `{fix}`, then grade again")


def refuse_exposed(paths: "Iterable[str | os.PathLike]", *, level: str) -> None:
    """At a level of :data:`REFUSING_LEVELS`, a :class:`NotegradeError` for the first of ``paths`` open to others."""
    if level not in REFUSING_LEVELS:
        return
    for path in paths:
        problem = exposure(path)
        if problem is not None:
            raise NotegradeError(problem)


def env_value(paths: "Iterable[str | os.PathLike]") -> str:
    """``paths`` as :data:`PRIVATE_PATHS_ENV` carries them to a grader (absolute, in a JSON list)."""
    return json.dumps([os.path.abspath(os.fspath(p)) for p in paths])


def paths_from_env(environ: "dict[str, str] | None" = None) -> "list[str]":
    """The paths :data:`PRIVATE_PATHS_ENV` names (none when unset; strings only)."""
    raw = (os.environ if environ is None else environ).get(PRIVATE_PATHS_ENV, "")
    try:
        value = json.loads(raw) if raw.strip() else []
    except ValueError:
        raise NotegradeError(f"${PRIVATE_PATHS_ENV} is not a JSON list of paths: {raw[:200]!r}") from None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise NotegradeError(f"${PRIVATE_PATHS_ENV} is not a JSON list of paths: {raw[:200]!r}")
    return value
