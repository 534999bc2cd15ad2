"""The feature / held-out file format (safetensors, memory-mapped): its reader and writers.

One file per split, readable with numpy + safetensors alone (torch is imported lazily, only
by :class:`FeatureLoader`), so the grader can read held-out files without torchaudio or the
``reference`` package.  What a file holds in memory (:class:`FeatureSet`, the family list
``FAMILIES``) and the batch loader (:class:`FeatureLoader`) live in ``featureset.py`` beside this
file and are re-exported here, so this module alone gives the whole feature-file API.

Layout (a standard safetensors file: 8-byte header length, JSON header, raw little-endian data):

* tensors: ``labels`` int64 (N,) family ids, ``notes`` int64 (N,) NSynth ``note`` ids,
  ``features`` float16 (N, 1, 64, 64), ``note_str`` uint8 (N, 64) zero-padded ASCII;
* ``__metadata__`` (all strings): ``format`` (``notegrade-features/1``), ``kind``
  (``features`` | ``heldout``), ``frontend_params`` (JSON), ``frontend_hash``, ``split``,
  ``families`` (JSON list of the 11 names), ``created_by``.

A held-out file may also pack a labelled training sample (``sample_*`` tensors) and a private
control split (``control_*`` tensors, versioned by its metadata entry ``control``, a JSON object
whose ``format`` is :data:`CONTROL_FORMAT`); readers of the four main tensors ignore both.

``features`` is never read whole: :func:`read_feature_file` maps it with ``np.memmap`` at the
offsets the header gives, so the 289,205-note NSynth train split (~2.4 GB fp16) costs only
the pages a batch touches.

Example
-------
>>> import tempfile, pathlib, numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.safetensors"
>>> _ = write_feature_file(path, features=np.zeros((3, 1, 64, 64), np.float16),
...     labels=np.array([0, 4, 10]), notes=np.array([7, 8, 9]),
...     note_strs=["bass_synthetic_000-040-100", "keyboard_acoustic_001-060-075",
...                "vocal_acoustic_002-064-050"],
...     frontend_params={"n_mels": 64}, frontend_hash="abc123", split="valid", kind="features")
>>> fs = read_feature_file(path, expected_frontend_hash="abc123")
>>> len(fs), fs.labels.tolist(), fs.note_strs[2], fs.kind
(3, [0, 4, 10], 'vocal_acoustic_002-064-050', 'features')
>>> [(tuple(x.shape), y.tolist()) for x, y in FeatureLoader(fs, batch_size=2, shuffle=False)]
[((2, 1, 64, 64), [0, 4]), ((1, 1, 64, 64), [10])]
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from atomic import PRIVATE, PUBLIC, PendingFile
from errors import NotegradeError
from featureset import FAMILIES, FeatureLoader, FeatureSet, check_heldout

# FAMILIES, FeatureSet and FeatureLoader are re-exported: callers, and the template's flat imports,
# name this module for the whole feature-file API.
__all__ = ["CONTROL_FORMAT", "CONTROL_PREFIX", "FAMILIES", "FEATURE_SHAPE", "FORMAT", "KINDS", "NOTE_STR_BYTES",
           "SAMPLE_PREFIX", "FeatureFileWriter", "FeatureLoader", "FeatureSet", "read_feature_file", "validate_heldout",
           "write_feature_file", "write_heldout_with_sample"]

FORMAT = "notegrade-features/1"
KINDS = ("features", "heldout")
FEATURE_SHAPE = (1, 64, 64)
NOTE_STR_BYTES = 64
SAMPLE_PREFIX = "sample_"  # a held-out file's training sample: sample_labels, ...
CONTROL_PREFIX = "control_"  # its private control split: control_labels, ...
CONTROL_FORMAT = "notegrade-control/1"  # the control part's own version, in metadata "control" (JSON)
_DTYPES = {"labels": ("I64", np.int64), "notes": ("I64", np.int64), "features": ("F16", np.float16), "note_str": ("U8", np.uint8)}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def _encode_note_strs(note_strs: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(note_strs), NOTE_STR_BYTES), dtype=np.uint8)
    for i, s in enumerate(note_strs):
        raw = s.encode("ascii")
        if len(raw) > NOTE_STR_BYTES:
            raise NotegradeError(f"note_str {s!r} is longer than {NOTE_STR_BYTES} bytes")
        out[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def _decode_note_strs(raw: np.ndarray) -> list[str]:
    return [bytes(row).rstrip(b"\0").decode("ascii") for row in raw]


def _layout(shapes: dict[str, list[int]], metadata: dict[str, str]) -> tuple[bytes, dict[str, int], int]:
    """The safetensors head (8-byte length + JSON header padded to 8 bytes) for tensors of these names and
    shapes, stored in this order without holes; each tensor's offset after the head; the data's size."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offsets, offset = {}, 0
    for name, shape in shapes.items():
        code, dtype = _DTYPES[name.removeprefix(SAMPLE_PREFIX).removeprefix(CONTROL_PREFIX)]
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offsets[name], offset = offset, offset + size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors pads the header to 8 bytes
    return struct.pack("<Q", len(blob)) + blob, offsets, offset


