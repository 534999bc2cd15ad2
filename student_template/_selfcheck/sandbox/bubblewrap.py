"""The worker inside bubblewrap: new namespaces, and a filesystem that holds only what it needs.

TRUSTED side.  Where the machine allows user namespaces (a host, a privileged container, a
cluster node), the worker runs under ``bwrap`` (Debian's ``bubblewrap``, the sandbox Flatpak uses)
with new user, PID, mount, IPC, UTS, network and cgroup namespaces (``--unshare-all``), dying with
its parent (``--die-with-parent``), in a new session (``--new-session``: no terminal to inject
into), without capabilities (``--cap-drop ALL``), unable to make further user namespaces
(``--disable-userns``, bubblewrap 0.8+), with an empty environment but what the grader sets
(``--clearenv``).  Two levels use it (:mod:`autograder.sandbox.isolation`):

- ``bubblewrap`` (the grader is root): **the uid stays the real, unprivileged student uid.**  bwrap
  is not setuid here: the grader drops to the fresh student uid (``setgroups``/``setresgid``/
  ``setresuid``, then ``PR_SET_NO_NEW_PRIVS``) *before* it executes bwrap, which maps that uid to
  itself.  Running bwrap as root with ``--uid N`` instead would map the sandbox's uid to host root,
  and student code would get root's access to every file bound in.
- ``rootless`` (the grader is not root): bwrap runs as the grader's own user, mapped to itself in
  the new user namespace.  The filesystem below is the whole wall: a file bound read-write is
  writable, and nothing else of the user's (home, ``/tmp``, the autograder) exists in the sandbox.

What the sandbox sees (everything else of the host does not exist in it):

- read-only: the interpreter's prefixes and the ``site-packages``/``dist-packages`` folders on
  the worker's ``sys.path`` (:func:`interpreter_binds`, from the interpreter itself, so a grading
  venv anywhere works); other ``sys.path`` entries (an editable source checkout) are left out;
  the loader and the system library folders the interpreter and its ``lib-dynload`` modules link
  (:mod:`autograder.sandbox.loader`: an interpreter outside ``/usr`` starts too);
  ``/lib``, ``/bin``... as the host has them (symlinks into ``/usr`` on merged-/usr systems);
  the harness copy at ``/sandbox/notegrade_harness`` and the grader's inputs at ``/sandbox/in``;
- read-write: the submission copy at ``/sandbox/work`` (the working directory and ``HOME``) and
  the answers folder ``/sandbox/out``;
- a private ``/tmp`` and ``/dev/shm`` of bounded size (``--size`` + ``--tmpfs``), a minimal
  ``/dev``, a new ``/proc`` showing only the sandbox's processes; the root and ``/dev`` are
  remounted read-only;
- no network but its own loopback; the seccomp filter of :mod:`autograder.sandbox.seccomp` on top.

:func:`probe` runs a trivial sandbox once per process, interpreter and user to learn whether this
machine allows it, and says which piece is missing when not (:func:`missing_piece`).  bwrap is
``$NOTEGRADE_BWRAP`` when set (a cluster profile's ``bwrap`` key), else found on ``PATH``.

Example
-------
>>> args = wrap(["python", "-c", "pass"], binds=[("ro", "/usr", "/usr")], env={"HOME": "/sandbox/work"},
...             chdir="/sandbox", tmp_mb=64, seccomp_fd=None, bwrap="bwrap")
>>> args[:4], args[-3:]
(['bwrap', '--unshare-all', '--unshare-user', '--die-with-parent'], ['python', '-c', 'pass'])
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from typing import Any, Callable

from _selfcheck.sandbox import processes
from _selfcheck.sandbox.strays import LIVE_WORKERS
from _selfcheck.sandbox import loader

BWRAP = "bwrap"
BWRAP_ENV = "NOTEGRADE_BWRAP"  # the bwrap binary to use (a cluster profile's ``bwrap`` key sets it on the nodes)
INSIDE = "/sandbox"  # where the scratch folders appear in the sandbox
SHM_MB = 16
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_LAYOUT = ("import json, sys; print(json.dumps({'executable': sys.executable, 'prefix': sys.prefix, "
           "'base_prefix': sys.base_prefix, 'exec_prefix': sys.exec_prefix, "
           "'base_exec_prefix': sys.base_exec_prefix, 'path': sys.path}))")
INSTALL_HINT = ("install it (apt-get install bubblewrap; dnf install bubblewrap), or on a cluster ask its admins, "
                f"or point ${BWRAP_ENV} (a cluster profile's bwrap = \"/path/to/bwrap\") at a bwrap binary; "
                "notegrade's docs/instructor-guide.md has an Apptainer recipe for machines without it")
USERNS_HINT = ("this kernel refuses user namespaces to unprivileged users (the machine's admin can allow them: "
               "sysctl user.max_user_namespaces=15000, kernel.unprivileged_userns_clone=1 on Debian kernels, "
               "kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04)")


def executable() -> "str | None":
    """The bwrap binary: ``$NOTEGRADE_BWRAP`` when set (even if unusable: :func:`missing_piece` says
    why), else ``bwrap`` on ``PATH`` or in ``/usr/bin``; None when bubblewrap is not installed."""
    given = os.environ.get(BWRAP_ENV, "").strip()
    if given:
        return given
    return shutil.which(BWRAP) or shutil.which(BWRAP, path="/usr/bin:/bin:/usr/local/bin")


def missing_piece() -> "str | None":
    """Why no bwrap can run here (not installed, a wrong ``$NOTEGRADE_BWRAP``), with how to get one; None if found."""
    path = executable()
    given = os.environ.get(BWRAP_ENV, "").strip()
    if path is None:
        return f"bubblewrap is not installed (no bwrap on PATH): {INSTALL_HINT}"
    if given and not (os.path.isfile(given) and os.access(given, os.X_OK)):
        return f"{BWRAP_ENV}={given} is not an executable file: {INSTALL_HINT}"
    return None


@functools.lru_cache(maxsize=8)
def version(path: str) -> "tuple[int, ...]":
    """bwrap's version (``bubblewrap 0.8.0`` -> (0, 8, 0)); () when it does not say."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return ()
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout)
    return tuple(int(g or 0) for g in match.groups()) if match else ()


