"""Files crossing the sandbox boundary: the scratch copy of a submission and the worker's arrays.

TRUSTED side.  :func:`copy_submission` copies regular files only, never following links,
within size limits, and never reads a refused file (a 2 GB ``model.pt`` costs nothing).
:func:`read_array` is the only way arrays come back from the worker: opened without following
symlinks, regular files owned by the worker's uid only, size-capped, ``allow_pickle=False``,
numeric dtypes only.

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
import shutil
import stat
import sys
from typing import Any

import numpy as np

SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,160}\.npy$")
SKIPPED_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}


def human_size(n_bytes: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} bytes"


def write_input(directory: str, stem: str, array: np.ndarray) -> str:
    """Save a numeric array for the worker to read; returns the file name."""
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"input {stem} has dtype {array.dtype}; only numeric arrays are sent")
    name = f"{stem}.npy"
    path = os.path.join(directory, name)
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    os.chmod(path, 0o644)
    return name


def read_array(directory: str, name: str, *, max_bytes: int, owner_uid: int) -> np.ndarray:
    """Load a worker's ``.npy`` safely (raises ValueError with a reason)."""
    if not SAFE_NAME.match(name):
        raise ValueError(f"unsafe file name {name!r}")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as err:
        raise ValueError(f"cannot open {name}: {err.strerror}") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != owner_uid:
            raise ValueError(f"{name} is not a regular file written by the worker")
        if info.st_size > max_bytes:
            raise ValueError(f"{name} is {human_size(info.st_size)}; the limit is {human_size(max_bytes)}")
        data = handle.read(max_bytes + 1)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:
        raise ValueError(f"{name} is not a valid .npy array ({type(err).__name__})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ValueError(f"{name} has a non-numeric dtype")
    return array


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_tree(path: str) -> None:
    def retry(function: Any, failed: str, _exc: Any) -> None:
        try:
            os.chmod(failed if os.path.isdir(failed) else os.path.dirname(failed), 0o700)
            function(failed)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def copy_submission(src: str, dst: str, limits: Any, owner: "tuple[int, int] | None"
                    ) -> "tuple[dict[str, str], set[str], dict[str, str]]":
    """Copy regular files only, never following links, within the size limits.

    Returns (problems by relative path, copied relative paths, text of small ``.py`` files).
    """
    problems: "dict[str, str]" = {}
    copied: "set[str]" = set()
    sources: "dict[str, str]" = {}
    max_file = int(limits.max_file_mb * (1 << 20))
    budget = int(limits.max_total_mb * (1 << 20))
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        rel_dir = os.path.relpath(dirpath, src)
        for name in list(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if name in SKIPPED_DIRS or os.path.islink(os.path.join(dirpath, name)):
                dirnames.remove(name)
                if os.path.islink(os.path.join(dirpath, name)):
                    problems[rel] = f"{rel} is a symbolic link; submit the directory itself"
                continue
            os.makedirs(os.path.join(dst, rel), mode=0o755, exist_ok=True)
            if owner:
                os.chown(os.path.join(dst, rel), *owner)
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            info = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(info.st_mode):
                problems[rel] = f"{rel} is a symbolic link; submit the file itself"
            elif not stat.S_ISREG(info.st_mode):
                problems[rel] = f"{rel} is not a regular file"
            elif info.st_size > max_file:
                problems[rel] = f"{rel} is {human_size(info.st_size)}; the limit is {limits.max_file_mb:g} MB"
            elif info.st_size > budget or len(copied) >= limits.max_files:
                problems[rel] = (f"{rel} was not copied: the submission is over {limits.max_total_mb:g} MB "
                                 f"or {limits.max_files} files in total")
            else:
                budget -= info.st_size
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NOFOLLOW)
                target = os.path.join(dst, rel)
                with os.fdopen(fd, "rb") as reader, open(target, "wb") as writer:
                    data = reader.read(max_file + 1)
                    writer.write(data)
                os.chmod(target, 0o644)
                if owner:
                    os.chown(target, *owner)
                copied.add(rel)
                if name.endswith(".py") and len(data) <= 1 << 20:
                    sources[rel] = data.decode("utf-8", errors="replace")
    return problems, copied, sources


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
