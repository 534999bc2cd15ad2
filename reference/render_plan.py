"""Which SoundFont presets become instruments, which split each goes to, and which notes it plays.

Split out of :mod:`reference.render` so the seeded choices (pure Python and NumPy, no FluidSynth)
can be read and tested apart from the audio; :mod:`reference.render` documents the rules and
:mod:`reference.gm_families` maps each preset to its family and pitch range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from autograder.featurefile import FAMILIES
from reference.gm_families import ProgramInfo, preset_info
from reference.nsynth import SOURCES

SPLITS = ("train", "valid", "test")
HELD_FRACTION = 0.15  # of each family's instruments, for valid and for test each


@dataclass
class Instrument:
    """One SoundFont preset rendered as an NSynth instrument."""

    soundfont: str
    bank: int
    program: int
    preset_name: str
    info: ProgramInfo
    split: str = ""
    instrument: int = -1  # global id
    instrument_str: str = ""
    notes: list[tuple[int, int, int]] = field(default_factory=list)  # (note id, pitch, velocity)
    variation: Any = None  # a secret render variation (reference.render_variation.InstrumentVariation), or None


def plan(presets: dict[str, list[tuple[int, int, str]]], *, seed: int, notes_per_instrument: int,
         pitch_range: tuple[int, int], velocities: Sequence[int],
         max_programs_per_family: int | None, single_split: str | None = None) -> list[Instrument]:
    """Choose instruments, their split and their notes; deterministic in the seed and options.

    ``single_split``: every instrument goes to this one split (a control split: no train/valid)."""
    by_family: dict[str, list[Instrument]] = {f: [] for f in FAMILIES}
    for soundfont, rows in presets.items():
        for bank, program, name in rows:
            info = preset_info(bank, program, name)
            if info is not None:
                by_family[info.family].append(Instrument(soundfont, bank, program, name, info))
    chosen: list[Instrument] = []
    for family_id, family in enumerate(FAMILIES):
        # A SoundFont's program and its bank variants ("Violin", "Slow Violin", "Violins Slow") share
        # samples, so they form one group and go to the same split.
        groups: dict[tuple[str, int], list[Instrument]] = {}
        for inst in by_family[family]:
            groups.setdefault((inst.soundfont, inst.program), []).append(inst)
        keys = list(groups)
        order = np.random.default_rng([seed, family_id]).permutation(len(keys))
        keys = [keys[i] for i in order][:max_programs_per_family]
        n = len(keys)
        n_held = max(1, round(HELD_FRACTION * n)) if n >= 3 else 0
        splits = ["valid"] * n_held + ["test"] * n_held + (["test"] if n == 2 else [])
        for key, split in zip(keys, splits + ["train"] * n):
            split = single_split or split
            for inst in groups[key]:
                inst.split = split
                chosen.append(inst)
    # Ids and NNN numbers in a stable order: family, source, SoundFont, bank, program.
    font_rank = {sf_path: i for i, sf_path in enumerate(presets)}
    chosen.sort(key=lambda x: (FAMILIES.index(x.info.family), SOURCES.index(x.info.source),
                               font_rank[x.soundfont], x.bank, x.program))
    per_kind: dict[tuple[str, str], int] = {}
    note_id = 0
    for inst_id, inst in enumerate(chosen):
        kind = (inst.info.family, inst.info.source)
        inst.instrument, per_kind[kind] = inst_id, per_kind.get(kind, -1) + 1
        inst.instrument_str = f"{kind[0]}_{kind[1]}_{per_kind[kind]:03d}"
        lo, hi = max(inst.info.low, pitch_range[0], 21), min(inst.info.high, pitch_range[1], 108)
        grid = [(p, v) for p in range(lo, hi + 1) for v in velocities]
        if len(grid) > notes_per_instrument:
            pick = np.random.default_rng([seed, 1, inst_id]).choice(len(grid), notes_per_instrument, replace=False)
            grid = [grid[i] for i in sorted(pick)]
        inst.notes = [(note_id + i, p, v) for i, (p, v) in enumerate(grid)]
        note_id += len(grid)
    return chosen
