"""The one copy of a tree a student controls into a folder the grader made: no link followed, no recursion.

TRUSTED side.  A source folder is walked with ``openat(..., O_NOFOLLOW)`` (a symlink is reported
or recreated as a link, never followed), targets are created with ``O_CREAT | O_EXCL |
O_NOFOLLOW`` relative to a folder the grader made, and no path is resolved again after it was
opened.  :func:`copy_tree` works iteratively, one open folder per level (a folder nested 1,200
levels deep is cut with a message, not a ``RecursionError``), within size limits, and never reads
a refused file (a 2 GB ``model.pt`` costs nothing).  :class:`CopyRules` says what it does with
what it meets: the sandbox's copy of a submission (:meth:`CopyRules.for_submission`) and
``notegrade grade``'s staging (:func:`autograder.instructor.grading.local.stage_tree`) differ only
there.

Example
-------
>>> import pathlib, tempfile
>>> src, dst = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp())
>>> _ = (src / "model.py").write_text("x = 1\\n"); (src / "train.py").symlink_to("/etc/passwd")
>>> report = copy_tree(str(src), str(dst), rules=CopyRules())
>>> sorted(report.copied), report.problems
(['model.py'], {'train.py': 'train.py is a symbolic link; submit the file itself'})
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable

from autograder.sandbox.files import DIR_FLAGS, NEW_FILE, human_size

SKIPPED_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}
MAX_DEPTH = 16  # folder levels copied from a submission


@dataclass
class CopyReport:
    """What :func:`copy_tree` did: problems by relative path, copied files, text of small ``.py`` files."""

    problems: "dict[str, str]" = field(default_factory=dict)
    copied: "set[str]" = field(default_factory=set)
    sources: "dict[str, str]" = field(default_factory=dict)


def submission_problem(kind: str, rel: str, detail: str, rules: "CopyRules") -> str:
    """The student-facing message for an entry :func:`copy_tree` did not copy into the sandbox."""
    over_total = (f"{rel} was not copied: the submission is over {rules.max_total_mb:g} MB "
                  f"or {rules.max_files} files in total")
    return {"unreadable": f"{rel} could not be read ({detail})",
            "link": f"{rel} is a symbolic link; submit the file itself",
            "too_many": over_total, "over_total": over_total,
            "too_deep": f"the folder {rel[:120]}... is nested deeper than {rules.max_depth} levels; it was not copied",
            "not_regular": f"{rel} is not a regular file",
            "too_large": f"{rel} is {detail}; the limit is {rules.max_file_mb:g} MB"}[kind]


@dataclass(frozen=True)
class CopyRules:
    """How :func:`copy_tree` treats what it meets; the defaults (no size bounds) plus :meth:`for_submission`'s
    bounds are the sandbox's copy of a submission.  ``explain(kind, rel, detail, rules)`` words a problem."""

    max_depth: int = MAX_DEPTH
    max_file_mb: float = float("inf")  # per file
    max_total_mb: float = float("inf")  # all files together
    max_files: float = float("inf")  # files and folders (links not counted)
    skip: "frozenset[str]" = frozenset()  # entries of these names, at any level, left out silently
    skip_dirs: "frozenset[str]" = frozenset(SKIPPED_DIRS)  # folders of these names left out silently
    keep_links: bool = False  # recreate a symbolic link as the same link (never followed) instead of refusing it
    sparse_from: float = float("inf")  # larger regular files become sparse files of the same size, never read
    note_errors: bool = False  # any OSError of an entry becomes a problem (else only a failed lstat does)
    explain: Callable[[str, str, str, "CopyRules"], str] = submission_problem

    @classmethod
    def for_submission(cls, limits: Any) -> "CopyRules":
        """The sandbox's rules: ``limits`` has ``max_file_mb``, ``max_total_mb`` and ``max_files``."""
        return cls(max_file_mb=limits.max_file_mb, max_total_mb=limits.max_total_mb, max_files=limits.max_files)


def _bytes(megabytes: float) -> float:
    return megabytes if megabytes == float("inf") else int(megabytes * (1 << 20))


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


