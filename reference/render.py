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
  peak), percussive = peak within 50 ms and -6 dB by 0.5 s; multiphonic, nonlinear_env and
  tempo-synced are always 0, and so is reverb (FluidSynth's reverb and chorus are off) unless a
  secret variation adds one.
* A private control split (``--variation-secret FILE --single-split private``): every instrument
  in one split ``nsynth-private``, its plan seeded from ``--seed`` mixed with the secret, and every
  note detuned, played at a per-instrument velocity curve, filtered and given a reverb drawn from
  the secret (:mod:`reference.render_variation`), so that rendering the same SoundFonts again does
  not reproduce its notes.  The manifest records the secret's fingerprint and each instrument's
  drawn parameters, never the secret.
* ``note`` ids and ``instrument`` ids are global; ``NNN`` in ``note_str`` numbers the
  instruments of each family and source, as in NSynth.

The same seed and options give byte-identical files, whatever ``--workers``.

Example
-------
(Skipped by the doctest run: it renders hundreds of notes with FluidSynth and a SoundFont.)

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
import re
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from reference.nsynth import VELOCITIES
# The planning and the FluidSynth parts live in their own modules; their public names are
# re-exported here so ``reference.render`` stays the one entry point (tests use measure_qualities).
from reference.render_fluidsynth import (GAIN, HOLD_SAMPLES, list_presets, measure_qualities, render_instrument,
                                         render_note)
from reference.render_plan import HELD_FRACTION, SPLITS, Instrument, plan
from reference.render_variation import fingerprint, instrument_variation, planning_seed
from reference.render_variation import ranges as variation_ranges

__all__ = ["DEFAULT_NOTES_PER_INSTRUMENT", "DEFAULT_SOUNDFONTS", "GAIN", "HELD_FRACTION", "HOLD_SAMPLES", "SPLITS",
           "Instrument", "add_arguments", "list_presets", "main", "measure_qualities", "plan", "render_instrument",
           "render_note", "run"]

DEFAULT_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2",
                      "/usr/share/sounds/sf3/MuseScore_General_Full.sf3")
DEFAULT_NOTES_PER_INSTRUMENT = 90

