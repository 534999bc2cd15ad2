"""Files crossing into the sandbox: the grader's input arrays, new files and ownership by folder fd.

TRUSTED side.  Everything goes through directory file descriptors: targets are created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to a folder the grader made, and no path is ever
resolved again after it was opened.  The submission copy is :mod:`autograder.sandbox.tree_copy`'s
business, answers coming back :mod:`autograder.sandbox.answers`'.

Example
-------
>>> human_size(2 * 1024 ** 3), human_size(512)
('2.0 GB', '512 bytes')
>>> student_frame('Fatal Python error: Segmentation fault\\n  File "/s/work/model.py", line 9 in forward', "/s/work")
'model.py, line 9, in forward'
"""
from __future__ import annotations

import io
import os
import re
import stat

import numpy as np

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def human_size(n_bytes: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} bytes"


def write_new_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Create ``name`` in the folder ``dir_fd`` (it must not exist) and write ``data``; mode set by fd."""
    fd = os.open(name, NEW_FILE, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def write_input(directory: str, stem: str, array: np.ndarray) -> str:
    """Save a numeric array for the worker to read (a new file, created relative to the folder); its name."""
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"input {stem} has dtype {array.dtype}; only numeric arrays are sent")
    name = f"{stem}.npy"
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    dir_fd = os.open(directory, DIR_FLAGS)
    try:
        write_new_file(dir_fd, name, buffer.getbuffer())
    finally:
        os.close(dir_fd)
    return name


def close_to_others(path: str) -> None:
    """Remove the "other" permission bits of ``path`` (not following a link), by file descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o007)
    finally:
        os.close(fd)


def remove_quietly(directory: str, name: str) -> None:
    """Unlink ``name`` in ``directory`` (relative to the folder: no link is followed)."""
    try:
        dir_fd = os.open(directory, DIR_FLAGS)
    except OSError:
        return
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def chown_tree(dir_fd: int, uid: int, gid: int) -> None:
    """``fchown`` everything below the open folder ``dir_fd`` and itself (a tree the grader just made,
    before any student code runs; by file descriptor all the same)."""
    stack = [(os.dup(dir_fd), iter(os.listdir(dir_fd)))]
    try:
        while stack:
            fd, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.fchown(fd, uid, gid)
                os.close(fd)
                stack.pop()
                continue
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                stack.append((child, iter(os.listdir(child))))
            elif stat.S_ISREG(info.st_mode):
                child = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    os.fchown(child, uid, gid)
                finally:
                    os.close(child)
    finally:
        for fd, _ in stack:
            os.close(fd)


_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+),? in (?P<func>[^\s]+)')


def student_frame(stderr: str, work_dir: str) -> str:
    """Where a crashed worker was in the student's files, from its stderr ("model.py, line 9, in forward").

    faulthandler (enabled in the worker) prints the innermost frame first on a segfault;
    a Python traceback prints it last.
    """
    frames = [m for m in _FRAME.finditer(stderr or "") if m["path"].startswith(work_dir.rstrip("/") + "/")]
    if not frames:
        return ""
    frame = frames[0] if "Fatal Python error" in stderr else frames[-1]
    return f"{frame['path'][len(work_dir.rstrip('/')) + 1:]}, line {frame['line']}, in {frame['func']}"
