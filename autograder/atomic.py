"""The one atomic writer: a fresh temp file beside the target, then ``os.replace``.

Readers never see half a file; a file or symlink someone planted at the target is replaced, not
followed; the mode is set on the temp file before it is visible, whatever the umask (0600 for
anything a student must not read).  :class:`PendingFile` is the temp file itself, for writers
that stream into it (a memory-mapped feature file, ``np.save``, a CSV writer);
:func:`write_atomically` writes bytes or text through it.  Standard library only: the grader's
last-resort results.json is written with it even when importing the grading modules failed.

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
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

PUBLIC = 0o644   # results.json, reports: read by whoever may read the folder
PRIVATE = 0o600  # held-out files, secrets, zips: the owner only


class PendingFile:
    """A new temp file beside ``path`` (``.<name>-XXXX.partial``, permission bits ``mode``), open as
    ``handle`` (binary, read-write, never reopened by name); :meth:`commit` puts it in place with
    ``os.replace``, :meth:`discard` removes it.  As a context manager: committed when the block
    ends normally, discarded when it raises."""

    def __init__(self, path: "str | os.PathLike", *, mode: int = PUBLIC, fsync: bool = True):
        self.path, self.fsync = pathlib.Path(path), fsync
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