EXAMPLES = """examples:
  # the default dataset (all three Debian GM SoundFonts; what the acceptance run trains on)
  notegrade data render --out data/rendered
  # a demo-sized set in well under a minute: one small SoundFont, 3 programs per family
  notegrade data render --out data/demo --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2 \\
      --max-programs-per-family 3 --notes-per-instrument 12
  # only middle pitches, two velocities, another seed
  notegrade data render --out data/mid --pitch-range 48-72 --velocities 75,127 --seed 3
  # a private control split (docs/threat-model.md: "A private control split"): SoundFonts you do not publish,
  # one split, a secret variation (the secret file is made 0600 when missing: keep it private)
  notegrade data render --out private/render --soundfont private/fonts/a.sf2 --soundfont private/fonts/b.sf2 \\
      --single-split private --variation-secret private/render.secret
"""


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
         progress: bool = True, single_split: str | None = None,
         variation_secret: str | Path | None = None) -> dict:
    """Render the dataset into ``out``; returns the manifest (also written to render_manifest.json).

    ``single_split``: every instrument in ``out/nsynth-<single_split>`` (no train/valid/test);
    ``variation_secret``: a secret file (made when missing) whose key varies the plan and every note
    (:mod:`reference.render_variation`)."""
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
    if single_split is not None and not re.fullmatch(r"[a-z0-9_]{1,32}", single_split):
        raise NotegradeError(f"--single-split {single_split!r}: use a short lower-case name such as 'private'")
    splits = (single_split,) if single_split else SPLITS
    secret = None
    if variation_secret is not None:
        from autograder.heldout_guard.secret import ensure_secret

        secret = ensure_secret(variation_secret)
    existing = [out / f"nsynth-{s}" for s in splits if (out / f"nsynth-{s}").exists()]
    if existing and not overwrite:
        raise NotegradeError(f"{existing[0]} already exists; pass --overwrite to replace the rendered splits")
    workers = workers or len(os.sched_getaffinity(0))
    context = multiprocessing.get_context("spawn")  # FluidSynth state must not be forked
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        presets = dict(zip(soundfonts, pool.map(list_presets, soundfonts)))
        instruments = plan(presets, seed=planning_seed(secret, seed) if secret else seed,
                           notes_per_instrument=notes_per_instrument, pitch_range=pitch_range,
                           velocities=list(velocities), max_programs_per_family=max_programs_per_family,
                           single_split=single_split)
        if secret:
            for inst in instruments:
                inst.variation = instrument_variation(secret, instrument=inst.instrument,
                                                      preset=(Path(inst.soundfont).name, inst.bank, inst.program))
        if not instruments:
            raise NotegradeError("no preset in the given SoundFonts maps to an NSynth family (see reference/gm_families.py)")
        for path in existing:
            shutil.rmtree(path)
        for split in splits:
            (out / f"nsynth-{split}" / "audio").mkdir(parents=True, exist_ok=True)
        if secret:  # private notes: readable by the instructor's user only, whatever the umask
            for folder in (out, *(out / f"nsynth-{split}" for split in splits)):
                folder.chmod(0o700)
        results = {}
        bar = tqdm(total=sum(len(i.notes) for i in instruments), unit="note", desc="render",
                   disable=None if progress else True)  # None: no bar when stderr is not a terminal (logs)
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
                                  "max_programs_per_family": max_programs_per_family, "gain": GAIN,
                                  "single_split": single_split},
                      "instruments": [], "counts": {s: {f: 0 for f in FAMILIES} for s in splits}}
    if secret:
        manifest["variation"] = {"secret_fingerprint": fingerprint(secret), "ranges": variation_ranges()}
    examples: dict[str, dict] = {s: {} for s in splits}
    for inst in instruments:  # in id order, so the files do not depend on which worker finished first
        result = results[inst.instrument]
        examples[inst.split].update(result["entries"])
        manifest["counts"][inst.split][inst.info.family] += len(result["entries"])
        manifest["instruments"].append({
            "instrument": inst.instrument, "instrument_str": inst.instrument_str, "split": inst.split,
            "soundfont": Path(inst.soundfont).name, "bank": inst.bank, "program": inst.program,
            "preset_name": inst.preset_name, "family": inst.info.family, "source": inst.info.source,
            "notes": len(result["entries"]), "dropped": result["dropped"],
            **({"variation": inst.variation.describe()} if inst.variation else {})})
    for split in splits:
        with open(out / f"nsynth-{split}" / "examples.json", "w") as f:
            # NSynth's own layout: indent 4 with ", " separators (so lines end in a space).
            json.dump(examples[split], f, indent=4, separators=(", ", ": "))
    manifest["totals"] = {s: sum(c.values()) for s, c in manifest["counts"].items()}
    (out / "render_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (gets nsynth-{train,valid,test}/)")
    parser.add_argument("--soundfont", action="append", dest="soundfonts", metavar="PATH",
                        help=f"an SF2/SF3 SoundFont; repeat for several (default: {', '.join(DEFAULT_SOUNDFONTS)})")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and the note choice")
    parser.add_argument("--notes-per-instrument", type=int, default=DEFAULT_NOTES_PER_INSTRUMENT,
                        help="(pitch, velocity) pairs rendered per instrument (the size budget)")
    parser.add_argument("--pitch-range", type=_parse_range, default=(21, 108), metavar="LO-HI",
                        help="only pitches in this MIDI range (each instrument also keeps to its own range) "
                             "(default: 21-108, the piano's range)")
    parser.add_argument("--velocities", type=_parse_velocities, default=VELOCITIES, metavar="V,V,...",
                        help="velocities to draw from, a subset of 25,50,75,100,127 (default: all five)")
    parser.add_argument("--max-programs-per-family", type=int, default=None, metavar="N",
                        help="keep at most N SoundFont programs (each with its bank variants) per family, "
                             "a seeded choice; small sets for demos and tests")
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: one per core)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing nsynth-* splits in --out")
    parser.add_argument("--single-split", metavar="NAME",
                        help="render every instrument into one split, --out/nsynth-NAME (a private control split "
                             "for `notegrade heldout --control`; default: train/valid/test)")
    parser.add_argument("--variation-secret", type=Path, metavar="FILE",
                        help="vary the plan and every note (detune, velocity curve, filter, reverb) with the key in "
                             "FILE, made (random, 0600) when missing; without it the same SoundFonts and seed "
                             "reproduce the notes. Keep FILE private")


def run(args: argparse.Namespace) -> int:
    manifest = main(out=args.out, soundfonts=args.soundfonts or DEFAULT_SOUNDFONTS, seed=args.seed,
                    notes_per_instrument=args.notes_per_instrument, pitch_range=args.pitch_range,
                    velocities=args.velocities, max_programs_per_family=args.max_programs_per_family,
                    workers=args.workers, overwrite=args.overwrite, single_split=args.single_split,
                    variation_secret=args.variation_secret)
    for split in manifest["counts"]:
        n_inst = sum(1 for i in manifest["instruments"] if i["split"] == split)
        counts = ", ".join(f"{f} {n}" for f, n in manifest["counts"][split].items())
        print(f"nsynth-{split}: {manifest['totals'][split]} notes from {n_inst} instruments ({counts})")
    dropped = [sum(i["dropped"][k] for i in manifest["instruments"]) for k in ("silent", "clipped")]
    print(f"dropped {dropped[0]} silent and {dropped[1]} clipped renders; wrote {args.out}")
    if "variation" in manifest:
        print(f"secret variation {manifest['variation']['secret_fingerprint']} from {args.variation_secret} "
              "(keep that file private: it is what makes these notes unreproducible)")
    return 0
