"""The fixed log-mel front-end: shape, dtype, determinism, batch invariance, torchaudio and librosa agreement."""
import numpy as np
import pytest
import torch
from testkit.nsynth_factory import synth_note

from autograder.errors import NotegradeError
from reference.features import (DB_OFFSET, DB_SCALE, FRONTEND_PARAMS, LogMelFrontEnd, Scratch, frontend_hash,
                                get_frontend, waveforms_to_features)

# librosa (float64 NumPy FFT) and torch (float32) agree to 0.002 dB on these notes: 5e-5 in feature units.
LIBROSA_TOLERANCE_DB = 0.01


@pytest.fixture(scope="module")
def waves() -> torch.Tensor:
    rng = np.random.default_rng(0)
    notes = [synth_note(f, 36 + 5 * i, v, rng) for i, (f, v) in enumerate(
        [("bass", 127), ("flute", 25), ("mallet", 75), ("reed", 100), ("organ", 50), ("guitar", 127), ("vocal", 75)])]
    return torch.from_numpy(np.stack(notes))


def test_shape_dtype_range_and_silence_floor(waves):
    feats = waveforms_to_features(waves, device="cpu")
    assert feats.shape == (7, 1, 64, 64) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert torch.isfinite(feats).all()
    silence = waveforms_to_features(torch.zeros(2, 64000), device="cpu")
    assert torch.all(silence == (-100.0 - DB_OFFSET) / DB_SCALE)  # the documented -100 dB floor
    assert -1.5 <= float(feats.min()) and float(feats.max()) < 2.0


def test_deterministic_and_batch_and_thread_invariant_on_cpu(waves):
    whole = waveforms_to_features(waves, device="cpu", batch_size=256)
    assert torch.equal(whole, waveforms_to_features(waves, device="cpu", batch_size=256))
    assert torch.equal(whole, waveforms_to_features(waves, device="cpu", batch_size=3))
    assert torch.equal(whole, torch.cat([waveforms_to_features(w[None], device="cpu") for w in waves]))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(whole, waveforms_to_features(waves, device="cpu"))
    finally:
        torch.set_num_threads(before)


def test_int16_input_is_scaled_by_1_over_32768(waves):
    pcm = (waves * 32767).round().to(torch.int16)
    assert torch.equal(waveforms_to_features(pcm, device="cpu"), waveforms_to_features(pcm.float() / 32768, device="cpu"))
    assert torch.equal(waveforms_to_features(pcm.numpy(), device="cpu"), waveforms_to_features(pcm, device="cpu"))


def test_fast_forward_equals_the_torchaudio_modules(waves):
    frontend = get_frontend("cpu")
    with torch.inference_mode():
        reference = ((frontend.to_db(frontend.mel(waves)) - DB_OFFSET) / DB_SCALE).unsqueeze(1)
        fast = frontend(waves)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)


def test_same_bits_as_torch_stft_and_the_filterbank_matmul(waves):
    """The features as the front-end first computed them (torch.stft, then the power and the filterbank
    in the STFT's frame-major layout): the framing, FFT and buffers may be rearranged, the bits may not."""
    frontend, p = get_frontend("cpu"), FRONTEND_PARAMS
    with torch.inference_mode():
        spec = torch.stft(torch.nn.functional.pad(waves, (512, 512)), n_fft=p["n_fft"], hop_length=p["hop_length"],
                          win_length=p["win_length"], window=frontend.mel.spectrogram.window, center=False,
                          onesided=True, return_complex=True).transpose(1, 2)
        mel = torch.matmul(spec.real.square() + spec.imag.square(), frontend.mel.mel_scale.fb).transpose(1, 2)
        expected = ((frontend.to_db(mel) - DB_OFFSET) / DB_SCALE).unsqueeze(1)
    assert torch.equal(waveforms_to_features(waves, device="cpu"), expected)


def test_from_padded_with_reused_scratch_writes_float16_in_place(waves):
    """The builder's entry point: zero-margined int16 batches, reused buffers, fp16 rows of the output file."""
    pcm = (waves * 32767).round().to(torch.int16)
    padded, frontend, scratch = torch.nn.functional.pad(pcm, (512, 512)), get_frontend("cpu"), Scratch(3)
    out = torch.full((7, 1, 64, 64), 9.0, dtype=torch.float16)
    with torch.inference_mode():
        for start in range(0, 7, 3):  # 3, 3, then 1 note
            assert frontend.from_padded(padded[start : start + 3], out=out[start : start + 3], scratch=scratch) is not None
        with pytest.raises(NotegradeError, match="scratch buffers hold 3 notes, not 7"):
            frontend.from_padded(padded, scratch=scratch)
        with pytest.raises(NotegradeError, match=r"\(N, 65024\) \(64000 samples with 512 zeros either side\)"):
            frontend.from_padded(pcm)
    assert torch.equal(out, waveforms_to_features(pcm, device="cpu").to(torch.float16))


def test_matches_librosa_within_documented_tolerance(waves):
    librosa = pytest.importorskip("librosa")
    p = FRONTEND_PARAMS
    ours = waveforms_to_features(waves, device="cpu")[:, 0].numpy()
    for wave, feat in zip(waves.numpy(), ours):
        mel = librosa.feature.melspectrogram(
            y=wave, sr=p["sample_rate"], n_fft=p["n_fft"], hop_length=p["hop_length"], win_length=p["win_length"],
            window="hann", center=True, pad_mode="constant", power=p["power"], n_mels=p["n_mels"], fmin=p["f_min"],
            fmax=p["f_max"], htk=False, norm="slaney")
        db = librosa.power_to_db(mel, ref=1.0, amin=p["amin"], top_db=None)
        assert db.shape == (64, 64)
        assert np.abs((db - DB_OFFSET) / DB_SCALE - feat).max() * DB_SCALE < LIBROSA_TOLERANCE_DB


def test_rejects_wrong_shapes():
    with pytest.raises(NotegradeError, match=r"shape \(N, 64000\)"):
        waveforms_to_features(torch.zeros(2, 48000), device="cpu")
    with pytest.raises(NotegradeError, match=r"shape \(N, 64000\)"):
        get_frontend("cpu")(torch.zeros(64000))


def test_params_hash_and_no_trainable_parameters():
    assert 1 + 64000 // FRONTEND_PARAMS["hop_length"] == 64  # frames with center=True
    assert frontend_hash() == frontend_hash(dict(FRONTEND_PARAMS))
    assert frontend_hash() != frontend_hash({**FRONTEND_PARAMS, "db_offset": -60.0})
    assert len(frontend_hash()) == 16
    assert sum(p.numel() for p in LogMelFrontEnd().parameters()) == 0

