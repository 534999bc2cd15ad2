"""The one atomic writer, and the one owner of the modes of what the toolkit writes.

A fresh temp file beside the target, then ``os.replace``: readers never see half a file; a file
or symlink someone planted at the target is replaced, not followed; the mode is set on the temp
file before it is visible, whatever the umask.  :class:`PendingFile` is the temp file itself, for
writers that stream into it (a memory-mapped feature file, ``np.save``, a zip, a CSV writer);
:func:`write_atomically` writes bytes or text through it.

Anything a student must not read (held-out files, secrets, autograder zips, students' results,
unpacked exports, integrity evidence) is :data:`PRIVATE` (0600) in folders made by
:func:`private_dir` (0700), whatever the umask: at the ``uid`` isolation level student code runs
as another uid on the same filesystem, and a 0644 file under a 0755 folder is open to it
(:mod:`autograder.sandbox.exposure` refuses to grade with one).  A private file's missing parent
folders are made 0700 too.  Student-facing files (the handout, the self-check) stay :data:`PUBLIC`.
Standard library only: the grader's last-resort results.json is written with it even when
importing the grading modules failed.

Example
-------
>>> import json, os, pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> path = write_json_atomically(folder / "results.json", {"score": 1.0}, mode=0o600)
>>> json.loads(path.read_text()), oct(os.stat(path).st_mode & 0o777)
({'score': 1.0}, '0o600')
>>> with PendingFile(folder / "table.csv") as pending:
...     _ = pending.handle.write(b"a,b\\n")
>>> (folder / "table.csv").read_text(), sorted(p.name for p in folder.iterdir())
('a,b\\n', ['results.json', 'table.csv'])
>>> key = write_atomically(folder / "new" / "key.txt", "k", mode=PRIVATE)
>>> oct(key.stat().st_mode & 0o777), oct(key.parent.stat().st_mode & 0o777)
('0o600', '0o700')
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

PUBLIC = 0o644   # results.json in Gradescope's layout, student-facing files: read by whoever may read the folder
PRIVATE = 0o600  # held-out files, secrets, zips, students' results: the owner only
PRIVATE_DIR = 0o700


def is_private(mode: int) -> bool:
    """True when ``mode`` gives group and others nothing."""
    return not mode & 0o077


def private_dir(path: "str | os.PathLike") -> pathlib.Path:
    """``path`` and the missing folders above it, created 0700 whatever the umask (an existing
    folder is the instructor's own: left as it is)."""
    path = pathlib.Path(path)
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:  # made meanwhile (a parallel grader): left as it is
            continue
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is cut by the umask
    return path


class PendingFile:
    """A new temp file beside ``path`` (``.<name>-XXXX.partial``, permission bits ``mode``), open as
    ``handle`` (binary, read-write, never reopened by name); :meth:`commit` puts it in place with
    ``os.replace``, :meth:`discard` removes it.  As a context manager: committed when the block
    ends normally, discarded when it raises."""

    def __init__(self, path: "str | os.PathLike", *, mode: int = PUBLIC, fsync: bool = True):
        self.path, self.fsync = pathlib.Path(path), fsync
        if is_private(mode):
            private_dir(self.path.parent)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}-", suffix=".partial", dir=self.path.parent)
        self.tmp = pathlib.Path(tmp)
        try:
            os.fchmod(fd, mode)
            self.handle = os.fdopen(fd, "w+b")
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise

    def commit(self) -> pathlib.Path:
        """Flush (and fsync, unless told not to), close and rename onto the target; the target."""
        try:
            self.handle.flush()
            if self.fsync:
                os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Close and remove the temp file (the target is left as it was)."""
        try:
            self.handle.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "PendingFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_atomically(path: "str | os.PathLike", data: "bytes | str", *, mode: int = PUBLIC, fsync: bool = True) -> pathlib.Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically with permission bits ``mode``."""
    with PendingFile(path, mode=mode, fsync=fsync) as pending:
        pending.handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return pending.path


def write_json_atomically(path: "str | os.PathLike", data: Any, *, mode: int = PUBLIC) -> pathlib.Path:
    """``data`` as indented JSON (NaN refused: Gradescope's parser rejects it), atomically."""
    return write_atomically(path, json.dumps(data, indent=2, allow_nan=False) + "\n", mode=mode)


def copy_atomically(src: "str | os.PathLike", dest: "str | os.PathLike", *, mode: int = PUBLIC) -> pathlib.Path:
    """A copy of the file ``src`` at ``dest``, atomically, with permission bits ``mode`` (not ``src``'s)."""
    with open(src, "rb") as source, PendingFile(dest, mode=mode, fsync=False) as pending:
        while chunk := source.read(1 << 20):
            pending.handle.write(chunk)
    return pending.path


def open_private(path: "str | os.PathLike") -> "Any":
    """``path`` opened for writing in place (a log someone follows while it grows; binary), truncated,
    0600 whatever the umask, its missing folders 0700; a link planted there is refused, not followed."""
    path = pathlib.Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE)
    try:
        os.fchmod(fd, PRIVATE)  # an existing file keeps its mode through O_CREAT
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise
