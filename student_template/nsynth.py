"""Loader for NSynth splits in the official jsonwav layout (and the rendered offline dataset).

A split directory ``nsynth-<split>/`` holds ``examples.json`` (one JSON object keyed by
``note_str``; the real files are pretty-printed with indent 4 and ``", "`` separators, so lines
end in a space, and keys come in arbitrary order) and ``audio/<note_str>.wav`` (16 kHz mono
16-bit PCM, 64,000 samples).  :func:`load_split` reads and validates the index and filters it;
:func:`read_wav` / :func:`read_wav_into` decode one note with soundfile (an int16 read of a file
with the plain 44-byte NSynth header copies its samples straight from the file: the same values,
without soundfile's per-file overhead).  Every problem a user can fix is a
:class:`NotegradeError` that names the file, the note and what to do.

Family ids: 0 bass, 1 brass, 2 flute, 3 guitar, 4 keyboard, 5 mallet, 6 organ, 7 reed,
8 string, 9 synth_lead, 10 vocal.  Sources: 0 acoustic, 1 electronic, 2 synthetic.

Example
-------
(Skipped by the doctest run: it needs an NSynth split on disk.)

>>> split = load_split("nsynth-valid", families=["bass", "guitar"], pitches=(36, 72))  # doctest: +SKIP
>>> note = split.notes[0]                                                               # doctest: +SKIP
>>> note.note_str, note.family, read_wav(note.path).shape                               # doctest: +SKIP
('bass_electronic_018-036-100', 0, (64000,))
"""
from __future__ import annotations

import gc
import json
import os
import struct
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from errors import NotegradeError
from featurefile import FAMILIES

SAMPLE_RATE = 16_000
N_SAMPLES = 64_000
SOURCES = ("acoustic", "electronic", "synthetic")
QUALITIES = ("bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic",
             "nonlinear_env", "percussive", "reverb", "tempo-synced")
VELOCITIES = (25, 50, 75, 100, 127)
# Every field of an NSynth entry except note_str (which is also the key).
REQUIRED_FIELDS = ("note", "instrument", "instrument_str", "pitch", "velocity", "sample_rate", "qualities",
                   "qualities_str", "instrument_family", "instrument_family_str", "instrument_source",
                   "instrument_source_str")


@dataclass(frozen=True)
class NSynthNote:
    """One entry of examples.json (``family``/``source`` are the integer ids)."""

    note_str: str
    note: int
    instrument: int
    instrument_str: str
    pitch: int
    velocity: int
    family: int
    source: int
    qualities: tuple[int, ...]
    path: Path

    @property
    def family_str(self) -> str:
        return FAMILIES[self.family]

    @property
    def source_str(self) -> str:
        return SOURCES[self.source]


@dataclass
class NSynthSplit:
    """The (filtered) notes of one split directory, ordered by ``note`` id."""

    root: Path
    notes: list[NSynthNote] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.notes)

    def family_counts(self) -> dict[str, int]:
        counts = Counter(n.family for n in self.notes)
        return {name: counts.get(i, 0) for i, name in enumerate(FAMILIES)}


def _ids(values: Iterable | None, names: tuple[str, ...], what: str) -> set[int] | None:
    """Names or integer ids -> a set of ids (None = no filter)."""
    if values is None:
        return None
    ids = set()
    for v in values:
        if isinstance(v, str) and v in names:
            ids.add(names.index(v))
        elif isinstance(v, (int, np.integer)) and 0 <= v < len(names):
            ids.add(int(v))
        else:
            raise NotegradeError(f"unknown {what} {v!r}; use one of {', '.join(names)} (or ids 0-{len(names) - 1})")
    return ids


