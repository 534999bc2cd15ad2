"""FluidSynth rendering: list a SoundFont's presets, play one instrument's notes, write its WAVs.

Split out of :mod:`reference.render` because this is the only part that loads libfluidsynth and
runs in the worker processes; it turns a planned :class:`~reference.render_plan.Instrument` into
WAV files and its ``examples.json`` entries, with the quality flags measured on the audio.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from autograder.errors import NotegradeError
from autograder.featurefile import FAMILIES
from reference.gm_families import ProgramInfo
from reference.nsynth import N_SAMPLES, QUALITIES, SAMPLE_RATE, SOURCES
from reference.render_plan import Instrument

GAIN = 1.0  # FluidSynth master gain: loud notes peak around -6 dBFS, quiet ones around -40 dBFS
HOLD_SAMPLES = 48_000  # note-off after 3 s


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


def render_note(synth, sfid: int, bank: int, program: int, pitch: int, velocity: int, bend: int = 0) -> np.ndarray:
    """One float32 mono note (64,000 samples): note-on at 0, note-off at 3 s, then the release.

    ``bend``: a pitch bend (-8192..8191) held for the whole note (a secret variation's detune)."""
    import fluidsynth

    synth.program_select(0, sfid, bank, program)
    synth.pitch_bend(0, bend)
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
    synth.pitch_bend(0, 0)
    return stereo.mean(axis=0)


def measure_qualities(wave: np.ndarray, info: ProgramInfo) -> list[int]:
    """NSynth's 10 quality flags from fixed rules on the audio (see the :mod:`reference.render` docstring)."""
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
    """Render, check and write one instrument's notes; returns its examples.json entries and drops.

    With a secret variation (``inst.variation``, :mod:`reference.render_variation`) each note is
    detuned and played at the instrument's velocity curve, then filtered and given its reverb;
    the labels keep the nominal pitch and velocity."""
    entries, dropped = {}, {"silent": 0, "clipped": 0}
    varied = inst.variation
    _held(inst.soundfont)
    synth = _new_synth()
    sfid = _load(synth, inst.soundfont)
    try:
        waves = [render_note(synth, sfid, inst.bank, inst.program, pitch,
                             varied.velocity(velocity) if varied else velocity, varied.bend(note_id) if varied else 0)
                 for note_id, pitch, velocity in inst.notes]
    finally:
        synth.delete()
    if varied:
        waves = [varied.process(wave) for wave in waves]
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
        if varied and varied.reverb_quality:
            qualities[QUALITIES.index("reverb")] = 1
        entries[note_str] = {
            "note": note_id, "note_str": note_str, "instrument": inst.instrument, "instrument_str": inst.instrument_str,
            "pitch": pitch, "velocity": velocity, "sample_rate": SAMPLE_RATE, "qualities": qualities,
            "qualities_str": [q for q, on in zip(QUALITIES, qualities) if on],
            "instrument_family": FAMILIES.index(inst.info.family), "instrument_family_str": inst.info.family,
            "instrument_source": SOURCES.index(inst.info.source), "instrument_source_str": inst.info.source,
        }
    return {"instrument": inst.instrument, "entries": entries, "dropped": dropped}