class FeatureFileWriter:
    """Create a feature file whose ``features`` are filled in place (for builders that stream).

    ``with FeatureFileWriter(path, n=..., ...) as w: w.features[i:j] = ...`` writes everything
    but the features up front into a temp file beside ``path``
    (:class:`autograder.atomic.PendingFile`), memory-maps its features region for writing, and
    renames it into place only on success (so an interrupted build leaves no half file).  A held-out
    file (``kind="heldout"``: its labels are the secret) is 0600 whatever the umask, a feature file 0644.
    """

    def __init__(self, path: str | os.PathLike, *, labels: np.ndarray, notes: np.ndarray,
                 note_strs: Sequence[str], frontend_params: dict, frontend_hash: str, split: str,
                 kind: str = "features", created_by: str = "notegrade") -> None:
        if kind not in KINDS:
            raise NotegradeError(f"kind must be one of {KINDS}, got {kind!r}")
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        notes = np.ascontiguousarray(notes, dtype=np.int64)
        n = labels.shape[0]
        if labels.ndim != 1 or notes.shape != (n,) or len(note_strs) != n:
            raise NotegradeError(f"labels, notes and note_strs must all have length N; got {labels.shape}, {notes.shape}, {len(note_strs)}")
        if n and (labels.min() < 0 or labels.max() >= len(FAMILIES)):
            raise NotegradeError(f"labels must be family ids 0..{len(FAMILIES) - 1}, got {labels.min()}..{labels.max()}")
        self.path = Path(path)
        small = {"labels": labels, "notes": notes, "note_str": _encode_note_strs(note_strs)}
        # int64 first, then float16, then bytes: every tensor starts aligned to its item size.
        head, offsets, size = _layout(
            {"labels": [n], "notes": [n], "features": [n, *FEATURE_SHAPE], "note_str": [n, NOTE_STR_BYTES]},
            {"format": FORMAT, "kind": kind, "frontend_params": json.dumps(frontend_params, sort_keys=True),
             "frontend_hash": str(frontend_hash), "split": str(split), "families": json.dumps(list(FAMILIES)),
             "created_by": created_by})
        self._pending = PendingFile(self.path, mode=PRIVATE if kind == "heldout" else PUBLIC, fsync=False)
        try:
            f = self._pending.handle
            f.write(head)
            f.truncate(len(head) + size)
            for name, array in small.items():
                f.seek(len(head) + offsets[name])
                f.write(array.tobytes())
            f.flush()
            self.features = np.memmap(f, dtype=np.float16, mode="r+", shape=(n, *FEATURE_SHAPE),
                                      offset=len(head) + offsets["features"]) if n else \
                np.zeros((0, *FEATURE_SHAPE), np.float16)
        except BaseException:
            self._pending.discard()
            raise

    def close(self, *, ok: bool = True) -> None:
        if isinstance(self.features, np.memmap):
            self.features.flush()
        del self.features
        if ok:
            self._pending.commit()
        else:
            self._pending.discard()

    def __enter__(self) -> "FeatureFileWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def write_feature_file(path: str | os.PathLike, *, features: np.ndarray, labels: np.ndarray, notes: np.ndarray,
                       note_strs: Sequence[str], frontend_params: dict, frontend_hash: str, split: str,
                       kind: str = "features", created_by: str = "notegrade") -> Path:
    """Write a whole feature (or held-out) file from arrays; ``features`` is cast to float16."""
    features = np.asarray(features)
    if features.shape != (len(labels), *FEATURE_SHAPE):
        raise NotegradeError(f"features must have shape (N, 1, 64, 64) with N = {len(labels)}, got {features.shape}")
    with FeatureFileWriter(path, labels=labels, notes=notes, note_strs=note_strs, frontend_params=frontend_params,
                           frontend_hash=frontend_hash, split=split, kind=kind, created_by=created_by) as writer:
        writer.features[:] = features.astype(np.float16, copy=False)
    return Path(path)