def _parse_entry(key: str, entry: object, index_path: Path, audio_dir: Path) -> NSynthNote:
    if not isinstance(entry, dict):
        raise NotegradeError(f"{index_path}: entry {key!r} is not a JSON object; each value must be an NSynth note record")
    missing = [f for f in REQUIRED_FIELDS if f not in entry]
    if missing:
        raise NotegradeError(f"{index_path}: entry {key!r} is missing field(s) {', '.join(missing)}; "
                             "every entry needs all NSynth fields (re-extract or re-render the split)")
    if entry.get("note_str", key) != key:
        raise NotegradeError(f"{index_path}: entry {key!r} has note_str {entry['note_str']!r}; the key and note_str must agree")
    fam_id, fam_str = entry["instrument_family"], entry["instrument_family_str"]
    if fam_str not in FAMILIES or not isinstance(fam_id, int) or FAMILIES.index(fam_str) != fam_id:
        raise NotegradeError(f"{index_path}: entry {key!r} has unknown family {fam_str!r} (id {fam_id!r}); "
                             f"families are {', '.join(f'{i} {n}' for i, n in enumerate(FAMILIES))}")
    src_id, src_str = entry["instrument_source"], entry["instrument_source_str"]
    if src_str not in SOURCES or SOURCES.index(src_str) != src_id:
        raise NotegradeError(f"{index_path}: entry {key!r} has unknown source {src_str!r} (id {src_id!r}); "
                             f"sources are {', '.join(f'{i} {n}' for i, n in enumerate(SOURCES))}")
    if entry["sample_rate"] != SAMPLE_RATE:
        raise NotegradeError(f"{index_path}: entry {key!r} says sample_rate {entry['sample_rate']}; NSynth audio is {SAMPLE_RATE} Hz")
    try:
        return NSynthNote(note_str=key, note=int(entry["note"]), instrument=int(entry["instrument"]),
                          instrument_str=str(entry["instrument_str"]), pitch=int(entry["pitch"]),
                          velocity=int(entry["velocity"]), family=fam_id, source=src_id,
                          qualities=tuple(int(q) for q in entry["qualities"]), path=audio_dir / f"{key}.wav")
    except (TypeError, ValueError) as err:
        raise NotegradeError(f"{index_path}: entry {key!r} has a field of the wrong type ({err}); "
                             "note, instrument, pitch and velocity must be integers") from None