def disables_userns(path: str) -> bool:
    """Whether this bwrap has ``--disable-userns`` (0.8.0 and later)."""
    return version(path) >= (0, 8, 0)


@functools.lru_cache(maxsize=8)
def interpreter_layout(python: str) -> dict:
    """``sys.executable``, prefixes and ``sys.path`` of ``python -s`` (as the worker runs it)."""
    done = subprocess.run([python, "-s", "-c", _LAYOUT], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    if done.returncode != 0:
        raise OSError(f"{python} did not start: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def _covered(path: str, roots: "list[str]") -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


@functools.lru_cache(maxsize=8)
def interpreter_binds(python: str) -> "tuple[list[tuple[str, str, str]], list[str]]":
    """(binds ``(kind, source, dest)`` for the interpreter, ``sys.path`` entries left out).

    Bound read-only: the interpreter's prefixes (its venv and the base installation, e.g.
    ``/usr``), the real file behind ``python``, every ``sys.path`` entry that is a
    ``site-packages`` or ``dist-packages`` folder or lies in a prefix, and what the loader needs
    beyond them (:func:`autograder.sandbox.loader.needed_binds`: an interpreter outside ``/usr``).
    Left out: other entries, such as an editable checkout of the toolkit (the harness needs only
    torch, numpy and itself).
    """
    layout = interpreter_layout(python)
    roots: "list[str]" = []
    for key in ("base_prefix", "base_exec_prefix", "prefix", "exec_prefix"):
        path = os.path.realpath(layout[key])
        if os.path.isdir(path) and path != "/" and not _covered(path, roots):
            roots.append(path)
    skipped = []
    extensions: "list[str]" = []
    for entry in layout["path"]:
        if not entry or not os.path.exists(entry):
            continue
        real = os.path.realpath(entry)
        if os.path.basename(real) == "lib-dynload" and os.path.isdir(real):
            extensions += [os.path.join(real, n) for n in sorted(os.listdir(real)) if n.endswith(".so")]
        if _covered(real, roots):
            continue
        if os.path.basename(real) in ("site-packages", "dist-packages") or real.endswith(".zip"):
            roots.append(real)
        else:
            skipped.append(entry)
    binds = [("ro", root, root) for root in roots]
    for given in (python, layout["executable"]):  # a venv's bin/python links to the base interpreter
        target = os.path.realpath(given)
        if not _covered(target, roots):
            binds.append(("ro", target, target))
        if not _covered(given, roots) and given != target:
            binds.append(("ro", given, given))
    covered = roots + [dest for _, _, dest in binds] + [os.path.realpath("/" + n) for n in _TOP_LEVEL_LINKS
                                                        if os.path.isdir("/" + n) and not os.path.islink("/" + n)]
    binds += loader.needed_binds([os.path.realpath(layout["executable"])] + extensions, roots=covered)
    return binds, skipped


def system_binds() -> "list[tuple[str, str, str]]":
    """``/bin``, ``/lib``... as the host has them: symlinks into ``/usr`` (merged /usr) or read-only binds."""
    binds = []
    for name in _TOP_LEVEL_LINKS:
        path = "/" + name
        if os.path.islink(path):
            binds.append(("symlink", os.readlink(path), path))
        elif os.path.isdir(path):
            binds.append(("ro", path, path))
    binds += [("ro-try", "/etc/ld.so.cache", "/etc/ld.so.cache"), ("ro-try", "/etc/localtime", "/etc/localtime")]
    return binds


def gpu_binds() -> "list[tuple[str, str, str]]":
    """NVIDIA device nodes (held-out inference on a GPU); empty on a machine without them."""
    names = [n for n in sorted(os.listdir("/dev")) if n.startswith("nvidia")] if os.path.isdir("/dev") else []
    return [("dev", f"/dev/{n}", f"/dev/{n}") for n in names] + [("ro-try", "/proc/driver/nvidia", "/proc/driver/nvidia")]


def wrap(command: "list[str]", *, binds: "list[tuple[str, str, str]]", env: "dict[str, str]", chdir: str,
         tmp_mb: int, seccomp_fd: "int | None", bwrap: "str | None" = None,
         disable_userns: bool = True) -> "list[str]":
    """The bwrap command line that runs ``command`` in the sandbox described in the module doc
    (``bwrap``: the binary, default :func:`executable`; ``disable_userns``: False for a bwrap older than 0.8)."""
    args = [bwrap or executable() or BWRAP, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL"] + (["--disable-userns"] if disable_userns else []) + [
            "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev",
            "--size", str(int(tmp_mb) << 20), "--tmpfs", "/tmp", "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm"]
    flags = {"ro": "--ro-bind", "ro-try": "--ro-bind-try", "rw": "--bind", "dev": "--dev-bind-try"}
    for kind, source, dest in binds:  # /tmp first (above), so binds below /tmp land on the tmpfs
        if kind == "symlink":
            args += ["--symlink", source, dest]
        else:
            args += [flags[kind], source, dest]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", chdir, "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return args + ["--"] + list(command)


def explain_failure(stderr: str, code: int) -> str:
    """bwrap's own complaint, with the missing piece named when it is a known one."""
    text = stderr.strip()[-300:] or f"exit status {code}"
    if re.search(r"No permissions to creat|setting up uid map|Creating new namespace failed|"
                 r"unshare.*(Operation not permitted|Permission denied)|max_user_namespaces", text):
        return f"bwrap failed here: {text} -- {USERNS_HINT}"
    return f"bwrap failed here: {text}"


_PROBED: "dict[tuple[str, str, Any], tuple[bool, str]]" = {}


def probe(python: str, *, preexec: "Callable[[], None] | None", user: "dict[str, Any]") -> "tuple[bool, str]":
    """(works, detail): run ``python -s -c pass`` in a minimal sandbox, once per process, bwrap,
    interpreter and kind of user (``user``: Popen's ``user``/``group``, a student uid; ``{}``: ourselves).

    ``preexec``/``user`` are what the worker's launch uses (uid switch, no_new_privs, death signal)."""
    path = executable()
    key = (python, str(path), "student" if user else os.getuid())
    if key in _PROBED:
        return _PROBED[key]
    missing = missing_piece()
    if missing is not None:
        result = (False, missing)
    else:
        try:
            binds, _ = interpreter_binds(python)
            before = {pid for pid, info in processes.process_table().items() if info.ppid == os.getpid()}
            command = wrap([python, "-s", "-c", "pass"], binds=system_binds() + binds, env={"PATH": "/usr/bin"},
                           chdir="/", tmp_mb=1, seccomp_fd=None, bwrap=path, disable_userns=disables_userns(path))
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                                  preexec_fn=preexec, **user)
            result = (True, "namespaces work") if done.returncode == 0 else (False, explain_failure(done.stderr,
                                                                                                    done.returncode))
            if "user" in user:  # bwrap's pid 1, orphaned to us (a subreaper) when the outer bwrap exited
                processes.reap_zombies_of_uid(int(user["user"]), spare=LIVE_WORKERS, wait_s=2.0)
            else:  # the same orphan, of our own uid: reap only the bwrap children this probe made
                _reap_new_bwraps(before)
        except (OSError, ValueError, subprocess.SubprocessError) as err:
            result = (False, f"bwrap could not run: {err}")
    _PROBED[key] = result
    return result


def _reap_new_bwraps(before: "set[int]", wait_s: float = 2.0) -> None:
    """Reap our children named bwrap that were not there ``before`` (and are no live worker's): the
    probe's orphaned pid 1.  Nothing else of our own uid is touched (a Popen elsewhere waits for its own)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        mine = set()
        for pid, info in processes.process_table().items():
            if info.ppid == os.getpid() and pid not in before and pid not in LIVE_WORKERS:
                try:
                    with open(f"/proc/{pid}/comm") as handle:
                        if handle.read().strip() == "bwrap":
                            mine.add(pid)
                except OSError:
                    continue
        if not processes.reap_children(mine) or time.monotonic() >= deadline:
            return
        time.sleep(0.01)