def _sparse_file(dst_fd: int, name: str, size: int) -> None:
    """A new file of ``size`` bytes that holds nothing (refused by its size wherever it goes next)."""
    fd = os.open(name, NEW_FILE, 0o644, dir_fd=dst_fd)
    try:
        os.fchmod(fd, 0o644)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _open_pair(src: str, src_dir: "int | None", dst: str, dst_dir: "int | None", rel: str) -> tuple:
    """(source folder fd, target folder fd, relative path, its names in order), both opened without
    following a link; nothing left open when one step fails."""
    src_fd = os.open(src, DIR_FLAGS, dir_fd=src_dir)
    try:
        dst_fd = os.open(dst, DIR_FLAGS, dir_fd=dst_dir)
    except OSError:
        os.close(src_fd)
        raise
    try:
        return src_fd, dst_fd, rel, iter(sorted(os.listdir(src_fd)))
    except OSError:
        os.close(src_fd)
        os.close(dst_fd)
        raise


class _Walk:
    """One :func:`copy_tree` run: a stack of (source folder fd, target folder fd, relative path, names)."""

    def __init__(self, rules: CopyRules, report: CopyReport):
        self.rules, self.report = rules, report
        self.max_file, self.budget, self.entries = _bytes(rules.max_file_mb), _bytes(rules.max_total_mb), 0

    def problem(self, kind: str, rel: str, detail: str = "") -> None:
        self.report.problems[rel] = self.rules.explain(kind, rel, detail, self.rules)

    def entry(self, stack: list, src_fd: int, dst_fd: int, rel: str, name: str) -> None:
        """Copy, recreate, descend into or refuse the entry ``name`` of the folder ``src_fd``."""
        rules = self.rules
        try:
            info = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        except OSError as err:
            return self.problem("unreadable", rel, err.strerror)
        if stat.S_ISLNK(info.st_mode):
            if rules.keep_links:
                os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
                return None
            return self.problem("link", rel)
        self.entries += 1
        if self.entries > rules.max_files:
            return self.problem("too_many", rel)
        if stat.S_ISDIR(info.st_mode):
            if name in rules.skip_dirs:
                return None
            if len(stack) >= rules.max_depth:
                return self.problem("too_deep", rel)
            os.mkdir(name, 0o755, dir_fd=dst_fd)
            stack.append(_open_pair(name, src_fd, name, dst_fd, rel))
        elif not stat.S_ISREG(info.st_mode):
            self.problem("not_regular", rel)
        elif info.st_size > rules.sparse_from:
            _sparse_file(dst_fd, name, info.st_size)
            self.report.copied.add(rel)
        elif info.st_size > self.max_file:
            self.problem("too_large", rel, human_size(info.st_size))
        elif info.st_size > self.budget:
            self.problem("over_total", rel)
        else:
            self.budget -= info.st_size
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
                    return self.problem("not_regular", rel)
                head = _copy_file(fd, dst_fd, name, info.st_size)
            finally:
                os.close(fd)
            self.report.copied.add(rel)
            if name.endswith(".py") and info.st_size <= 1 << 20:
                self.report.sources[rel] = head.decode("utf-8", errors="replace")
        return None


def copy_tree(src: str, dst: str, limits: Any = None, *, rules: "CopyRules | None" = None) -> CopyReport:
    """Copy the regular files of ``src`` into the existing empty folder ``dst``, never following links.

    The sandbox's copy of a submission: ``limits`` has ``max_file_mb``, ``max_total_mb`` and
    ``max_files`` (folders count as files).  Other copies (``notegrade grade``'s staging) pass their
    own ``rules``.  Iterative, with one open folder per level (at most ``rules.max_depth``); the one
    place that walks a tree a student controls into a folder the grader made."""
    rules = rules or CopyRules.for_submission(limits)
    report = CopyReport()
    walk = _Walk(rules, report)
    stack = [_open_pair(src, None, dst, None, "")]
    try:
        while stack:
            src_fd, dst_fd, rel_dir, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(src_fd)
                os.close(dst_fd)
                stack.pop()
                continue
            if name in rules.skip:
                continue
            rel = os.path.join(rel_dir, name)
            try:
                walk.entry(stack, src_fd, dst_fd, rel, name)
            except OSError as err:
                if not rules.note_errors:
                    raise
                walk.problem("unreadable", rel, err.strerror or str(err))
    finally:
        for src_fd, dst_fd, _, _ in stack:
            os.close(src_fd)
            os.close(dst_fd)
    return report


