"""The fixed log-mel front-end: (N, 64000) waveforms -> (N, 1, 64, 64) features.

Given to students complete.  The autograder feeds exactly this output to the
student's model, so any further normalisation belongs *inside* the model (for
``NoteCNN``: as buffers, never parameters, so the parameter counts stay exact).

Parameters (all explicit, see ``FRONTEND_PARAMS``):

* 16 kHz mono, 64,000 samples (4 s).
* STFT: ``n_fft = win_length = 1024`` with a periodic Hann window and
  ``hop_length = 1008``.  With ``center=True`` the frame count is
  ``1 + floor(64000 / 1008) = 64``.  (Hops 1001-1015 give 64 frames; 1008 is the
  one closest to a quarter window overlap that divides the 4 s into 64 even steps.)
  ``pad_mode="constant"`` (zeros), like librosa.
* Mel filterbank: 64 bands, 0-8000 Hz, Slaney mel scale and Slaney area
  normalisation (librosa's defaults), power spectrum (``power=2``).
* dB: ``10 * log10(max(mel, 1e-10))`` (``AmplitudeToDB``, no ``top_db``), so the
  floor is -100 dB for digital silence.
* Scaling: ``(dB - DB_OFFSET) / DB_SCALE`` with ``DB_OFFSET = -40`` and
  ``DB_SCALE = 40``: silence maps to -1.5 and a loud note's peak (about +30 dB) to
  about +1.75, a well-conditioned range for a CNN without per-dataset statistics.

Example
-------
>>> import torch
>>> from features import waveforms_to_features
>>> waves = torch.zeros(2, 64000)
>>> feats = waveforms_to_features(waves)
>>> tuple(feats.shape), feats.dtype, float(feats.min())
((2, 1, 64, 64), torch.float32, -1.5)
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn

from errors import NotegradeError

SAMPLE_RATE = 16_000  # Hz
N_SAMPLES = 64_000  # 4 s
N_MELS = 64
N_FRAMES = 64
DB_OFFSET = -40.0  # dB mapped to 0
DB_SCALE = 40.0  # dB per unit

# Every parameter that changes the features.  Stored (with its hash) in every
# feature and held-out file so that mismatched files are refused, not misgraded.
FRONTEND_PARAMS: dict = {
    "sample_rate": SAMPLE_RATE,
    "n_samples": N_SAMPLES,
    "n_fft": 1024,
    "win_length": 1024,
    "hop_length": 1008,
    "window": "hann_periodic",
    "center": True,
    "pad_mode": "constant",
    "n_mels": N_MELS,
    "f_min": 0.0,
    "f_max": 8000.0,
    "mel_scale": "slaney",
    "norm": "slaney",
    "power": 2.0,
    "amin": 1e-10,
    "top_db": None,
    "db_offset": DB_OFFSET,
    "db_scale": DB_SCALE,
}


def frontend_hash(params: dict | None = None) -> str:
    """Short, stable hash of the front-end parameters (default: ``FRONTEND_PARAMS``)."""
    blob = json.dumps(FRONTEND_PARAMS if params is None else params, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Scratch:
    """Reusable buffers for :meth:`LogMelFrontEnd.from_padded` (one per worker thread), so that a
    batch allocates nothing and, for a few notes at a time, stays in the core's cache."""

    def __init__(self, batch_size: int, device: str | torch.device = "cpu") -> None:
        n_fft, bins = FRONTEND_PARAMS["n_fft"], FRONTEND_PARAMS["n_fft"] // 2 + 1
        self.frames = torch.empty((batch_size, N_FRAMES, n_fft), device=device)
        self.power = torch.empty((batch_size, N_FRAMES, bins), device=device)
        self.mel = torch.empty((batch_size, N_FRAMES, N_MELS), device=device)
        self._views: dict[int, tuple[torch.Tensor, ...]] = {}

    def views(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first ``n`` notes of each buffer: frames, power, mel (made once per ``n``)."""
        if n not in self._views:
            if n > self.frames.shape[0]:
                raise NotegradeError(f"scratch buffers hold {self.frames.shape[0]} notes, not {n}")
            self._views[n] = (self.frames[:n], self.power[:n], self.mel[:n])
        return self._views[n]


class LogMelFrontEnd(nn.Module):
    """``MelSpectrogram`` -> ``AmplitudeToDB`` -> fixed affine scaling.

    Holds no trainable parameters (the filterbank and window are buffers).  The methods run the
    math of ``self.mel`` arranged for speed, op for op as ``torch.stft`` and torchaudio do it, so
    the bits are the same: the zero-padded signal's frames times the window, one real FFT, the
    power as re^2 + im^2 (not the slower complex ``abs().pow(2)``), the filterbank applied in
    the FFT's own frame-major layout, then ``10 * log10(max(mel, amin))``.  The result equals
    ``self.to_db(self.mel(x))`` to float32 rounding and gives the same bits whatever the batch
    size or thread count (tested).  16-bit PCM gives bit-identical features to ``pcm / 32768``:
    the 2^-15 input scaling moves into the filterbank as 2^-30, an exact power-of-two rescaling,
    and the int16 -> float conversion happens in the copy that cuts the frames.
    """

    PAD = 512  # n_fft // 2: center=True with constant (zero) padding

    def __init__(self) -> None:
        super().__init__()
        import torchaudio  # imported here: the grading runtime has no torchaudio

        p = FRONTEND_PARAMS
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=p["sample_rate"],
            n_fft=p["n_fft"],
            win_length=p["win_length"],
            hop_length=p["hop_length"],
            f_min=p["f_min"],
            f_max=p["f_max"],
            pad=0,
            n_mels=p["n_mels"],
            window_fn=torch.hann_window,  # periodic=True by default
            power=p["power"],
            normalized=False,
            center=p["center"],
            pad_mode=p["pad_mode"],
            norm=p["norm"],
            mel_scale=p["mel_scale"],
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=p["top_db"])
        self.register_buffer("_fb_pcm", self.mel.mel_scale.fb * 2.0**-30, persistent=False)
        db = self.to_db  # plain numbers, looked up once
        self._n_fft, self._hop, self._amin, self._multiplier = p["n_fft"], p["hop_length"], db.amin, db.multiplier
        self._db_ref = db.multiplier * db.db_multiplier

    def _check(self, waves: torch.Tensor, length: int = N_SAMPLES) -> None:
        if waves.ndim != 2 or waves.shape[1] != length:
            what = f"(N, {N_SAMPLES}) (16 kHz mono, 4 s)" if length == N_SAMPLES else \
                f"(N, {length}) ({N_SAMPLES} samples with {self.PAD} zeros either side)"
            raise NotegradeError(f"expected waveforms of shape {what}, got {tuple(waves.shape)}")

    def from_padded(self, padded: torch.Tensor, *, out: torch.Tensor | None = None,
                    scratch: Scratch | None = None) -> torch.Tensor:
        """(N, 65024) zero-margined waves (64000 samples, ``PAD`` zeros either side) -> (N, 1, 64, 64).

        int16 ``padded`` is PCM (scaled by 1/32768); float ``padded`` is in [-1, 1].  ``out``: an
        optional (N, 1, 64, 64) tensor to write into (float16 or float32; the rounding to it is the
        last step), ``scratch``: optional reusable buffers for at least N notes.
        """
        self._check(padded, N_SAMPLES + 2 * self.PAD)
        n = padded.shape[0]
        frames, power, mel = (scratch or Scratch(n, padded.device)).views(n)
        # torch.stft(center=False) on the padded signal, as torch.stft computes it: frames times window, rfft.
        frames.copy_(padded.unfold(1, self._n_fft, self._hop)).mul_(self.mel.spectrogram.window)
        spec = torch.fft.rfft(frames)  # (N, 64 frames, 513 bins); (rfft's out= only adds a copy)
        re_im = torch.view_as_real(spec).square_()
        torch.add(re_im[..., 0], re_im[..., 1], out=power)
        # (Summing re^2 and im^2 inside one K = 1026 matmul is faster but its result then depends on
        # the batch size and thread count; this keeps features bit-stable.)
        filterbank = self._fb_pcm if padded.dtype == torch.int16 else self.mel.mel_scale.fb
        torch.matmul(power, filterbank, out=mel)  # (N, 64 frames, 64 mels)
        # AmplitudeToDB(stype="power", top_db=None), in place: 10 * log10(max(x, amin)) - 10 * log10(max(amin, ref)).
        mel.clamp_(min=self._amin).log10_().mul_(self._multiplier).sub_(self._db_ref)
        mel.sub_(DB_OFFSET).div_(DB_SCALE)
        if out is None:
            out = torch.empty((n, 1, N_MELS, N_FRAMES), dtype=torch.float32, device=padded.device)
        out[:, 0].copy_(mel.transpose(1, 2))  # (N, 64 mels, 64 frames)
        return out

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """(N, 64000) float waveforms in [-1, 1] -> (N, 1, 64, 64) float32 features."""
        self._check(waves)
        return self.from_padded(nn.functional.pad(waves.float(), (self.PAD, self.PAD)))  # center=True's zeros

    def from_int16(self, pcm: torch.Tensor) -> torch.Tensor:
        """(N, 64000) int16 PCM -> features, bit-identical to ``forward(pcm / 32768)`` and faster."""
        self._check(pcm)
        return self.from_padded(nn.functional.pad(pcm, (self.PAD, self.PAD)))


_FRONTENDS: dict[str, LogMelFrontEnd] = {}


def get_frontend(device: str | torch.device = "cpu") -> LogMelFrontEnd:
    """A cached front-end module on ``device`` (building the filterbank once)."""
    key = str(torch.device(device))
    if key not in _FRONTENDS:
        _FRONTENDS[key] = LogMelFrontEnd().to(device).eval()
    return _FRONTENDS[key]


@torch.inference_mode()
def waveforms_to_features(
    waves: torch.Tensor | np.ndarray,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Compute log-mel features for a batch of waveforms.

    ``waves`` is (N, 64000) float (or int16 PCM, scaled by 1/32768).  Work runs on
    ``device`` (default: CUDA when available) in chunks of ``batch_size`` notes;
    the result is a float32 CPU tensor of shape (N, 1, 64, 64).
    """
    if isinstance(waves, np.ndarray):
        waves = torch.from_numpy(waves)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    frontend = get_frontend(device)
    out = torch.empty((waves.shape[0], 1, N_MELS, N_FRAMES), dtype=torch.float32)
    for start in range(0, waves.shape[0], batch_size):
        chunk = waves[start : start + batch_size].to(device, non_blocking=True)
        feats = frontend.from_int16(chunk) if chunk.dtype == torch.int16 else frontend(chunk)
        out[start : start + batch_size] = feats.cpu()
    return out
