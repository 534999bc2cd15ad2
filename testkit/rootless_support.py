"""An unprivileged grading user for the tests of the ``rootless`` level, driven from the root test process.

The rootless level is for graders that are not root, and the tests run as root, so they create the
user :data:`USER` (``useradd``, once per machine, with a home ``/home/notegrade-ci``) and run graders
as it: :func:`run_as_user` starts a process with that uid and gid, no supplementary groups and a
clean environment (``HOME``, ``USER``, ``PATH``, ``PYTHONPATH`` = this checkout).  Everything the
user needs is readable by it: this checkout and the interpreter (checked by :func:`user_problem`,
the reason tests skip with otherwise) and the folders of :func:`user_folder` (its own, 0700).

Every process of the user after a grading is a survivor, so test sessions on one machine take the
user one at a time (:func:`exclusive`, a lock file).

Example
-------
>>> with exclusive():                                                      # doctest: +SKIP
...     done = run_as_user([sys.executable, "-c", "import os; print(os.getuid())"])
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
USER = "notegrade-ci"
HOME = pathlib.Path("/home") / USER
LOCK = pathlib.Path("/var/lock/notegrade-ci.lock")


def ensure_user() -> pwd.struct_passwd:
    """The test user, created when missing (root only; a concurrent creation by another session is fine)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--create-home", "--home-dir", str(HOME), "--shell", "/bin/sh",
                           "--comment", "notegrade tests (rootless level)", USER], capture_output=True, text=True)
    if done.returncode not in (0, 9):  # 9: it exists (made meanwhile)
        raise RuntimeError(f"useradd {USER} failed: {done.stderr.strip()}")
    entry = pwd.getpwnam(USER)
    os.makedirs(HOME, exist_ok=True)
    os.chown(HOME, entry.pw_uid, entry.pw_gid)
    os.chmod(HOME, 0o700)
    return entry


def user_problem(python: str = sys.executable) -> "str | None":
    """Why these tests can't run here (None: they can)."""
    from autograder.sandbox.processes import path_is_reachable_by_others

    if os.geteuid() != 0:
        return "creating the unprivileged test user needs root"
    if shutil.which("useradd") is None:
        return "useradd is missing (passwd package)"
    for path in (str(REPO / "autograder" / "__init__.py"), python):
        blocked = path_is_reachable_by_others(path)
        if blocked is not None:
            return f"{path} is out of an unprivileged user's reach ({blocked} has no 'x' for others)"
    try:
        ensure_user()
    except RuntimeError as err:
        return str(err)
    probe = run_as_user([python, "-c", "from autograder.sandbox.isolation import best_available as b; "
                                       "import sys; print(*b(python=sys.executable), sep='|')"], timeout=120)
    level = probe.stdout.strip().split("|")
    if probe.returncode != 0 or level[0] != "rootless":
        return f"bubblewrap can't run as {USER} here: {probe.stdout.strip() or probe.stderr.strip()[-300:]}"
    return None


@contextlib.contextmanager
def exclusive():
    """Hold the test user for this session (other sessions wait): its processes are then ours to judge."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def user_env(**extra: str) -> "dict[str, str]":
    """The user's environment: nothing of root's but what the tests pass on (no NOTEGRADE_* variables)."""
    env = {"HOME": str(HOME), "USER": USER, "LOGNAME": USER, "PATH": "/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    if "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return env | extra


def run_as_user(argv: "list[str]", *, timeout: float = 900, cwd: "str | os.PathLike | None" = None,
                **env: str) -> subprocess.CompletedProcess:
    """Run ``argv`` as the test user (real, effective and saved uid and gid; no other groups)."""
    entry = ensure_user()
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          cwd=str(cwd or HOME), env=user_env(**env), stdin=subprocess.DEVNULL,
                          user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])


def give(path: "str | os.PathLike") -> pathlib.Path:
    """Make ``path`` (a file or a whole tree) the test user's."""
    entry = ensure_user()
    path = pathlib.Path(path)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chown(item, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return path


def user_folder(prefix: str) -> pathlib.Path:
    """A new folder of the test user (0700) outside /tmp, removed by the caller (:func:`remove`)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    return give(folder)


def remove(path: "str | os.PathLike") -> None:
    from autograder.sandbox.cleanup import remove_tree

    remove_tree(path)


def user_processes() -> list:
    """Live processes of the test user: after a grading returned, survivors."""
    from autograder.sandbox.processes import process_table

    uid = ensure_user().pw_uid
    return [p for p in process_table().values() if p.uid == uid and p.state != "Z"]


def secret_in_home(name: str = "secret_labels.safetensors", text: str = "HOME-SECRET labels\n") -> pathlib.Path:
    """A 0600 file in the user's home: student code graded as the user must never read it."""
    path = HOME / name
    path.write_text(text)
    give(path)
    path.chmod(0o600)
    return path