@contextmanager
def _collector_paused():
    """Parsing an index makes many small acyclic objects; with torch loaded, each full collection
    they would trigger walks ~160k objects (~70 ms), so the cyclic collector waits until the end."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_split(split_dir: str | Path, *, families: Iterable | None = None, sources: Iterable | None = None,
               pitches: tuple[int, int] | Iterable[int] | None = None, velocities: Iterable[int] | None = None,
               check_files: bool = True) -> NSynthSplit:
    """Read ``split_dir/examples.json`` and keep the notes that pass every filter.

    ``families``/``sources``: names or ids; ``pitches``: an inclusive ``(lo, hi)`` range or a
    collection of MIDI pitches; ``velocities``: a collection.  With ``check_files`` every kept
    note's WAV must exist (a missing one is reported before any decoding starts).
    """
    root = Path(split_dir)
    index_path = root / "examples.json"
    if not root.is_dir():
        raise NotegradeError(f"{root}: no such NSynth split directory (expected nsynth-<split>/ with examples.json and audio/)")
    if not index_path.is_file():
        raise NotegradeError(f"{index_path}: missing; an NSynth split directory holds examples.json and audio/ "
                             "(unpack nsynth-<split>.jsonwav.tar.gz or run `notegrade data render`)")
    with _collector_paused():
        return _load_index(root, index_path, families, sources, pitches, velocities, check_files)


def _load_index(root: Path, index_path: Path, families, sources, pitches, velocities, check_files: bool) -> NSynthSplit:
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NotegradeError(f"{index_path}: not valid JSON ({err}); re-extract the split") from None
    if not isinstance(index, dict):
        raise NotegradeError(f"{index_path}: expected one JSON object keyed by note_str, got a {type(index).__name__}")
    fam_ids, src_ids = _ids(families, FAMILIES, "family"), _ids(sources, SOURCES, "source")
    if isinstance(pitches, tuple) and len(pitches) == 2:
        pitch_set = set(range(pitches[0], pitches[1] + 1))
    else:
        pitch_set = None if pitches is None else set(pitches)
    vel_set = None if velocities is None else set(velocities)
    audio_dir = root / "audio"
    notes = []
    for key, entry in index.items():
        note = _parse_entry(key, entry, index_path, audio_dir)
        if ((fam_ids is None or note.family in fam_ids) and (src_ids is None or note.source in src_ids)
                and (pitch_set is None or note.pitch in pitch_set) and (vel_set is None or note.velocity in vel_set)):
            notes.append(note)
    notes.sort(key=lambda n: n.note)
    if check_files:
        try:  # one directory listing, not a stat per note (a symlink is followed)
            present = {e.name for e in os.scandir(audio_dir) if e.is_file()}
        except OSError:
            present = set()
        missing = [n.note_str for n in notes if n.path.name not in present]
        if missing:
            raise NotegradeError(f"{audio_dir}: {len(missing)} WAV file(s) listed in examples.json are missing, "
                                 f"e.g. {missing[0]}.wav; re-extract the split's audio/ folder")
    return NSynthSplit(root=root, notes=notes)


# Bytes 8-44 of a plain NSynth WAV: WAVE, a 16-byte PCM fmt chunk (mono, 16 kHz, 16 bit), the data chunk.
_PLAIN_HEADER = struct.pack("<4s4sIHHIIHH4sI", b"WAVE", b"fmt ", 16, 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16,
                            b"data", 2 * N_SAMPLES)


def _read_plain_pcm(path: str | Path, out: np.ndarray) -> bool:
    """Read the samples of a plain 44-byte-header NSynth WAV straight into int16 ``out``; False if
    the file is anything else (another header, short, unreadable), for soundfile to decode or explain."""
    if out.dtype != np.int16 or out.shape != (N_SAMPLES,) or not out.flags.c_contiguous or sys.byteorder != "little":
        return False
    header = bytearray(44)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            got = os.readv(fd, [header, out])
        finally:
            os.close(fd)
    except OSError:
        return False
    return got == 44 + 2 * N_SAMPLES and header[:4] == b"RIFF" and header[8:] == _PLAIN_HEADER


def read_wav_into(path: str | Path, out: np.ndarray) -> None:
    """Decode one NSynth WAV into ``out`` (int16 (64000,) or float32 in [-1, 1]), checking its format."""
    if _read_plain_pcm(path, out):
        return
    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate != SAMPLE_RATE or f.channels != 1 or f.frames != N_SAMPLES:
                raise NotegradeError(
                    f"{path}: {f.samplerate} Hz, {f.channels} channel(s), {f.frames} samples; NSynth notes are "
                    f"{SAMPLE_RATE} Hz mono with {N_SAMPLES} samples (4 s): resample/trim it or re-extract the split")
            got = f.read(N_SAMPLES, dtype=out.dtype.name, out=out)
    except sf.LibsndfileError as err:
        if not Path(path).exists():
            raise NotegradeError(f"{path}: missing WAV file listed in examples.json; re-extract the split") from None
        raise NotegradeError(f"{path}: corrupt or unreadable WAV ({err}); re-extract or re-render this note") from None
    if len(got) != N_SAMPLES:
        raise NotegradeError(f"{path}: only {len(got)} of {N_SAMPLES} samples could be read; the file is truncated")


def read_wav(path: str | Path, *, dtype: str = "float32") -> np.ndarray:
    """Decode one NSynth WAV as a (64000,) array (``float32`` in [-1, 1] or ``int16``)."""
    out = np.empty(N_SAMPLES, dtype=dtype)
    read_wav_into(path, out)
    return out
