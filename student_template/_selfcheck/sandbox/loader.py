"""What the dynamic loader needs to start an interpreter, found from its ELF files (no ``ldd`` run).

TRUSTED side.  bubblewrap shows the worker only what is bound into it; an interpreter outside
``/usr`` (pyenv, conda, ``/usr/local`` in the ``python:*`` images) still needs the loader named in
its ``PT_INTERP`` and the libraries of its ``DT_NEEDED`` entries, which live in the system's library
folders.  Without them ``bwrap: execvp .../python: No such file or directory``.

:func:`needed_binds` reads the interpreter binary and its ``lib-dynload`` extension modules (the
standard library's: ``_ctypes`` needs libffi, ``_ssl`` libssl...), resolves every ``DT_NEEDED`` as
``ld.so`` does (``DT_RPATH``/``DT_RUNPATH`` with ``$ORIGIN``, then ``/etc/ld.so.conf`` and the default
folders), recursively, and returns read-only binds:

- the loader file itself, at its path (``/lib64/ld-linux-x86-64.so.2`` resolves through the
  ``/lib64`` symlink that :func:`~autograder.sandbox.bubblewrap.system_binds` recreates);
- each **system library folder** that holds a needed library (``/usr/lib/x86_64-linux-gnu``): the
  machine's public libraries, so a library ``dlopen``\\ed later (libcuda, NSS) is found too;
- any other needed library **as a file** (a library beside the interpreter, outside its prefix).

Only paths that the caller's bound ``roots`` do not already cover are returned.  A file that is not
ELF (a script) yields nothing.

Example
-------
>>> interp, needed, _ = read_dynamic("/bin/sh")
>>> interp.startswith(("/lib", "/usr/lib")), "libc.so.6" in needed
(True, True)
"""
from __future__ import annotations

import functools
import glob
import os
import struct

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 1, 5, 15, 29
_DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
MAX_OBJECTS = 400  # ELF files followed (the interpreter, lib-dynload, their libraries): a safety bound


def read_dynamic(path: str) -> "tuple[str | None, list[str], list[str]]":
    """(``PT_INTERP`` or None, ``DT_NEEDED`` names, search folders from ``DT_RPATH``/``DT_RUNPATH``
    with ``$ORIGIN`` expanded) of an ELF file; ``(None, [], [])`` for anything that is not ELF."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            if head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
                return None, [], []
            wide, end = head[4] == 2, "<" if head[5] == 1 else ">"
            if wide:
                phoff, = struct.unpack_from(end + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(end + "I", head, 28)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
            segments = []
            for i in range(phnum):
                if wide:
                    kind, _, offset, vaddr, _, filesz = struct.unpack_from(end + "IIQQQQ", table, i * phentsize)
                else:
                    kind, offset, vaddr, _, filesz = struct.unpack_from(end + "IIIII", table, i * phentsize)
                segments.append((kind, offset, vaddr, filesz))
            interp = None
            for kind, offset, _, size in segments:
                if kind == PT_INTERP:
                    handle.seek(offset)
                    interp = handle.read(min(size, 4096)).split(b"\0")[0].decode(errors="replace") or None
            dynamic = next(((offset, size) for kind, offset, _, size in segments if kind == PT_DYNAMIC), None)
            if dynamic is None:
                return interp, [], []
            handle.seek(dynamic[0])
            raw = handle.read(min(dynamic[1], 1 << 20))
            entry = struct.Struct(end + ("qQ" if wide else "iI"))
            tags = [entry.unpack_from(raw, i) for i in range(0, len(raw) - entry.size + 1, entry.size)]
            strtab = next((value for tag, value in tags if tag == DT_STRTAB), None)
            if strtab is None:
                return interp, [], []
            base = next((offset + strtab - vaddr for kind, offset, vaddr, size in segments
                         if kind == PT_LOAD and vaddr <= strtab < vaddr + size), None)
            if base is None:
                return interp, [], []

            def string(at: int) -> str:
                handle.seek(base + at)
                return handle.read(4096).split(b"\0")[0].decode(errors="replace")

            needed = [string(value) for tag, value in tags if tag == DT_NEEDED]
            origin = os.path.dirname(os.path.realpath(path))
            searched = [folder.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                        for tag, value in tags if tag in (DT_RPATH, DT_RUNPATH)
                        for folder in string(value).split(":") if folder]
            return interp, needed, searched
    except (OSError, struct.error, ValueError):
        return None, [], []


def _conf_dirs(path: str, seen: "set[str]") -> "list[str]":
    """Folders listed in an ``ld.so.conf`` file, following its ``include`` globs."""
    if path in seen:
        return []
    seen.add(path)
    folders: "list[str]" = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line.startswith("include"):
            pattern = line.split(None, 1)[1] if len(line.split(None, 1)) == 2 else ""
            pattern = pattern if pattern.startswith("/") else os.path.join(os.path.dirname(path), pattern)
            for included in sorted(glob.glob(pattern)):
                folders += _conf_dirs(included, seen)
        elif line.startswith("/"):
            folders.append(line)
    return folders


@functools.lru_cache(maxsize=1)
def system_library_dirs() -> "tuple[str, ...]":
    """The folders the loader searches without being told (``/etc/ld.so.conf`` and the defaults), real paths."""
    found: "list[str]" = []
    for folder in _conf_dirs("/etc/ld.so.conf", set()) + list(_DEFAULT_DIRS):
        real = os.path.realpath(folder)
        if os.path.isdir(real) and real not in found:
            found.append(real)
    return tuple(found)


def _elf_class(path: str) -> "bytes | None":
    try:
        with open(path, "rb") as handle:
            head = handle.read(20)
    except OSError:
        return None
    return head[4:6] + head[18:20] if head[:4] == b"\x7fELF" else None  # class, byte order, machine


def _resolve(name: str, folders: "list[str]", want: "bytes | None") -> "str | None":
    """The path ``ld.so`` would load for ``name``: the first candidate of the same ELF class and machine."""
    if "/" in name:
        return name if os.path.isfile(name) else None
    for folder in folders:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate) and (want is None or _elf_class(candidate) == want):
            return candidate
    return None


def _covered(path: str, roots: "list[str]") -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def needed_binds(binaries: "list[str]", *, roots: "list[str]") -> "list[tuple[str, str, str]]":
    """Read-only binds ``("ro", source, dest)`` for the loader and libraries ``binaries`` need, beyond ``roots``."""
    system = list(system_library_dirs())
    binds: "list[tuple[str, str, str]]" = []
    bound = list(roots)
    pending = [os.path.realpath(b) for b in binaries]
    seen: "set[str]" = set()
    want = next((c for c in map(_elf_class, pending) if c is not None), None)

    def bind_file(path: str) -> None:
        dest = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if not _covered(dest, bound):
            binds.append(("ro", os.path.realpath(path), dest))
            bound.append(dest)

    while pending and len(seen) < MAX_OBJECTS:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        interp, needed, searched = read_dynamic(current)
        if interp:
            bind_file(interp)
        for name in needed:
            found = _resolve(name, searched + system, want)
            if found is None:
                continue  # the loader will say which one is missing
            folder = os.path.realpath(os.path.dirname(found))
            if folder in system and not _covered(folder, bound):
                binds.append(("ro", folder, folder))
                bound.append(folder)
            elif folder not in system:
                bind_file(found)
            pending.append(os.path.realpath(found))
    folders = [dest for _, source, dest in binds if os.path.isdir(source)]
    return sorted((b for b in binds if os.path.isdir(b[1]) or not _covered(b[2], folders)), key=lambda b: b[2])
