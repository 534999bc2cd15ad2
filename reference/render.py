"""Render an offline NSynth-format dataset from General MIDI SoundFonts with FluidSynth.

``notegrade data render --out DIR`` writes ``DIR/nsynth-{train,valid,test}/`` exactly as the
official jsonwav archives unpack (examples.json + audio/<note_str>.wav, 16 kHz mono PCM_16,
64,000 samples, the note held 3 s then released), plus ``DIR/render_manifest.json``
(options, instruments, splits, counts).  Instruments are SoundFont presets (SoundFont x bank x
program: every bank variant that maps to a family counts, see :mod:`reference.gm_families`).

How the NSynth fields are set:

* Splits: per family, the SoundFont programs (each with its bank variants, which share
  samples) are shuffled with the seed and split disjointly, about 70/15/15 % into
  train/valid/test (at least one in valid and one in test when a family has 3 or more).
  Unlike NSynth, valid and test do not share instruments, and every family (synth_lead
  included) is kept in every split, so each split's accuracy covers all 11 classes.
* Notes: each instrument plays ``notes_per_instrument`` (pitch, velocity) pairs drawn with the
  seed from its program's usable range (clipped to ``--pitch-range`` and 21-108) x the
  velocities 25/50/75/100/127.  Renders that are silent (peak below -60 dBFS, e.g. a key the
  preset does not cover) or clipped (peak at full scale) are dropped.
* ``instrument_source`` comes from the GM program (:mod:`reference.gm_families`).
* ``qualities`` are measured on the audio with fixed rules (50 ms RMS frames; centroid of the
  held part): bright = centroid > 2,500 Hz, dark = centroid < 500 Hz, distortion = overdriven/
  distortion guitar and charang programs, fast_decay = level at 2.5-3 s below -20 dB of the
  peak, long_release = level at 3.5-4 s above -20 dB of the held level (and of -40 dB of the
  peak), percussive = peak within 50 ms and -6 dB by 0.5 s; multiphonic, nonlinear_env,
  reverb (FluidSynth's reverb and chorus are off) and tempo-synced are always 0.
* ``note`` ids and ``instrument`` ids are global; ``NNN`` in ``note_str`` numbers the
  instruments of each family and source, as in NSynth.

The same seed and options give byte-identical files, whatever ``--workers``.

Example
-------
>>> summary = main(out="rendered-demo", soundfonts=["/usr/share/sounds/sf2/TimGM6mb.sf2"],
...                max_programs_per_family=3, notes_per_instrument=10)  # doctest: +SKIP
>>> summary["counts"]["test"]["brass"]                                         # doctest: +SKIP
10
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from reference.gm_families import ProgramInfo, preset_info
from reference.nsynth import N_SAMPLES, QUALITIES, SAMPLE_RATE, SOURCES, VELOCITIES

DEFAULT_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2",
                      "/usr/share/sounds/sf3/MuseScore_General_Full.sf3")
DEFAULT_NOTES_PER_INSTRUMENT = 90
SPLITS = ("train", "valid", "test")
HELD_FRACTION = 0.15  # of each family's instruments, for valid and for test each
GAIN = 1.0  # FluidSynth master gain: loud notes peak around -6 dBFS, quiet ones around -40 dBFS
HOLD_SAMPLES = 48_000  # note-off after 3 s

EXAMPLES = """examples:
  # the default dataset (all three Debian GM SoundFonts; what the acceptance run trains on)
  notegrade data render --out data/rendered
  # a demo-sized set in well under a minute: one small SoundFont, 3 programs per family
  notegrade data render --out data/demo --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2 \\
      --max-programs-per-family 3 --notes-per-instrument 12
  # only middle pitches, two velocities, another seed
  notegrade data render --out data/mid --pitch-range 48-72 --velocities 75,127 --seed 3
