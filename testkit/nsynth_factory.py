"""Tiny synthetic NSynth-format splits for tests, written in milliseconds without FluidSynth.

:func:`make_nsynth_split` writes ``root/nsynth-<split>/examples.json`` + ``audio/*.wav`` in the
exact real format (16 kHz mono PCM_16, 64,000 samples, the note held 3 s then released; an
examples.json keyed by note_str, indent 4 with ``", "`` separators, keys in shuffled order).
Each family gets a distinct timbre (harmonic roll-off, odd/even harmonics, envelope), so a
small CNN can learn the families from a few notes.

Example
-------
>>> import tempfile
>>> from testkit.nsynth_factory import make_nsynth_split
>>> from reference.nsynth import load_split
>>> split_dir = make_nsynth_split(tempfile.mkdtemp(), split="valid", n_per_family=2,
...                               families=["bass", "vocal"], seed=0)
>>> split = load_split(split_dir)
>>> len(split), split.family_counts()["vocal"]
(4, 2)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from autograder.featurefile import FAMILIES

SR, N, HOLD = 16_000, 64_000, 48_000
QUALITIES = ("bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic",
             "nonlinear_env", "percussive", "reverb", "tempo-synced")
# family -> (harmonic roll-off exponent, odd harmonics only, decay per second while held, pitch range)
TIMBRES = {
    "bass": (2.0, False, 0.5, (28, 52)), "brass": (0.7, False, 0.0, (48, 72)), "flute": (3.0, True, 0.0, (60, 84)),
    "guitar": (1.5, False, 1.5, (40, 64)), "keyboard": (1.2, False, 1.0, (36, 84)), "mallet": (2.5, False, 3.0, (60, 96)),
    "organ": (0.9, True, 0.0, (36, 72)), "reed": (1.0, True, 0.2, (48, 72)), "string": (1.0, False, 0.1, (40, 76)),
    "synth_lead": (0.5, False, 0.0, (48, 84)), "vocal": (2.2, False, 0.05, (48, 72)),
}


def synth_note(family: str, pitch: int, velocity: int, rng: np.random.Generator) -> np.ndarray:
    """One 4 s float32 note: ``family``'s timbre at ``pitch``, held 3 s then released."""
    rolloff, odd_only, decay, _ = TIMBRES[family]
    t = np.arange(N) / SR
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    # One period as a wavetable (cheap: 4096 points, not 64,000 per harmonic), then read it at f0.
    phase = np.arange(4096) / 4096
    table = np.zeros(4096)
    for k in range(1, 25):
        if k * f0 >= SR / 2 or (odd_only and k % 2 == 0):
            continue
        table += np.sin(2 * np.pi * k * phase + rng.uniform(0, 2 * np.pi)) / k**rolloff
    wave = table[(np.arange(N) * (f0 * 4096 / SR)).astype(np.int64) % 4096]
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-decay * t)
    envelope[HOLD:] *= np.exp(-(t[HOLD:] - 3.0) / 0.1)  # release
    wave = wave * envelope + rng.normal(0, 1e-3, N)
    return (0.6 * velocity / 127 * wave / np.abs(wave).max()).astype(np.float32)


def make_nsynth_split(root: str | Path, *, split: str = "train", n_per_family: int = 4,
                      families: Sequence[str] = FAMILIES, seed: int = 0, n_instruments: int = 1,
                      source: str = "acoustic") -> Path:
    """Write a synthetic split with ``n_per_family`` notes per family; returns ``root/nsynth-<split>``."""
    rng = np.random.default_rng(seed)
    split_dir = Path(root) / f"nsynth-{split}"
    (split_dir / "audio").mkdir(parents=True, exist_ok=True)
    source_id = ("acoustic", "electronic", "synthetic").index(source)
    entries: dict[str, dict] = {}
    note_id = 1000 * (seed + 1)
    for family in families:
        lo, hi = TIMBRES[family][3]
        for i in range(n_per_family):
            instrument = i % n_instruments
            pitch, velocity = int(rng.integers(lo, hi + 1)), int(rng.choice([25, 50, 75, 100, 127]))
            instrument_str = f"{family}_{source}_{instrument:03d}"
            note_str = f"{instrument_str}-{pitch:03d}-{velocity:03d}"
            while note_str in entries:  # same pitch and velocity drawn twice: move up a semitone
                pitch += 1
                note_str = f"{instrument_str}-{pitch:03d}-{velocity:03d}"
            sf.write(split_dir / "audio" / f"{note_str}.wav", synth_note(family, pitch, velocity, rng), SR, subtype="PCM_16")
            qualities = [0] * 10
            entries[note_str] = {
                "qualities": qualities, "pitch": pitch, "note": note_id, "instrument_source_str": source,
                "velocity": velocity, "instrument_str": instrument_str,
                "instrument": FAMILIES.index(family) * 10 + instrument, "sample_rate": SR,
                "qualities_str": [q for q, on in zip(QUALITIES, qualities) if on],
                "instrument_source": source_id, "note_str": note_str,
                "instrument_family": FAMILIES.index(family), "instrument_family_str": family,
            }
            note_id += 1
    keys = list(entries)
    rng.shuffle(keys)  # the real files' key order is arbitrary
    with open(split_dir / "examples.json", "w") as f:
        json.dump({k: entries[k] for k in keys}, f, indent=4, separators=(", ", ": "))
    return split_dir
