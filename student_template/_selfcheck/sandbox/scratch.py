"""One submission's scratch folder: made root-only, filled, then handed to the student uid.

TRUSTED side.  The folder (``mkdtemp`` under ``/tmp`` by default) stays owned by the grader
with mode 0700 while the harness and the submission are copied in, so nothing else can plant
a link in it; only then are the permissions set, by file descriptor, before any student code
runs.  The grader never changes permissions by path afterwards.  Layout and final modes (with a
student uid ``u``; without one everything stays the grader's and 0700)::

    notegrade-sandbox-XXXX/   root:u 0750  the worker starts here (Python lists it to import the harness)
      notegrade_harness/      root   0755  the harness copy (public code)
      in/                     root:u 0750  the grader's input arrays (held-out features)
      work/                   u:u    0700  the submission copy: working directory and HOME
      out/                    u:u    0700  the worker's answer arrays
      tmp/                    u:u    0700  TMPDIR

so another submission's uid, graded at the same time, can read none of it.  The worker is
started with paths relative to this folder (its command line names no folder; see
:mod:`autograder.sandbox.launch`).

Example
-------
>>> import tempfile
>>> scratch = Scratch.create(root=None)
>>> sorted(os.listdir(scratch.path)), oct(os.stat(scratch.path).st_mode & 0o777)
(['in', 'notegrade_harness', 'out', 'tmp', 'work'], '0o700')
>>> scratch.remove()
[]
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from _selfcheck.sandbox import cleanup, files, tree_copy

HARNESS_PACKAGE = "notegrade_harness"
# The harness is a sibling package (autograder/harness, or _selfcheck/harness in the template).
HARNESS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "harness")
FOLDERS = ("in", "work", "out", "tmp")


@dataclass
class Scratch:
    """The folder and its parts (absolute host paths)."""

    path: str

    @property
    def harness(self) -> str:
        return os.path.join(self.path, HARNESS_PACKAGE)

    @property
    def inputs(self) -> str:
        return os.path.join(self.path, "in")

    @property
    def work(self) -> str:
        return os.path.join(self.path, "work")

    @property
    def outputs(self) -> str:
        return os.path.join(self.path, "out")

    @property
    def tmp(self) -> str:
        return os.path.join(self.path, "tmp")

    @classmethod
    def create(cls, *, root: "str | None") -> "Scratch":
        """A new root-only folder with the harness copied in and empty ``in/ work/ out/ tmp/``."""
        path = tempfile.mkdtemp(prefix="notegrade-sandbox-", dir=root)  # 0700, ours
        fd = os.open(path, files.DIR_FLAGS)
        try:
            os.mkdir(HARNESS_PACKAGE, 0o700, dir_fd=fd)
            harness_fd = os.open(HARNESS_PACKAGE, files.DIR_FLAGS, dir_fd=fd)
            try:
                for name in sorted(os.listdir(HARNESS_DIR)):
                    if name.endswith(".py"):
                        with open(os.path.join(HARNESS_DIR, name), "rb") as source:
                            files.write_new_file(harness_fd, name, source.read())
            finally:
                os.close(harness_fd)
            for name in FOLDERS:
                os.mkdir(name, 0o700, dir_fd=fd)
        finally:
            os.close(fd)
        return cls(path)

    def copy_submission(self, submission: str, limits: object) -> tree_copy.CopyReport:
        """Copy the submission into ``work/`` (before :meth:`hand_over`)."""
        return tree_copy.copy_tree(submission, self.work, limits)

    def hand_over(self, uid: "int | None", gid: "int | None") -> None:
        """Set the modes of the module doc, by file descriptor; ``uid`` None: keep everything ours (0700)."""
        fd = os.open(self.path, files.DIR_FLAGS)
        try:
            harness_fd = os.open(HARNESS_PACKAGE, files.DIR_FLAGS, dir_fd=fd)
            try:
                os.fchmod(harness_fd, 0o755 if uid is not None else 0o700)
            finally:
                os.close(harness_fd)
            if uid is None:
                return
            for name, owner, mode in (("in", (0, gid), 0o750), ("work", (uid, gid), 0o700),
                                      ("out", (uid, gid), 0o700), ("tmp", (uid, gid), 0o700)):
                child = os.open(name, files.DIR_FLAGS, dir_fd=fd)
                try:
                    if name == "work":
                        files.chown_tree(child, uid, gid)
                    os.fchown(child, *owner)
                    os.fchmod(child, mode)
                finally:
                    os.close(child)
            os.fchown(fd, 0, gid)
            os.fchmod(fd, 0o750)
        finally:
            os.close(fd)

    def remove(self) -> "list[str]":
        """Delete the folder and everything in it, however deep (iterative); what could not be removed."""
        return cleanup.remove_tree(self.path)