"""


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


def plan(presets: dict[str, list[tuple[int, int, str]]], *, seed: int, notes_per_instrument: int,
         pitch_range: tuple[int, int], velocities: Sequence[int],
         max_programs_per_family: int | None) -> list[Instrument]:
    """Choose instruments, their split and their notes; deterministic in the seed and options."""
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


# FluidSynth voices start from what the voice object last played (filter and envelope state), so
# a render depends on the renders before it in the same synth.  Each instrument therefore gets a
# fresh synth, and its notes are rendered in a fixed order: its files are the same whichever
# worker renders it and whatever that worker rendered before.  A "holder" synth per process keeps
# every SoundFont loaded, so FluidSynth's sample cache makes those fresh loads cheap.
_HOLDER = None
_HOLDER_FONTS: dict[str, int] = {}


def _new_synth():
    import ctypes

    import fluidsynth  # imported in the workers only: it loads libfluidsynth

    fluidsynth._fl.fluid_synth_write_float.argtypes = [ctypes.c_void_p, ctypes.c_int] + [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int] * 2
    # Dry output (no reverb/chorus) so a note's audio depends only on its preset, pitch and velocity.
    return fluidsynth.Synth(samplerate=float(SAMPLE_RATE), gain=GAIN, **{"synth.reverb.active": 0,
                                                                          "synth.chorus.active": 0})


def _load(synth, soundfont: str) -> int:
    sfid = synth.sfload(soundfont)
    if sfid < 0:
        raise NotegradeError(f"{soundfont}: FluidSynth cannot load this file; pass an SF2 or SF3 SoundFont")
    return sfid


def _held(soundfont: str):
    """The process's holder synth and the id of ``soundfont`` in it (loading it once)."""
    global _HOLDER
    if _HOLDER is None:
        _HOLDER = _new_synth()
    if soundfont not in _HOLDER_FONTS:
        _HOLDER_FONTS[soundfont] = _load(_HOLDER, soundfont)
    return _HOLDER, _HOLDER_FONTS[soundfont]


def list_presets(soundfont: str) -> list[tuple[int, int, str]]:
    """Every (bank, program, preset name) in a SoundFont."""
    synth, sfid = _held(soundfont)
    return [(bank, prog, name) for bank in range(129) for prog in range(128)
            if (name := synth.sfpreset_name(sfid, bank, prog)) is not None]


def render_note(synth, sfid: int, bank: int, program: int, pitch: int, velocity: int) -> np.ndarray:
    """One float32 mono note (64,000 samples): note-on at 0, note-off at 3 s, then the release."""
    import fluidsynth

    synth.program_select(0, sfid, bank, program)
    # A short primer of the same note first, so a note's attack does not inherit the previous
    # note's voice state (the first block would otherwise depend on the note before it).
    synth.noteon(0, pitch, velocity)
    synth.get_samples(256)
    synth.all_sounds_off(0)
    synth.get_samples(64)
    stereo = np.zeros((2, N_SAMPLES), dtype=np.float32)
    synth.noteon(0, pitch, velocity)
    for start, stop in ((0, HOLD_SAMPLES), (HOLD_SAMPLES, N_SAMPLES)):
        fluidsynth._fl.fluid_synth_write_float(synth.synth, stop - start, stereo[0, start:].ctypes.data, 0, 1,
                                               stereo[1, start:].ctypes.data, 0, 1)
        if start == 0:
            synth.noteoff(0, pitch)
    synth.all_sounds_off(0)
    synth.get_samples(64)  # let the killed voices finish
    return stereo.mean(axis=0)


def measure_qualities(wave: np.ndarray, info: ProgramInfo) -> list[int]:
    """NSynth's 10 quality flags from fixed rules on the audio (see the module docstring)."""
    rms = np.sqrt(np.mean(wave.reshape(80, 800).astype(np.float64) ** 2, axis=1)) + 1e-12
    peak = rms.max()
    held, after = rms[50:60].mean(), rms[70:80].mean()
    spectrum = np.abs(np.fft.rfft(wave[:48_000])) ** 2
    freqs = np.fft.rfftfreq(48_000, 1 / SAMPLE_RATE)
    centroid = float((freqs * spectrum).sum() / max(spectrum.sum(), 1e-20))
    flags = {
        "bright": centroid > 2500, "dark": centroid < 500, "distortion": info.distortion,
        "fast_decay": held < 0.1 * peak, "long_release": after > 0.1 * held and after > 0.01 * peak,
        "percussive": int(np.argmax(rms)) == 0 and rms[10] < 0.5 * peak,
    }
    return [int(bool(flags.get(q, False))) for q in QUALITIES]


