"""What a student uid leaves on the machine, and removing it without trusting a single path.

TRUSTED side.  Runs as root after every process of the uid is dead (see
:mod:`autograder.sandbox.users`), so nothing the student started can race it; it still never
follows a symlink and never uses a path below the starting directory: every step is relative
to an open directory file descriptor (``openat``/``unlinkat``/``renameat`` with ``O_NOFOLLOW``).

- :func:`remove_tree` deletes a directory tree of any depth without recursion and with two file
  descriptors open: a subdirectory found below is renamed up into the top directory and emptied
  from there (a 3,000-deep folder costs 3,000 renames, never a ``RecursionError`` or
  ``ENAMETOOLONG``).
- :func:`sweep_uid` removes everything a uid owns in the world-writable places a sandboxed
  process can write to without namespaces (:data:`SHARED_DIRS`: ``/tmp``, ``/var/tmp``,
  ``/dev/shm``, ``/run/lock``, ``/dev/mqueue``), everything whose group is the student's own
  group (a scratch folder whose grader was killed), and its System V shared memory, semaphores
  and message queues; it returns what could not be removed, so the uid is not reused while
  anything of it remains.

Example
-------
>>> import tempfile
>>> top = tempfile.mkdtemp()
>>> deep = top
>>> for _ in range(50):
...     deep = os.path.join(deep, "d")
...     os.mkdir(deep)
>>> remove_tree(top)
[]
>>> os.path.exists(top)
False
"""
from __future__ import annotations

import ctypes
import itertools
import os
import stat

SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
MAX_WALK_DEPTH = 64  # directories not owned by the uid are searched this deep (they are not its own trees)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_counter = itertools.count()


def _lstat(name: str, dir_fd: int) -> "os.stat_result | None":
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None


def _hold_name(top_fd: int) -> str:
    """A name not used in the top directory, for a subdirectory moved up to be emptied there."""
    while True:
        name = f".notegrade-rm-{os.getpid()}-{next(_counter)}"
        if _lstat(name, top_fd) is None:
            return name


