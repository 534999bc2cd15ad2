"""Which files of an upload reach the grader: the layouts students submit, and only the assignment's files.

TRUSTED side, standard library only (``run_autograder`` calls it before anything heavy is imported,
and the self-check ships it).  :func:`prepare` copies an upload into a fresh folder that the sandbox
then grades, the same way on Gradescope, in ``notegrade grade`` and in the self-check:

- **Layouts.**  Files at the top (``model.py``, ...) are graded as they are.  When everything sits
  in one top-level folder (a zipped folder: Gradescope unpacks it to ``submission/<folder>/``), that
  folder is graded, with a visible note.  ``__MACOSX/``, ``._*``, ``.DS_Store`` and ``__pycache__/``
  (what macOS zips and Python leave behind) are ignored silently.
- **Only the assignment's files** (the rubric's ``[submission] files``; default ``model.py``,
  ``losses.py``, ``train.py``, ``model.pt``) are copied.  Anything else is ignored with a note: a data
  file next to the code could carry a lookup table of the public test labels, and student code never
  needs one.  A near miss (``Model.py``, ``code/model.py``) is named with the rename that fixes it.
- Symbolic links stay links and files over ``max_file_mb`` become sparse files of the same size, so
  the sandbox refuses both with its usual message without anything being read here.

Example
-------
>>> import pathlib, tempfile
>>> upload = pathlib.Path(tempfile.mkdtemp())
>>> (upload / "my_hw").mkdir(); _ = (upload / "my_hw" / "model.py").write_text("x = 1\\n")
>>> _ = (upload / "my_hw" / "notes.txt").write_text("todo\\n"); (upload / "__MACOSX").mkdir()
>>> prepared = prepare(upload, pathlib.Path(tempfile.mkdtemp()) / "graded")
>>> prepared.folder, prepared.copied, prepared.ignored
('my_hw', ['model.py'], ['notes.txt'])
"""
from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from autograder.assignment import ASSIGNMENT_FILES  # re-exported: batch grading takes it from here

JUNK_DIRS = {"__MACOSX", "__pycache__"}
JUNK_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}
MAX_LISTED = 8


def _is_junk(name: str, is_dir: bool) -> bool:
    return name in JUNK_DIRS if is_dir else (name in JUNK_FILES or name.startswith("._"))


def _entries(folder: Path) -> "list[os.DirEntry]":
    try:
        with os.scandir(folder) as scan:
            return sorted((e for e in scan if not _is_junk(e.name, e.is_dir(follow_symlinks=False))), key=lambda e: e.name)
    except OSError:
        return []


@dataclass
class Prepared:
    """What :func:`prepare` did: the folder graded (None: the top), files copied, files ignored."""

    path: Path
    folder: "str | None" = None
    copied: "list[str]" = field(default_factory=list)
    ignored: "list[str]" = field(default_factory=list)
    hints: "dict[str, str]" = field(default_factory=dict)  # ignored path -> the assignment file it looks like

    def notes(self, *, files: "tuple[str, ...]" = ASSIGNMENT_FILES, ignored: bool = True) -> "list[str]":
        """Lines for the student: the folder graded, and (``ignored``) the files that were left out."""
        lines = []
        if self.folder:
            lines.append(f"Your upload has everything inside the folder {self.folder}/, so that folder was graded "
                         f"(Gradescope puts a zipped folder's files under it). Submit the files themselves "
                         f"({', '.join(files)}) to skip this step.")
        if ignored and self.ignored:
            listed = ", ".join(self.ignored[:MAX_LISTED]) + (f" and {len(self.ignored) - MAX_LISTED} more"
                                                            if len(self.ignored) > MAX_LISTED else "")
            lines.append(f"Ignored (only {', '.join(files)} are graded): {listed}.")
        for path, name in self.hints.items():
            lines.append(f"{path} looks like {name}: name it {name}, at the top of your upload.")
        return lines


def single_folder(upload: Path, files: "tuple[str, ...]") -> "str | None":
    """The path of the one folder holding everything, when the assignment's files aren't at the top."""
    folder, parts = upload, []
    while True:
        entries = _entries(folder)
        if any(e.name in files for e in entries) or len(entries) != 1 or not entries[0].is_dir(follow_symlinks=False):
            break
        folder = folder / entries[0].name
        parts.append(entries[0].name)
    return "/".join(parts) or None


WALK_DEPTH = 16  # folder levels listed (a 1,200-deep folder is listed as its top 16 levels, never a RecursionError)


def _walk(folder: Path, prefix: str = "") -> "list[str]":
    """Relative paths under ``folder`` (an empty folder as ``name/``), depth-first in name order, without
    recursion; folders deeper than :data:`WALK_DEPTH` are listed as ``name/``."""
    found: "list[str]" = []
    stack = [iter([(folder, prefix, entry) for entry in _entries(folder)])]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        current, rel_dir, entry = item
        rel = rel_dir + entry.name
        is_dir = entry.is_dir(follow_symlinks=False)
        inside = _entries(current / entry.name) if is_dir and entry.name not in (".git",) and len(stack) <= WALK_DEPTH \
            else []
        if inside:
            stack.append(iter([(current / entry.name, rel + "/", child) for child in inside]))
        else:
            found.append(rel + ("/" if is_dir else ""))
    return found


def _copy_one(source: Path, target: Path, max_bytes: "int | None") -> None:
    info = os.lstat(source)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)  # the sandbox refuses it with its own message
    elif stat.S_ISREG(info.st_mode) and max_bytes is not None and info.st_size > max_bytes:
        with open(target, "wb") as handle:  # never read a 2 GB file: the sandbox refuses it by size
            handle.truncate(info.st_size)
    elif stat.S_ISREG(info.st_mode):
        shutil.copyfile(source, target, follow_symlinks=False)


def prepare(upload: "str | os.PathLike", dest: "str | os.PathLike", *, files: "tuple[str, ...]" = ASSIGNMENT_FILES,
            max_file_mb: "float | None" = None, overrides: "dict[str, Path] | None" = None) -> Prepared:
    """Copy the assignment's ``files`` of ``upload`` (a folder) into the new folder ``dest``.

    ``overrides``: file name -> a path to take it from instead (the self-check's ``--model``).
    """
    upload, dest = Path(upload), Path(dest)
    dest.mkdir(mode=0o755)
    folder = single_folder(upload, files) if upload.is_dir() else None
    base = upload / folder if folder else upload
    prepared = Prepared(path=dest, folder=folder)
    max_bytes = int(max_file_mb * (1 << 20)) if max_file_mb else None
    for name in files:
        source = (overrides or {}).get(name) or base / name
        if os.path.lexists(source):
            _copy_one(Path(source), dest / name, max_bytes)
            prepared.copied.append(name)
    taken = set(prepared.copied)
    for rel in _walk(base) if base.is_dir() else []:
        if rel in taken:
            continue
        prepared.ignored.append(rel)
        leaf = rel.rstrip("/").rsplit("/", 1)[-1]
        match = next((f for f in files if f.lower() == leaf.lower()), None)
        if match is not None and match not in taken:
            prepared.hints[rel] = match
    return prepared
