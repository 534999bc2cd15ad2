"""A secret render variation: each instrument's detune, velocity curve, filter and reverb, drawn from a key.

One job: turn the secret the instructor keeps (``notegrade data render --variation-secret FILE``)
into the render parameters of every instrument and note, and apply the audio ones.  Rendering the
same SoundFonts again, even with the same ``--seed``, does not reproduce the notes without the
secret: which presets go where and which (pitch, velocity) pairs are drawn come from a seed mixed
with the secret (:func:`planning_seed`), and every note is varied:

* **detune**: a pitch bend of up to +-:data:`DETUNE_CENTS` cents per note (FluidSynth's default bend
  range is 2 semitones = 8,192 steps);
* **velocity curve**: the velocity FluidSynth plays is ``127 * (v / 127) ** gamma`` with ``gamma`` per
  instrument in :data:`GAMMA`; the label (``velocity`` in examples.json) stays the nominal ``v``;
* **filter**: a spectral tilt above 1 kHz (:data:`TILT_DB` dB per octave) and a gentle low-pass
  (corner in :data:`CUTOFF_HZ`), zero-phase, per instrument;
* **reverb**: the dry note mixed with its convolution by a seeded exponentially decaying noise
  response (wet share in :data:`WET`, decay time in :data:`DECAY_S`), per instrument; notes with a
  wet share of 0.2 or more get NSynth's ``reverb`` quality.

All of it is deterministic in (secret, instrument, note): the same secret and options give the
same files, whatever ``--workers``.  The secret file is made (random, mode 0600) when missing;
keep it with the course's private files, never in the repository.

Example
-------
>>> v = instrument_variation(b"k" * 32, instrument=3, preset=("Font.sf2", 0, 40))
>>> 0.6 <= v.gamma <= 1.6, 1 <= v.velocity(100) <= 127, abs(v.detune_cents(17)) <= DETUNE_CENTS
(True, True, True)
>>> v == instrument_variation(b"k" * 32, instrument=3, preset=("Font.sf2", 0, 40))
True
>>> wave = np.sin(np.arange(64000) * 0.05).astype(np.float32) * 0.3
>>> out = v.process(wave)
>>> out.shape, out.dtype, bool(np.abs(out - wave).max() > 1e-3)
((64000,), dtype('float32'), True)
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16_000
DETUNE_CENTS = 25.0
GAMMA = (0.6, 1.6)
TILT_DB = (-6.0, 2.0)
CUTOFF_HZ = (2_500.0, 7_500.0)
WET = (0.05, 0.35)
DECAY_S = (0.3, 1.5)
BEND_PER_CENT = 8192 / 200  # FluidSynth's default pitch-bend range: +-2 semitones
_FFT = 1 << 17  # >= 64,000 samples + the longest reverb response (1.5 s * 16 kHz)


def _key(secret: bytes, *parts: object) -> bytes:
    message = "\0".join(("notegrade-render-variation/1", *map(str, parts))).encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def _rng(key: bytes) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(key[:16], "little"))


def planning_seed(secret: bytes, seed: int) -> int:
    """The seed the render plan uses under a variation secret: ``seed`` mixed with the secret (63 bits)."""
    return int.from_bytes(_key(secret, "seed", int(seed))[:8], "little") >> 1


def fingerprint(secret: bytes) -> str:
    """12 hex digits naming a secret (a hash: it reveals nothing of the secret), for the manifest."""
    return hashlib.sha256(b"notegrade-render-variation-fingerprint\0" + secret).hexdigest()[:12]


@dataclass(frozen=True)
class InstrumentVariation:
    """One instrument's drawn parameters (and the key its per-note detunes come from)."""

    key: bytes
    gamma: float
    tilt_db: float
    cutoff_hz: float
    wet: float
    decay_s: float

    def velocity(self, nominal: int) -> int:
        """The velocity FluidSynth plays for the nominal (labelled) ``nominal``."""
        return int(min(127, max(1, round(127 * (nominal / 127) ** self.gamma))))

    def detune_cents(self, note_id: int) -> float:
        return float(_rng(_key(self.key, "detune", int(note_id))).uniform(-DETUNE_CENTS, DETUNE_CENTS))

    def bend(self, note_id: int) -> int:
        """The pitch-bend value (-8192..8191) of note ``note_id``."""
        return int(min(8191, max(-8192, round(self.detune_cents(note_id) * BEND_PER_CENT))))

    @property
    def reverb_quality(self) -> bool:
        return self.wet >= 0.2

    def response(self) -> np.ndarray:
        """The frequency response (``rfft`` bins of :data:`_FFT`) of filter and reverb together."""
        freqs = np.fft.rfftfreq(_FFT, 1 / SAMPLE_RATE)
        octaves_above = np.log2(np.maximum(freqs, 1_000.0) / 1_000.0)
        gain = 10 ** (self.tilt_db * octaves_above / 20) / np.sqrt(1 + (freqs / self.cutoff_hz) ** 4)
        length = int(self.decay_s * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        impulse = _rng(_key(self.key, "reverb")).standard_normal(length) * np.exp(-6.9 * t / self.decay_s)
        impulse /= np.sqrt(np.sum(impulse ** 2))
        return gain * ((1 - self.wet) + self.wet * np.fft.rfft(impulse, _FFT))

    def process(self, wave: np.ndarray) -> np.ndarray:
        """``wave`` (float32 mono, 16 kHz) filtered and with reverb, cut to its own length."""
        spectrum = np.fft.rfft(np.asarray(wave, dtype=np.float64), _FFT) * self.response()
        return np.fft.irfft(spectrum, _FFT)[: len(wave)].astype(np.float32)

    def describe(self) -> dict:
        """The parameters for the render manifest (no key)."""
        return {k: round(v, 4) for k, v in asdict(self).items() if k != "key"}


def instrument_variation(secret: bytes, *, instrument: int, preset: tuple) -> InstrumentVariation:
    """The variation of instrument ``instrument`` (its global id) playing ``preset`` (SoundFont name, bank, program)."""
    key = _key(secret, "instrument", int(instrument), *preset)
    rng = _rng(key)
    return InstrumentVariation(key=key, gamma=float(rng.uniform(*GAMMA)), tilt_db=float(rng.uniform(*TILT_DB)),
                               cutoff_hz=float(rng.uniform(*CUTOFF_HZ)), wet=float(rng.uniform(*WET)),
                               decay_s=float(rng.uniform(*DECAY_S)))


def ranges() -> dict:
    """The documented ranges, for the render manifest."""
    return {"detune_cents": DETUNE_CENTS, "gamma": list(GAMMA), "tilt_db_per_octave": list(TILT_DB),
            "cutoff_hz": list(CUTOFF_HZ), "reverb_wet": list(WET), "reverb_decay_s": list(DECAY_S)}