def render_instrument(inst: Instrument, split_dir: Path) -> dict:
    """Render, check and write one instrument's notes; returns its examples.json entries and drops."""
    entries, dropped = {}, {"silent": 0, "clipped": 0}
    _held(inst.soundfont)
    synth = _new_synth()
    sfid = _load(synth, inst.soundfont)
    try:
        waves = [render_note(synth, sfid, inst.bank, inst.program, pitch, velocity) for _, pitch, velocity in inst.notes]
    finally:
        synth.delete()
    for (note_id, pitch, velocity), wave in zip(inst.notes, waves):
        peak = float(np.abs(wave).max())
        if peak < 1e-3:
            dropped["silent"] += 1
            continue
        if peak >= 1.0:
            dropped["clipped"] += 1
            continue
        note_str = f"{inst.instrument_str}-{pitch:03d}-{velocity:03d}"
        pcm = np.round(wave * 32767).astype(np.int16)
        sf.write(split_dir / "audio" / f"{note_str}.wav", pcm, SAMPLE_RATE, subtype="PCM_16")
        qualities = measure_qualities(wave, inst.info)
        entries[note_str] = {
            "note": note_id, "note_str": note_str, "instrument": inst.instrument, "instrument_str": inst.instrument_str,
            "pitch": pitch, "velocity": velocity, "sample_rate": SAMPLE_RATE, "qualities": qualities,
            "qualities_str": [q for q, on in zip(QUALITIES, qualities) if on],
            "instrument_family": FAMILIES.index(inst.info.family), "instrument_family_str": inst.info.family,
            "instrument_source": SOURCES.index(inst.info.source), "instrument_source_str": inst.info.source,
        }
    return {"instrument": inst.instrument, "entries": entries, "dropped": dropped}


def _parse_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI MIDI pitches such as 36-84, got {text!r}") from None
    if not 0 <= lo <= hi <= 127:
        raise argparse.ArgumentTypeError(f"pitch range {text!r} must satisfy 0 <= LO <= HI <= 127")
    return lo, hi


def _parse_velocities(text: str) -> tuple[int, ...]:
    try:
        vels = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated velocities such as 25,75,127, got {text!r}") from None
    if not vels or any(v not in VELOCITIES for v in vels):
        raise argparse.ArgumentTypeError(f"velocities must be among {','.join(map(str, VELOCITIES))}, got {text!r}")
    return vels