def _read_header(path: Path) -> tuple[dict, int]:
    if not path.is_file():
        raise NotegradeError(f"{path}: no such feature file (build one with `notegrade data features`)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise NotegradeError(f"{path}: not a feature file (only {size} bytes; expected a safetensors file)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or n + 8 > size:
            raise NotegradeError(f"{path}: not a feature file (no valid safetensors header; is it truncated or another format?)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise NotegradeError(f"{path}: not a feature file (its safetensors header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise NotegradeError(f"{path}: not a feature file (its safetensors header is not a JSON object)")
    return header, 8 + n


def read_feature_file(path: str | os.PathLike, *, expected_frontend_hash: str | None = None,
                      mmap: bool = True) -> FeatureSet:
    """Open a feature or held-out file, checking its format, shapes and front-end hash.

    With ``mmap=True`` (default) ``features`` is a read-only ``np.memmap``; with ``mmap=False``
    it is read into memory.  Raises :class:`NotegradeError` for anything that is not a complete
    ``notegrade-features/1`` file, or whose ``frontend_hash`` differs from ``expected_frontend_hash``.
    """
    path = Path(path)
    header, data_start = _read_header(path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise NotegradeError(f"{path}: not a notegrade feature file (metadata format is {found!r}, expected {FORMAT!r}); "
                             "build one with `notegrade data features` or `notegrade heldout`")
    missing = [k for k in ("kind", "frontend_params", "frontend_hash", "split", "families") if not isinstance(meta.get(k), str)]
    if missing or meta["kind"] not in KINDS:
        raise NotegradeError(f"{path}: malformed feature file: metadata {missing or ['kind']} missing or invalid")
    if expected_frontend_hash is not None and meta["frontend_hash"] != expected_frontend_hash:
        raise NotegradeError(
            f"{path}: made with different front-end parameters: its front-end hash is {meta['frontend_hash']}, "
            f"this toolkit's is {expected_frontend_hash} (file params: {meta['frontend_params']}); "
            "rebuild it with `notegrade data features` (or `notegrade heldout` for a held-out file)")
    if json.loads(meta["families"]) != list(FAMILIES):
        raise NotegradeError(f"{path}: malformed feature file: its family list {meta['families']} is not {list(FAMILIES)}")
    arrays = _read_tensors(path, header, data_start, prefix="", mmap=mmap)
    labels = arrays["labels"]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(FAMILIES)):
        raise NotegradeError(f"{path}: malformed feature file: labels outside 0..{len(FAMILIES) - 1}")
    parts = {}
    for prefix, what, split in ((SAMPLE_PREFIX, "training-sample", "train-sample"), (CONTROL_PREFIX, "control", "control")):
        if not any(name.startswith(prefix) for name in header):
            continue
        if prefix == CONTROL_PREFIX:
            _check_control_version(path, meta)
        tensors = _read_tensors(path, header, data_start, prefix=prefix, mmap=mmap)
        if len(tensors["labels"]) and (tensors["labels"].min() < 0 or tensors["labels"].max() >= len(FAMILIES)):
            raise NotegradeError(f"{path}: malformed feature file: {what} labels outside 0..{len(FAMILIES) - 1}")
        parts[prefix] = FeatureSet(features=tensors["features"], labels=tensors["labels"], notes=tensors["notes"],
                                   note_strs=_decode_note_strs(tensors["note_str"]),
                                   metadata={**meta, "kind": "features", "split": split}, path=path)
    return FeatureSet(features=arrays["features"], labels=labels, notes=arrays["notes"],
                      note_strs=_decode_note_strs(arrays["note_str"]), metadata=dict(meta), path=path,
                      sample=parts.get(SAMPLE_PREFIX), control=parts.get(CONTROL_PREFIX))


def validate_heldout(path: str | os.PathLike, *, frontend_hash: Callable[..., str]) -> dict:
    """The one check of a held-out file: after ``notegrade heldout`` writes it, before ``notegrade build`` packs it.

    ``frontend_hash()`` is the toolkit's front-end hash, ``frontend_hash(params)`` that of a file's
    parameters (the front-end module's ``frontend_hash``, passed in: the grading code never imports
    it).  Read with the toolkit's hash, then :func:`autograder.featureset.check_heldout`.
    """
    return check_heldout(read_feature_file(path, expected_frontend_hash=frontend_hash()), frontend_hash=frontend_hash)


def _check_control_version(path: Path, meta: dict) -> None:
    """A control part is read only under a ``control`` metadata entry of a version this reader knows."""
    try:
        found = json.loads(meta.get("control") or "null")
    except json.JSONDecodeError:
        found = None
    version = found.get("format") if isinstance(found, dict) else None
    if version != CONTROL_FORMAT:
        raise NotegradeError(f"{path}: its private control split is {version!r}, this toolkit reads "
                             f"{CONTROL_FORMAT!r}: rebuild the held-out file with this toolkit's `notegrade heldout`")


def _read_tensors(path: Path, header: dict, data_start: int, *, prefix: str, mmap: bool) -> dict[str, np.ndarray]:
    """The four tensors ``prefix + (labels, notes, features, note_str)``, checked against each other."""
    size = path.stat().st_size
    arrays: dict[str, np.ndarray] = {}
    n = None
    for name, (code, dtype) in _DTYPES.items():
        entry = header.get(prefix + name)
        if not isinstance(entry, dict) or entry.get("dtype") != code:
            raise NotegradeError(f"{path}: malformed feature file: tensor {prefix + name!r} is missing or not {code}")
        shape, (begin, end) = tuple(entry["shape"]), entry["data_offsets"]
        n = shape[0] if n is None else n
        want = {"labels": (n,), "notes": (n,), "features": (n, *FEATURE_SHAPE), "note_str": (n, NOTE_STR_BYTES)}[name]
        if shape != want or end - begin != int(np.prod(shape)) * np.dtype(dtype).itemsize:
            raise NotegradeError(f"{path}: malformed feature file: tensor {prefix + name!r} has shape {list(shape)}, "
                                 f"expected {list(want)}")
        if data_start + end > size:
            raise NotegradeError(f"{path}: truncated feature file ({size:,} bytes, the header needs "
                                 f"{data_start + end:,}); rebuild or re-copy it")
        if name == "features" and mmap and n:
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=data_start + begin)
        else:
            arrays[name] = np.fromfile(path, dtype=dtype, count=int(np.prod(shape)), offset=data_start + begin).reshape(shape)
    return arrays


def write_heldout_with_sample(path: str | os.PathLike, *, heldout: FeatureSet, sample: FeatureSet | None,
                              extra_metadata: dict[str, str] | None = None, control: FeatureSet | None = None) -> Path:
    """Write ``heldout`` (a held-out FeatureSet) to ``path`` with ``sample`` (labelled training notes) and
    ``control`` (a private control split; needs metadata ``control`` naming :data:`CONTROL_FORMAT`) packed in.

    Small files (a few thousand notes), so everything is written from memory; the file is renamed
    into place only when complete.
    """
    tensors: dict[str, np.ndarray] = {}
    for prefix, part in (("", heldout), (SAMPLE_PREFIX, sample), (CONTROL_PREFIX, control)):
        if part is None:
            continue
        tensors[prefix + "labels"] = np.ascontiguousarray(part.labels, dtype=np.int64)
        tensors[prefix + "notes"] = np.ascontiguousarray(part.notes, dtype=np.int64)
        tensors[prefix + "features"] = np.ascontiguousarray(part.features, dtype=np.float16)
        tensors[prefix + "note_str"] = _encode_note_strs(part.note_strs)
    metadata = {**heldout.metadata, **(extra_metadata or {})}
    if control is not None:
        _check_control_version(Path(path), metadata)
    # Every size is a multiple of 8 bytes (int64 counts, 64x64 float16 features, 64-byte names), so
    # every tensor stays aligned.
    head, _, _ = _layout({name: list(a.shape) for name, a in tensors.items()}, {k: str(v) for k, v in metadata.items()})
    with PendingFile(path, mode=PRIVATE) as pending:  # the held-out labels: the owner only, whatever the umask
        pending.handle.write(head)
        for array in tensors.values():
            pending.handle.write(array.tobytes())
    return Path(path)
