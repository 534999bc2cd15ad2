"""Benchmark 1: feature extraction on the same 1,000 rendered WAVs, every variant in one run.

Variants (the file cache is warmed first; each round runs every variant once, in turn, so
they share the same cores and the same background load; best and median of the rounds):

* ``decode float32``  -- ``soundfile.read(path, dtype="float32")`` per file, one thread: the pure
  decode a front-end needs (the floor of a per-file pipeline);
* ``decode float32 xN`` -- the same split over one thread per core;
* ``decode int16 xN`` -- soundfile decoding into a preallocated int16 buffer on every core, as
  the builder does: the floor of the builder itself;
* ``builder``         -- ``reference.make_features.build_feature_file`` (NSynth dir -> feature file,
  index parsing, decoding, front-end and the fp16 file write included);
* ``naive torchaudio`` -- decode float32 per file, stack, one ``MelSpectrogram`` + ``AmplitudeToDB``
  call per 256 notes with torch's default threads;
* ``librosa``         -- per file ``librosa.load`` -> ``feature.melspectrogram`` -> ``power_to_db`` with
  the front-end's parameters, warmed up first; and ``librosa tuned``, the same with the mel
  filterbank built once and applied as a matmul.  Ratios use the faster of the two.

Run: ``.venv/bin/python benchmarks/bench_features.py [--nsynth SPLIT_DIR] [--rounds 3]``.  Without
``--nsynth`` it renders ~1,400 notes from TimGM6mb into a temporary directory first (~15 s).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from autograder.featurefile import read_feature_file
from reference.features import DB_OFFSET, DB_SCALE, FRONTEND_PARAMS, get_frontend
from reference.make_features import build_feature_file
from reference.nsynth import load_split

P = FRONTEND_PARAMS


def make_subset(sources: list[Path], n: int, workdir: Path) -> list[Path]:
    """An NSynth split dir holding ``n`` notes of ``sources`` (symlinked WAVs: the same cached files)."""
    notes = [note for source in sources for note in load_split(source).notes]
    if len(notes) < n:
        raise SystemExit(f"{', '.join(map(str, sources))}: only {len(notes)} notes; need {n}")
    step = len(notes) / n  # spread over instruments and families
    chosen = [notes[int(i * step)] for i in range(n)]
    index = {}
    for source in sources:
        index.update(json.loads((source / "examples.json").read_text()))
    (workdir / "nsynth-bench" / "audio").mkdir(parents=True)
    for note in chosen:
        (workdir / "nsynth-bench" / "audio" / note.path.name).symlink_to(note.path.resolve())
    (workdir / "nsynth-bench" / "examples.json").write_text(
        json.dumps({n.note_str: index[n.note_str] for n in chosen}, indent=4, separators=(", ", ": ")))
    return [n.path.resolve() for n in chosen]


def decode_float32(paths: list[Path]) -> None:
    for path in paths:
        sf.read(path, dtype="float32")


def decode_float32_threads(paths: list[Path], cores: int) -> None:
    edges = np.linspace(0, len(paths), cores + 1).astype(int)
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(lambda b: decode_float32(paths[b[0] : b[1]]), zip(edges[:-1], edges[1:])))


def decode_int16_threads(paths: list[Path], cores: int) -> None:
    buffer = np.empty((len(paths), P["n_samples"]), np.int16)

    def work(bounds: tuple[int, int]) -> None:
        for i in range(*bounds):
            with sf.SoundFile(paths[i]) as f:
                f.read(P["n_samples"], dtype="int16", out=buffer[i])

    edges = np.linspace(0, len(paths), cores + 1).astype(int)
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(work, zip(edges[:-1], edges[1:])))


def naive_torchaudio(paths: list[Path]) -> None:
    frontend = get_frontend("cpu")  # its torchaudio modules, called as torchaudio documents them
    with torch.inference_mode():
        for start in range(0, len(paths), 256):
            waves = torch.from_numpy(np.stack([sf.read(p, dtype="float32")[0] for p in paths[start : start + 256]]))
            frontend.to_db(frontend.mel(waves))


_MEL_BASIS: list[np.ndarray] = []


def librosa_tuned_features(path: Path) -> np.ndarray:
    """The same pipeline with the filterbank built once and applied with ``@`` (librosa's einsum
    projection is ~10x slower than a BLAS matmul with numpy 2.4): a fairer per-file baseline."""
    import librosa

    if not _MEL_BASIS:
        _MEL_BASIS.append(librosa.filters.mel(sr=P["sample_rate"], n_fft=P["n_fft"], n_mels=P["n_mels"], fmin=P["f_min"],
                                              fmax=P["f_max"], htk=False, norm="slaney"))
    wave, _ = librosa.load(path, sr=None)
    spec = np.abs(librosa.stft(wave, n_fft=P["n_fft"], hop_length=P["hop_length"], win_length=P["win_length"],
                               window="hann", center=True, pad_mode="constant")) ** 2
    return (librosa.power_to_db(_MEL_BASIS[0] @ spec, ref=1.0, amin=P["amin"], top_db=None) - DB_OFFSET) / DB_SCALE


def one_blas_thread(function, paths: list[Path]) -> list[np.ndarray]:
    """Per-file work with single-threaded BLAS: OpenBLAS threads spin-waiting over a 64x513 matmul
    on two busy cores make librosa up to 10x slower, which would flatter the builder."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return [function(p) for p in paths]