def _open_dir(name: str, dir_fd: int) -> int:
    """``name`` in ``dir_fd`` opened as a directory (no link followed), made ``rwx`` for its owner when
    that is us and not root: student code running as the grader's own user (the ``rootless`` and
    ``none`` levels) may leave a folder at mode 000, which its owner may chmod back.  Only called once
    every process of the sandbox is dead, so the folder checked is the folder changed."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        info = _lstat(name, dir_fd)
        if os.geteuid() == 0 or info is None or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise
        os.chmod(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    if os.geteuid() != 0:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and info.st_mode & 0o700 != 0o700:
            os.fchmod(fd, 0o700)
    return fd


def _empty_directory(fd: int, top_fd: int, pending: "list[str]", failed: "list[str]", label: str) -> None:
    """Unlink every non-directory in ``fd``; move every subdirectory up into ``top_fd`` (queued in ``pending``)."""
    try:
        names = os.listdir(fd)
    except OSError as err:
        failed.append(f"{label}: {err.strerror}")
        return
    for name in names:
        info = _lstat(name, fd)
        if info is None:
            continue
        try:
            if stat.S_ISDIR(info.st_mode):
                if fd == top_fd:
                    pending.append(name)
                else:
                    held = _hold_name(top_fd)
                    if os.geteuid() != 0 and info.st_uid == os.geteuid() and info.st_mode & 0o700 != 0o700:
                        os.chmod(name, 0o700, dir_fd=fd)  # moving a folder rewrites its "..": it must be writable
                    os.rename(name, held, src_dir_fd=fd, dst_dir_fd=top_fd)
                    pending.append(held)
            else:
                os.unlink(name, dir_fd=fd)
        except OSError as err:
            failed.append(f"{label}/{name}: {err.strerror}")


def remove_entry(parent_fd: int, name: str, *, label: str = "") -> "list[str]":
    """Remove ``name`` in the directory ``parent_fd`` (a file, a link or a whole tree); what failed.

    Iterative: subdirectories are moved up into the top one and emptied there, so depth costs
    neither recursion nor file descriptors."""
    label = label or name
    info = _lstat(name, parent_fd)
    if info is None:
        return []
    if not stat.S_ISDIR(info.st_mode):
        try:
            os.unlink(name, dir_fd=parent_fd)
            return []
        except OSError as err:
            return [f"{label}: {err.strerror}"]
    failed: "list[str]" = []
    try:
        top_fd = _open_dir(name, parent_fd)
    except OSError as err:
        return [f"{label}: {err.strerror}"]
    try:
        if os.fstat(top_fd).st_dev != os.fstat(parent_fd).st_dev:
            return [f"{label}: a mount point, left alone"]
        pending: "list[str]" = []
        _empty_directory(top_fd, top_fd, pending, failed, label)
        while pending:
            held = pending.pop()
            try:
                sub_fd = _open_dir(held, top_fd)
            except OSError as err:
                failed.append(f"{label}/{held}: {err.strerror}")
                continue
            try:
                if os.fstat(sub_fd).st_dev != os.fstat(top_fd).st_dev:
                    failed.append(f"{label}/{held}: a mount point, left alone")
                    continue
                _empty_directory(sub_fd, top_fd, pending, failed, label)
            finally:
                os.close(sub_fd)
            try:
                os.rmdir(held, dir_fd=top_fd)
            except OSError as err:
                failed.append(f"{label}/{held}: {err.strerror}")
    finally:
        os.close(top_fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError as err:
        failed.append(f"{label}: {err.strerror}")
    return failed


def remove_tree(path: "str | os.PathLike") -> "list[str]":
    """Remove the tree at ``path`` (its parent is opened by path, nothing below it); what failed."""
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    try:
        parent_fd = os.open(parent, _DIR_FLAGS)
    except OSError as err:
        return [] if err.errno == 2 else [f"{parent}: {err.strerror}"]
    try:
        return remove_entry(parent_fd, name, label=path)
    finally:
        os.close(parent_fd)


def _sweep_directory(root: str, uid: int, failed: "list[str]") -> int:
    """Remove what ``uid`` owns below ``root``; the number of entries removed.  Depth-first with an
    explicit stack of open directories (at most :data:`MAX_WALK_DEPTH`), never crossing a mount."""
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except OSError:
        return 0
    removed = 0
    device = os.fstat(root_fd).st_dev
    stack = [(root_fd, root, iter(sorted(os.listdir(root_fd))))]
    try:
        while stack:
            fd, label, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            info = _lstat(name, fd)
            if info is None:
                continue
            if info.st_uid == uid or info.st_gid == uid:  # the student's group is its own: a scratch folder
                problems = remove_entry(fd, name, label=f"{label}/{name}")
                failed.extend(problems)
                removed += not problems
            elif (stat.S_ISDIR(info.st_mode) and info.st_mode & 0o001 and info.st_dev == device
                  and len(stack) < MAX_WALK_DEPTH):  # a folder others cannot enter holds nothing of the uid's
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    stack.append((child, f"{label}/{name}", iter(sorted(os.listdir(child)))))
                except OSError:
                    continue
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return removed


def _sysv_ids(kind: str, uid: int) -> "list[int]":
    """System V IPC ids (``shm``, ``sem``, ``msg``) owned or created by ``uid``, from /proc/sysvipc."""
    try:
        with open(f"/proc/sysvipc/{kind}") as handle:
            header, *rows = handle.read().splitlines()
    except OSError:
        return []
    columns = header.split()
    id_column = {"shm": "shmid", "sem": "semid", "msg": "msqid"}[kind]
    ids = []
    for row in rows:
        values = dict(zip(columns, row.split()))
        if str(uid) in (values.get("uid"), values.get("cuid")):
            ids.append(int(values[id_column]))
    return ids


def _remove_sysv(uid: int, failed: "list[str]") -> int:
    """IPC_RMID every System V object of ``uid`` (segments outlive their processes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return 0
    removed = 0
    calls = {"shm": lambda i: libc.shmctl(i, 0, None), "sem": lambda i: libc.semctl(i, 0, 0),
             "msg": lambda i: libc.msgctl(i, 0, None)}
    for kind, remove in calls.items():
        for ipc_id in _sysv_ids(kind, uid):
            if remove(ipc_id) == 0:
                removed += 1
            else:
                failed.append(f"System V {kind} {ipc_id}: errno {ctypes.get_errno()}")
    return removed


def sweep_uid(uid: int, *, roots: "tuple[str, ...]" = SHARED_DIRS) -> "tuple[int, list[str]]":
    """Remove everything ``uid`` owns (or that belongs to the group of the same number, the student's
    own) in ``roots`` and its System V IPC objects: (removed, failures).

    Call only when no process of ``uid`` is left.  Never for uid 0 (or any id below 1000)."""
    if uid < 1000:
        raise ValueError(f"refusing to sweep the system id {uid}")
    failed: "list[str]" = []
    removed = sum(_sweep_directory(root, uid, failed) for root in roots if os.path.isdir(root))
    removed += _remove_sysv(uid, failed)
    return removed, failed
