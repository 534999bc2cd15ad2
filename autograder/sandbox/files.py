"""Files crossing into the sandbox: the submission copy and the grader's input arrays.

TRUSTED side.  Everything goes through directory file descriptors: a source folder is walked
with ``openat(..., O_NOFOLLOW)`` (a symlink is reported, never followed), targets are created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to a folder the grader made, and no path is
ever resolved again after it was opened.  :func:`copy_tree` copies regular files only,
iteratively (a folder nested 1,200 levels deep is refused with a message, not a
``RecursionError``), within size limits, and never reads a refused file (a 2 GB ``model.pt``
costs nothing).  Answers coming back are :mod:`autograder.sandbox.answers`' business.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SKIPPED_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}
MAX_DEPTH = 16  # folder levels copied from a submission
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


@dataclass
class CopyReport:
    """What :func:`copy_tree` did: problems by relative path, copied files, text of small ``.py`` files."""

    problems: "dict[str, str]" = field(default_factory=dict)
    copied: "set[str]" = field(default_factory=set)
    sources: "dict[str, str]" = field(default_factory=dict)


def _copy_file(src_fd: int, dst_fd: int, name: str, size: int) -> bytes:
    """Copy one opened file; returns its first MiB (for ``.py`` sources)."""
    head = b""
    fd = os.open(name, NEW_FILE, 0o644, dir_fd=dst_fd)
    try:
        os.fchmod(fd, 0o644)
        left = size
        while left > 0:
            chunk = os.read(src_fd, min(left, 1 << 20))
            if not chunk:
                break
            if len(head) < 1 << 20:
                head += chunk[: (1 << 20) - len(head)]
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            left -= len(chunk)
    finally:
        os.close(fd)
    return head


def copy_tree(src: str, dst: str, limits: Any) -> CopyReport:
    """Copy the regular files of ``src`` into the existing empty folder ``dst``, never following links.

    ``limits`` has ``max_file_mb``, ``max_total_mb`` and ``max_files`` (folders count as files).
    Iterative, with one open folder per level (at most :data:`MAX_DEPTH`)."""
    report = CopyReport()
    max_file = int(limits.max_file_mb * (1 << 20))
    budget = int(limits.max_total_mb * (1 << 20))
    entries = 0
    src_root, dst_root = os.open(src, DIR_FLAGS), os.open(dst, DIR_FLAGS)
    stack = [(src_root, dst_root, "", iter(sorted(os.listdir(src_root))))]
    try:
        while stack:
            src_fd, dst_fd, rel_dir, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(src_fd)
                os.close(dst_fd)
                stack.pop()
                continue
            rel = os.path.join(rel_dir, name)
            try:
                info = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
            except OSError as err:
                report.problems[rel] = f"{rel} could not be read ({err.strerror})"
                continue
            if stat.S_ISLNK(info.st_mode):
                report.problems[rel] = f"{rel} is a symbolic link; submit the file itself"
                continue
            entries += 1
            if entries > limits.max_files:
                report.problems[rel] = (f"{rel} was not copied: the submission is over {limits.max_total_mb:g} MB "
                                        f"or {limits.max_files} files in total")
                continue
            if stat.S_ISDIR(info.st_mode):
                if name in SKIPPED_DIRS:
                    continue
                if len(stack) >= MAX_DEPTH:
                    report.problems[rel] = f"the folder {rel[:120]}... is nested deeper than {MAX_DEPTH} levels; it was not copied"
                    continue
                os.mkdir(name, 0o755, dir_fd=dst_fd)
                child_src = os.open(name, DIR_FLAGS, dir_fd=src_fd)
                child_dst = os.open(name, DIR_FLAGS, dir_fd=dst_fd)
                stack.append((child_src, child_dst, rel, iter(sorted(os.listdir(child_src)))))
            elif not stat.S_ISREG(info.st_mode):
                report.problems[rel] = f"{rel} is not a regular file"
            elif info.st_size > max_file:
                report.problems[rel] = f"{rel} is {human_size(info.st_size)}; the limit is {limits.max_file_mb:g} MB"
            elif info.st_size > budget:
                report.problems[rel] = (f"{rel} was not copied: the submission is over {limits.max_total_mb:g} MB "
                                        f"or {limits.max_files} files in total")
            else:
                budget -= info.st_size
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
                        report.problems[rel] = f"{rel} is not a regular file"
                        continue
                    head = _copy_file(fd, dst_fd, name, info.st_size)
                finally:
                    os.close(fd)
                report.copied.add(rel)
                if name.endswith(".py") and info.st_size <= 1 << 20:
                    report.sources[rel] = head.decode("utf-8", errors="replace")
    finally:
        for src_fd, dst_fd, _, _ in stack:
            os.close(src_fd)
            os.close(dst_fd)
    return report


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
