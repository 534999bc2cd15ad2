"""Benchmark 1: feature extraction on the same 1,000 rendered WAVs, every variant in one run.

Variants (the file cache is warmed first; each round runs every variant once, in turn, so
they share the same cores and the same background load; best and median of the rounds):

* ``decode float32``  -- ``soundfile.read(path, dtype="float32")`` per file, one thread: the pure
  decode a front-end needs (the floor of a per-file pipeline, and the goal's yardstick);
* ``decode float32 xN`` -- the same split over one thread per core;
* ``decode int16 xN`` -- soundfile decoding into a preallocated int16 buffer on every core;
* ``read PCM xN``     -- ``reference.nsynth.read_wav_into`` into int16 rows on every core: the
  builder's own decode step (a plain NSynth header's samples are read straight from the file);
* ``builder``         -- ``reference.make_features.build_feature_file`` (NSynth dir -> feature file,
  index parsing, decoding, front-end and the fp16 file write included);
* ``builder @REV``    -- with ``--baseline REV``: the same function as it was at git revision REV
  (its features.py, nsynth.py and make_features.py), to put the old rate beside the new one;
* ``naive torchaudio`` -- decode float32 per file, stack, one ``MelSpectrogram`` + ``AmplitudeToDB``
  call per 256 notes with torch's default threads;
* ``librosa``         -- per file ``librosa.load`` -> ``feature.melspectrogram`` -> ``power_to_db`` with
  the front-end's parameters, warmed up first; and ``librosa tuned``, the same with the mel
  filterbank built once and applied as a matmul.  Ratios use the faster of the two.

Each variant's CPU time (all threads) is measured too: ``cores`` is CPU time / wall time, the
cores it actually got.  On a busy machine (Linux gives each session a fair share, whatever its
thread count) the builder gets no more CPU than the one-thread floor, so its ratio to the floor
then shows CPU cost, not 2-core throughput; the ``cores`` column says which case a run was.

Run: ``.venv/bin/python benchmarks/bench_features.py [--nsynth SPLIT_DIR] [--rounds 5] [--baseline REV]``.
Without ``--nsynth`` it renders ~1,400 notes from TimGM6mb into a temporary directory first (~15 s).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
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
from reference.nsynth import N_SAMPLES, load_split, read_wav_into

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


def read_pcm_threads(paths: list[Path], cores: int) -> None:
    buffer = np.empty((len(paths), N_SAMPLES), np.int16)

    def work(bounds: tuple[int, int]) -> None:
        for i in range(*bounds):
            read_wav_into(paths[i], buffer[i])

    edges = np.linspace(0, len(paths), cores + 1).astype(int)
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(work, zip(edges[:-1], edges[1:])))


def load_baseline(rev: str, workdir: Path):
    """``build_feature_file`` as it was at git revision ``rev`` (its three reference modules, flat),
    or None (with a note) where git or that revision is not at hand."""
    repo = Path(__file__).resolve().parents[1]
    folder = workdir / "baseline"
    folder.mkdir()
    for name in ("features", "nsynth", "make_features"):
        try:
            source = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:reference/{name}.py"], check=True,
                                    capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            print(f"--baseline {rev}: no reference/{name}.py from git ({err}); running without it", file=sys.stderr)
            return None
        for other in ("features", "nsynth", "make_features"):
            source = source.replace(f"from reference.{other} import", f"from baseline_{other} import")
        (folder / f"baseline_{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module("baseline_make_features").build_feature_file


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


def timed(run) -> tuple[float, float]:
    """Wall and CPU seconds (every thread of this process) of ``run()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(*, nsynth: Path | None, n: int, rounds: int, json_out: Path | None, baseline: str | None = None) -> dict:
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
        split = tmp / "nsynth-bench"
        build_feature_file(nsynth=split, out=tmp / "warm.safetensors", progress=False)
        floor_name, base_name = "decode float32 (1 thread)", f"builder @{baseline}"
        variants = {
            floor_name: lambda: decode_float32(paths),
            f"decode float32 ({cores} threads)": lambda: decode_float32_threads(paths, cores),
            f"decode int16 ({cores} threads)": lambda: decode_int16_threads(paths, cores),
            f"read PCM ({cores} threads)": lambda: read_pcm_threads(paths, cores),
            "builder": lambda: build_feature_file(nsynth=split, out=tmp / "f.safetensors", progress=False),
        }
        build_before = baseline and load_baseline(baseline, tmp)
        baseline = baseline if build_before else None
        if baseline:
            build_before(nsynth=split, out=tmp / "warm.safetensors", progress=False)
            variants[base_name] = lambda: build_before(nsynth=split, out=tmp / "before.safetensors", progress=False)
        variants.update({
            "naive torchaudio": lambda: naive_torchaudio(paths),
            "librosa (per file)": lambda: one_blas_thread(librosa_features, paths),
            "librosa tuned (per file)": lambda: one_blas_thread(librosa_tuned_features, paths),
        })
        walls: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(rounds):
            for name, run in variants.items():
                wall, cpu = timed(run)
                walls[name].append(wall)
                cpus[name].append(cpu)
            print(f"round {r + 1}/{rounds}, load {os.getloadavg()[0]:.1f}: "
                  + ", ".join(f"{k} {len(paths) / v[-1]:.0f}" for k, v in walls.items()), file=sys.stderr)
        ours = np.asarray(read_feature_file(tmp / "f.safetensors").features[:20], np.float32)
        lib = np.stack([librosa_features(p) for p in paths[:20]])[:, None]
        agreement_db = float(np.abs(ours - lib).max() * DB_SCALE)
        identical = baseline and (tmp / "f.safetensors").read_bytes() == (tmp / "before.safetensors").read_bytes()
    rates = {k: [len(paths) / w for w in v] for k, v in walls.items()}
    best = {k: max(v) for k, v in rates.items()}
    median = {k: statistics.median(v) for k, v in rates.items()}
    cpu_ms = {k: statistics.median(c / len(paths) * 1e3 for c in cpus[k]) for k in variants}
    used = {k: statistics.median(c / w for c, w in zip(cpus[k], walls[k])) for k in variants}

    def ratio(a: str, b: str) -> float:
        """Median over the rounds of a's rate / b's rate in the same round."""
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

    print(f"\nBenchmark 1: feature extraction, {len(paths)} rendered WAVs, {cores} cores, warm cache, "
          f"{rounds} interleaved rounds (files/s; CPU ms per file and cores used, medians)")
    print(f"{'variant':<28}{'best':>8}{'median':>8}{'CPU ms':>8}{'cores':>7}")
    for name in variants:
        print(f"{name:<28}{best[name]:>8.0f}{median[name]:>8.0f}{cpu_ms[name]:>8.3f}{used[name]:>7.2f}")
    lib_name = max(("librosa (per file)", "librosa tuned (per file)"), key=median.get)
    lines = [("builder / faster librosa", ratio("builder", lib_name), "goal >= 2"),
             ("builder / decode float32 floor", ratio("builder", floor_name),
              f"goal >= 0.8, issue 20; the builder got {used['builder']:.2f} of {cores} cores, "
              f"the floor {used[floor_name]:.2f}")]
    if baseline:
        lines += [(f"builder @{baseline} / decode floor", ratio(base_name, floor_name), "the same run"),
                  (f"builder / builder @{baseline}", ratio("builder", base_name),
                   f"feature files byte-identical: {'yes' if identical else 'NO'}")]
    lines += [("builder CPU per file / floor's", cpu_ms["builder"] / cpu_ms[floor_name],
               "the ratio's bound when the builder gets no more cores than the floor"),
              (f"builder / decode float32 x{cores}", ratio("builder", f"decode float32 ({cores} threads)"),
               "the floor on every core"),
              (f"builder / read PCM x{cores}", ratio("builder", f"read PCM ({cores} threads)"),
               "the builder's own decode step"),
              ("builder / naive torchaudio", ratio("builder", "naive torchaudio"), "")]
    print()
    for label, value, note in lines:
        print(f"{label:<33}= {value:5.2f}x" + (f"  ({note})" if note else ""))
    print(f"librosa vs builder features: max |diff| = {agreement_db:.4f} dB (fp16 storage included)")
    result = {"n_files": len(paths), "cores": cores, "rounds": rounds, "best": best, "median": median,
              "cpu_ms_per_file": cpu_ms, "cores_used": used, "rates": rates, "baseline": baseline,
              "baseline_identical": identical, "librosa_max_abs_diff_db": agreement_db}
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--nsynth", type=Path, default=None, help="an NSynth split dir to take the WAVs from")
    cli.add_argument("--n", type=int, default=1000, help="number of WAVs")
    cli.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    cli.add_argument("--baseline", metavar="REV", default=None,
                     help="also time the builder as it was at this git revision (e.g. 987de0f, before issue 20)")
    cli.add_argument("--json", type=Path, default=None, dest="json_out", help="also write the numbers here")
    args = cli.parse_args()
    main(nsynth=args.nsynth, n=args.n, rounds=args.rounds, json_out=args.json_out, baseline=args.baseline)
