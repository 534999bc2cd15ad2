"""What the grader accepts back from the worker: one bounded JSON line and a few bounded arrays.

TRUSTED side.  The worker's answers are written by a process student code shares, so every
byte of them is hostile.  An answer that breaks a rule below is the submission's fault: the call
fails with :class:`AnswerError`'s message, never with an internal error of the grader.

- **The line**: at most ``SandboxLimits.response_bytes`` (1 MiB; enforced while reading), parsed
  with a depth limit (:data:`MAX_DEPTH` levels of lists and objects: a 200,000-deep line is
  refused, not a ``RecursionError``), integers of at most :data:`MAX_INT_DIGITS` digits.  NaN and
  ±Infinity are accepted as numbers (a student's loss may really be NaN); checks treat them as
  such and catch ``OverflowError`` where they convert to ``int``.
- **The arrays**: at most ``SandboxLimits.max_arrays`` per answer, each a regular ``.npy`` file
  owned by the worker's uid in the answers folder, opened relative to that folder without
  following links, at most ``array_mb`` each and ``answer_mb`` together, *counted per
  reference*: 20 names (or hard links) for one 64 MiB file cost 20 x 64 MiB and are refused
  before anything is read.  The header must describe exactly the bytes that follow, the dtype
  must be numeric, and the data is read with one copy (``numpy.fromfile``), never memory-mapped
  (a truncation under a mapping would crash the grader with SIGBUS) and never unpickled.

Example
-------
>>> parse_answer(b'{"id": 3, "ok": true, "value": {"loss": NaN}}')["value"]["loss"]
nan
>>> try:
...     parse_answer(b"[" * 100 + b"]" * 100)
... except AnswerError as err:
...     print(err)
the worker's answer is nested deeper than 64 levels
"""
from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

import numpy as np

MAX_DEPTH = 64
MAX_INT_DIGITS = 40
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,160}\.npy$")


class AnswerError(ValueError):
    """An answer that breaks a rule; the message says which (shown to the student)."""


def _size(n_bytes: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} bytes"


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise AnswerError(f"the worker's answer holds an integer of {len(text):,} digits")
    return int(text)


def _depth(value: Any) -> int:
    """Nesting depth of lists and dicts, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_answer(line: bytes) -> Any:
    """The worker's JSON line as Python data; AnswerError when it breaks a rule above."""
    try:
        value = json.loads(line, parse_int=_bounded_int)
    except RecursionError:
        raise AnswerError(f"the worker's answer is nested deeper than {MAX_DEPTH} levels") from None
    except AnswerError:
        raise
    except ValueError as err:
        raise AnswerError(f"the worker's answer is not valid JSON ({str(err)[:120]})") from None
    if _depth(value) > MAX_DEPTH:
        raise AnswerError(f"the worker's answer is nested deeper than {MAX_DEPTH} levels")
    return value


def _open_array(dir_fd: int, name: str, *, owner_uid: int) -> "tuple[int, os.stat_result]":
    if not SAFE_NAME.match(name):
        raise ValueError(f"unsafe file name {name[:80]!r}")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as err:
        raise ValueError(f"cannot open {name}: {err.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != owner_uid:
        os.close(fd)
        raise ValueError(f"{name} is not a regular file written by the worker")
    return fd, info


def _load(fd: int, name: str, size: int) -> np.ndarray:
    """Read one ``.npy`` from ``fd``: header checked against ``size``, data read once, no pickle."""
    with os.fdopen(fd, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except Exception as err:  # numpy raises several types for a malformed header
            raise ValueError(f"{name} is not a valid .npy array ({type(err).__name__})") from None
        if dtype.kind not in "biuf" or dtype.hasobject:
            raise ValueError(f"{name} has a non-numeric dtype")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count < 0 or count * dtype.itemsize != size - handle.tell():
            raise ValueError(f"{name}: its header does not match its {_size(size)} of data")
        data = np.fromfile(handle, dtype=dtype, count=count)
    if data.size != count:
        raise ValueError(f"{name} changed while it was read")
    return data.reshape(shape, order="F" if fortran else "C")


def read_arrays(directory: str, names: "dict[str, str]", *, owner_uid: int, max_count: int, max_each: int,
                max_total: int) -> "tuple[dict[str, np.ndarray], dict[str, str]]":
    """Load the answer's arrays: (arrays by name, problems by name); AnswerError when the answer as a
    whole breaks a limit (too many arrays, too many bytes together), before any data is read."""
    if len(names) > max_count:
        raise AnswerError(f"the worker's answer names {len(names):,} arrays; the limit is {max_count}")
    arrays: "dict[str, np.ndarray]" = {}
    problems: "dict[str, str]" = {}
    opened: "list[tuple[str, str, int, int]]" = []
    total = 0
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for key, filename in names.items():
            try:
                fd, info = _open_array(dir_fd, str(filename), owner_uid=owner_uid)
            except ValueError as err:
                problems[str(key)[:100]] = str(err)[:300]
                continue
            if info.st_size > max_each:
                os.close(fd)
                problems[str(key)[:100]] = f"{filename} is {_size(info.st_size)}; the limit is {_size(max_each)}"
                continue
            total += info.st_size  # per reference: a name or hard link used twice costs twice
            opened.append((str(key)[:100], str(filename), fd, info.st_size))
            if total > max_total:
                raise AnswerError(f"the worker's answer names arrays of {_size(total)} or more together "
                                  f"(hard links and repeated names count each time); the limit is {_size(max_total)}")
        while opened:
            key, filename, fd, size = opened.pop(0)
            try:
                arrays[key] = _load(fd, filename, size)
            except ValueError as err:
                problems[key] = str(err)[:300]
    finally:
        for _, _, fd, _ in opened:
            os.close(fd)
        os.close(dir_fd)
    return arrays, problems


def remove_answer_files(directory: str, names: "dict[str, str]") -> None:
    """Unlink the answer's files (relative to the folder, never following a link)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for filename in names.values():
            if SAFE_NAME.match(str(filename)):
                try:
                    os.unlink(str(filename), dir_fd=dir_fd)
                except OSError:
                    pass
    finally:
        os.close(dir_fd)