def main(*, out: str | Path, soundfonts: Sequence[str | Path] = DEFAULT_SOUNDFONTS, seed: int = 0,
         notes_per_instrument: int = DEFAULT_NOTES_PER_INSTRUMENT, pitch_range: tuple[int, int] = (21, 108),
         velocities: Sequence[int] = VELOCITIES, max_programs_per_family: int | None = None,
         workers: int | None = None, overwrite: bool = False,
         progress: bool = True) -> dict:
    """Render the dataset into ``out``; returns the manifest (also written to render_manifest.json)."""
    out = Path(out)
    soundfonts = [str(Path(p)) for p in soundfonts]
    for path in soundfonts:
        if not Path(path).is_file():
            raise NotegradeError(f"{path}: SoundFont not found (install the Debian packages with "
                                 "scripts/system-deps.sh, or pass --soundfont PATH to an .sf2/.sf3 file)")
    if len(set(soundfonts)) != len(soundfonts):
        raise NotegradeError("the same SoundFont is given twice; pass each --soundfont once")
    if notes_per_instrument < 1:
        raise NotegradeError(f"--notes-per-instrument must be >= 1, got {notes_per_instrument}")
    existing = [out / f"nsynth-{s}" for s in SPLITS if (out / f"nsynth-{s}").exists()]
    if existing and not overwrite:
        raise NotegradeError(f"{existing[0]} already exists; pass --overwrite to replace the rendered splits")
    workers = workers or len(os.sched_getaffinity(0))
    context = multiprocessing.get_context("spawn")  # FluidSynth state must not be forked
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        presets = dict(zip(soundfonts, pool.map(list_presets, soundfonts)))
        instruments = plan(presets, seed=seed, notes_per_instrument=notes_per_instrument, pitch_range=pitch_range,
                           velocities=list(velocities), max_programs_per_family=max_programs_per_family)
        if not instruments:
            raise NotegradeError("no preset in the given SoundFonts maps to an NSynth family (see reference/gm_families.py)")
        for path in existing:
            shutil.rmtree(path)
        for split in SPLITS:
            (out / f"nsynth-{split}" / "audio").mkdir(parents=True, exist_ok=True)
        results = {}
        bar = tqdm(total=sum(len(i.notes) for i in instruments), unit="note", desc="render", disable=not progress)
        # Longest instruments first keeps both cores busy to the end.
        futures = {pool.submit(render_instrument, inst, out / f"nsynth-{inst.split}"): inst
                   for inst in sorted(instruments, key=lambda i: -len(i.notes))}
        for future in as_completed(futures):
            result = future.result()
            results[result["instrument"]] = result
            bar.update(len(futures[future].notes))
        bar.close()
    manifest: dict = {"options": {"soundfonts": soundfonts, "seed": seed, "notes_per_instrument": notes_per_instrument,
                                  "pitch_range": list(pitch_range), "velocities": list(velocities),
                                  "max_programs_per_family": max_programs_per_family, "gain": GAIN},
                      "instruments": [], "counts": {s: {f: 0 for f in FAMILIES} for s in SPLITS}}
    examples: dict[str, dict] = {s: {} for s in SPLITS}
    for inst in instruments:  # in id order, so the files do not depend on which worker finished first
        result = results[inst.instrument]
        examples[inst.split].update(result["entries"])
        manifest["counts"][inst.split][inst.info.family] += len(result["entries"])
        manifest["instruments"].append({
            "instrument": inst.instrument, "instrument_str": inst.instrument_str, "split": inst.split,
            "soundfont": Path(inst.soundfont).name, "bank": inst.bank, "program": inst.program,
            "preset_name": inst.preset_name, "family": inst.info.family, "source": inst.info.source,
            "notes": len(result["entries"]), "dropped": result["dropped"]})
    for split in SPLITS:
        with open(out / f"nsynth-{split}" / "examples.json", "w") as f:
            # NSynth's own layout: indent 4 with ", " separators (so lines end in a space).
            json.dump(examples[split], f, indent=4, separators=(", ", ": "))
    manifest["totals"] = {s: sum(c.values()) for s, c in manifest["counts"].items()}
    (out / "render_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (gets nsynth-{train,valid,test}/)")
    parser.add_argument("--soundfont", action="append", dest="soundfonts", metavar="PATH",
                        help=f"an SF2/SF3 SoundFont; repeat for several; None = {', '.join(DEFAULT_SOUNDFONTS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and the note choice")
    parser.add_argument("--notes-per-instrument", type=int, default=DEFAULT_NOTES_PER_INSTRUMENT,
                        help="(pitch, velocity) pairs rendered per instrument (the size budget)")
    parser.add_argument("--pitch-range", type=_parse_range, default=(21, 108), metavar="LO-HI",
                        help="only pitches in this MIDI range (each instrument also keeps to its own range)")
    parser.add_argument("--velocities", type=_parse_velocities, default=VELOCITIES, metavar="V,V,...",
                        help="velocities to draw from (subset of 25,50,75,100,127)")
    parser.add_argument("--max-programs-per-family", type=int, default=None, metavar="N",
                        help="keep at most N SoundFont programs (each with its bank variants) per family, "
                             "a seeded choice; small sets for demos and tests")
    parser.add_argument("--workers", type=int, default=None, help="render processes; None = one per core")
    parser.add_argument("--overwrite", action="store_true", help="replace existing nsynth-* splits in --out")


def run(args: argparse.Namespace) -> int:
    manifest = main(out=args.out, soundfonts=args.soundfonts or DEFAULT_SOUNDFONTS, seed=args.seed,
                    notes_per_instrument=args.notes_per_instrument, pitch_range=args.pitch_range,
                    velocities=args.velocities, max_programs_per_family=args.max_programs_per_family,
                    workers=args.workers, overwrite=args.overwrite)
    for split in SPLITS:
        n_inst = sum(1 for i in manifest["instruments"] if i["split"] == split)
        counts = ", ".join(f"{f} {n}" for f, n in manifest["counts"][split].items())
        print(f"nsynth-{split}: {manifest['totals'][split]} notes from {n_inst} instruments ({counts})")
    dropped = [sum(i["dropped"][k] for i in manifest["instruments"]) for k in ("silent", "clipped")]
    print(f"dropped {dropped[0]} silent and {dropped[1]} clipped renders; wrote {args.out}")
    return 0