def librosa_features(path: Path) -> np.ndarray:
    import librosa

    wave, sr = librosa.load(path, sr=None)
    mel = librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=P["n_fft"], hop_length=P["hop_length"],
                                         win_length=P["win_length"], window="hann", center=True, pad_mode="constant",
                                         power=P["power"], n_mels=P["n_mels"], fmin=P["f_min"], fmax=P["f_max"],
                                         htk=False, norm="slaney")
    return (librosa.power_to_db(mel, ref=1.0, amin=P["amin"], top_db=None) - DB_OFFSET) / DB_SCALE


def main(*, nsynth: Path | None, n: int, rounds: int, json_out: Path | None) -> dict:
    warnings.filterwarnings("ignore")
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if nsynth is None:
            from reference.render import main as render

            render(out=tmp / "rendered", soundfonts=["/usr/share/sounds/sf2/TimGM6mb.sf2"], notes_per_instrument=15,
                   progress=False)
            sources = [tmp / "rendered" / f"nsynth-{s}" for s in ("train", "valid", "test")]
        else:
            sources = [nsynth]
        paths = make_subset(sources, n, tmp)
        for path in paths:  # warm the file cache
            path.read_bytes()
        for path in paths[:5]:  # warm librosa (lazy imports, FFT plans)
            librosa_features(path)
            assert np.abs(librosa_features(path) - librosa_tuned_features(path)).max() < 1e-3
        build_feature_file(nsynth=tmp / "nsynth-bench", out=tmp / "warm.safetensors", progress=False)
        variants = {
            "decode float32 (1 thread)": lambda: decode_float32(paths),
            f"decode float32 ({cores} threads)": lambda: decode_float32_threads(paths, cores),
            f"decode int16 ({cores} threads)": lambda: decode_int16_threads(paths, cores),
            "builder": lambda: build_feature_file(nsynth=tmp / "nsynth-bench", out=tmp / "f.safetensors", progress=False),
            "naive torchaudio": lambda: naive_torchaudio(paths),
            "librosa (per file)": lambda: one_blas_thread(librosa_features, paths),
            "librosa tuned (per file)": lambda: one_blas_thread(librosa_tuned_features, paths),
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(rounds):
            for name, run in variants.items():
                started = time.perf_counter()
                run()
                rates[name].append(len(paths) / (time.perf_counter() - started))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), file=sys.stderr)
        ours = np.asarray(read_feature_file(tmp / "f.safetensors").features[:20], np.float32)
        lib = np.stack([librosa_features(p) for p in paths[:20]])[:, None]
        agreement_db = float(np.abs(ours - lib).max() * DB_SCALE)
    best = {k: max(v) for k, v in rates.items()}
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\nBenchmark 1: feature extraction, {len(paths)} rendered WAVs, {cores} cores, warm cache, "
          f"{rounds} interleaved rounds (files/s)")
    print(f"{'variant':<28}{'best':>10}{'median':>10}")
    for name in variants:
        print(f"{name:<28}{best[name]:>10.0f}{median[name]:>10.0f}")
    builder, floor = median["builder"], median["decode float32 (1 thread)"]
    lib_rate = max(median["librosa (per file)"], median["librosa tuned (per file)"])
    int16_floor = median[f"decode int16 ({cores} threads)"]
    f32_threads = median[f"decode float32 ({cores} threads)"]
    print(f"\nbuilder / faster librosa        = {builder / lib_rate:5.2f}x  (goal >= 2)")
    print(f"builder / decode float32 floor  = {builder / floor:5.2f}x  (goal >= 0.5)")
    print(f"builder / decode float32 x{cores}     = {builder / f32_threads:5.2f}x  (the floor on every core)")
    print(f"builder / decode int16 x{cores}       = {builder / int16_floor:5.2f}x  (the builder's own decode step)")
    print(f"builder / naive torchaudio      = {builder / median['naive torchaudio']:5.2f}x")
    print(f"librosa vs builder features: max |diff| = {agreement_db:.4f} dB (fp16 storage included)")
    result = {"n_files": len(paths), "cores": cores, "rounds": rounds, "best": best, "median": median,
              "librosa_max_abs_diff_db": agreement_db}
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--nsynth", type=Path, default=None, help="an NSynth split dir to take the WAVs from")
    cli.add_argument("--n", type=int, default=1000, help="number of WAVs")
    cli.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    cli.add_argument("--json", type=Path, default=None, dest="json_out", help="also write the numbers here")
    args = cli.parse_args()
    main(nsynth=args.nsynth, n=args.n, rounds=args.rounds, json_out=args.json_out)
