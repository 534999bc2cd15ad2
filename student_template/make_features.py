"""Turn an NSynth split directory into a feature file (``notegrade data features``).

Reads ``SPLIT_DIR/examples.json`` (with optional family/source/pitch/velocity filters), decodes
every WAV (:func:`reference.nsynth.read_wav_into`), runs the fixed log-mel front-end
(:mod:`reference.features`) and writes one safetensors feature file (:mod:`autograder.featurefile`)
with float16 features, labels, note ids and the front-end parameters and hash.

Why it is fast: one worker thread per core takes a chunk of notes at a time (few hand-overs)
and works through it in small batches (``BATCH_SIZE`` notes, whose frames and spectra stay in
the core's cache).  Each WAV is read straight into a reused, zero-margined int16 batch (a plain
NSynth header: one read per file; anything else through soundfile), the front-end runs on it
with one torch thread and reused buffers, and the fp16 features go straight into the
memory-mapped output file.  File reads and torch ops release the GIL, so the workers overlap,
and nothing holds the whole split in RAM.  The file is the same, byte for byte, whatever the
batch size and worker count (tested); see benchmarks/bench_features.py for the numbers.

Students run it as a script too::

    python make_features.py --nsynth nsynth-train --out train.safetensors

Example
-------
>>> from make_features import build_feature_file

(Skipped by the doctest run: it needs an NSynth-format split on disk.)

>>> summary = build_feature_file(nsynth="data/rendered/nsynth-valid",
...                              out="valid.safetensors")  # doctest: +SKIP
>>> summary["notes"], summary["files_per_s"] > 0           # doctest: +SKIP
(5893, True)
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from errors import NotegradeError
from featurefile import FAMILIES, FeatureFileWriter
from features import FRONTEND_PARAMS, N_SAMPLES, LogMelFrontEnd, Scratch, frontend_hash, get_frontend
from nsynth import SOURCES, load_split, read_wav_into

EXAMPLES = """examples:
  notegrade data features --nsynth data/rendered/nsynth-train --out features/train.safetensors
  # only four families, middle pitches, loud notes
  notegrade data features --nsynth nsynth-valid --out valid4.safetensors \\
      --families bass,guitar,keyboard,string --pitch-range 36-84 --velocities 100,127
  # students, in the starter code folder:
  python make_features.py --nsynth nsynth-test --out test.safetensors
"""
BATCH_SIZE = 8  # notes per front-end call: a few notes' frames and spectra stay in a core's cache
CHUNK = 128  # at most this many notes per task handed to a worker


@dataclass
class _Job:
    """One build: what every worker reads (WAV paths, output rows, front-end) and each worker's own buffers."""

    paths: list[str]
    features: torch.Tensor  # (N, 1, 64, 64) float16, memory-mapped
    frontend: LogMelFrontEnd
    device: torch.device
    batch_size: int
    local: threading.local = field(default_factory=threading.local)


def _chunk(job: _Job, start: int, stop: int) -> int:
    """Decode notes ``start:stop`` a batch at a time and write their features into the output's rows."""
    pad, local, batch_size = job.frontend.PAD, job.local, job.batch_size
    if not hasattr(local, "padded"):  # this worker's first chunk
        local.padded = np.zeros((batch_size, N_SAMPLES + 2 * pad), np.int16)
        local.rows = [local.padded[i, pad : pad + N_SAMPLES] for i in range(batch_size)]
        local.scratch = Scratch(batch_size, job.device)
    pcm = torch.from_numpy(local.padded)
    with torch.inference_mode():
        for first in range(start, stop, batch_size):
            n = min(batch_size, stop - first)
            for i in range(n):
                read_wav_into(job.paths[first + i], local.rows[i])  # the middle: the zero margins stay zero
            if job.device.type == "cpu":  # float16 straight into the file
                job.frontend.from_padded(pcm[:n], out=job.features[first : first + n], scratch=local.scratch)
            else:
                job.features[first : first + n].copy_(job.frontend.from_padded(pcm[:n].to(job.device),
                                                                               scratch=local.scratch))
    return stop - start


def build_feature_file(*, nsynth: str | Path, out: str | Path, families=None, sources=None,
                       pitches: tuple[int, int] | None = None, velocities=None, kind: str = "features",
                       workers: int | None = None, batch_size: int = BATCH_SIZE, device: str | None = None,
                       progress: bool = True, select=None) -> dict:
    """Build ``out`` from the NSynth split ``nsynth``; returns a summary (notes, seconds, files/s, counts).

    ``select``: a function from the filtered notes (sorted by note id) to the notes to keep
    (``notegrade heldout`` draws its training sample with it)."""
    started = time.perf_counter()
    split = load_split(nsynth, families=families, sources=sources, pitches=pitches, velocities=velocities)
    notes = split.notes if select is None else sorted(select(split.notes), key=lambda n: n.note)
    if not notes:
        raise NotegradeError(f"{nsynth}: no notes left after the filters; nothing to write")
    if batch_size < 1:
        raise NotegradeError(f"--batch-size must be >= 1, got {batch_size}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_workers = workers or len(os.sched_getaffinity(0))
    split_name = Path(nsynth).resolve().name.removeprefix("nsynth-")
    writer = FeatureFileWriter(out, labels=np.array([n.family for n in notes]), notes=np.array([n.note for n in notes]),
                               note_strs=[n.note_str for n in notes], frontend_params=FRONTEND_PARAMS,
                               frontend_hash=frontend_hash(), split=split_name, kind=kind)
    # Tasks of whole batches, at least 8 per worker, at most CHUNK notes: few hand-overs, even ends.
    chunk = batch_size * max(1, min(CHUNK // batch_size, -(-len(notes) // (8 * n_workers * batch_size))))
    starts = range(0, len(notes), chunk)
    job = _Job(paths=[str(n.path) for n in notes], features=torch.from_numpy(writer.features),
               frontend=get_frontend(device), device=device, batch_size=batch_size)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # one torch thread per worker: small batches scale far better across workers
    ok, pool = False, ThreadPoolExecutor(n_workers)
    try:
        with tqdm(total=len(notes), unit="note", desc=f"features {split_name}", disable=None if progress else True) as bar:
            for n in pool.map(partial(_chunk, job), starts, [min(s + chunk, len(notes)) for s in starts]):
                bar.update(n)  # map re-raises a decode error (missing/corrupt WAV) here
        ok = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error or Ctrl-C: no further chunks
        torch.set_num_threads(threads_before)
        writer.close(ok=ok)
    seconds = time.perf_counter() - started
    return {"out": str(out), "split": split_name, "notes": len(notes), "seconds": seconds,
            "files_per_s": len(notes) / seconds,
            "family_counts": split.family_counts() if select is None else
            {name: sum(1 for n in notes if n.family == i) for i, name in enumerate(FAMILIES)}}


def _csv(kind: str, choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {kind} {', '.join(bad) or text!r}; choose from {', '.join(choices)}")
        return items
    return parse


def _pitch_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI MIDI pitches such as 36-84, got {text!r}") from None
    return lo, hi


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 75,100,127, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nsynth", required=True, type=Path, metavar="SPLIT_DIR",
                        help="an NSynth split directory (nsynth-<split>/ with examples.json and audio/)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the feature file to write (.safetensors)")
    parser.add_argument("--families", type=_csv("family", FAMILIES), help="only these families (comma-separated names)")
    parser.add_argument("--sources", type=_csv("source", SOURCES), help="only these sources (acoustic,electronic,synthetic)")
    parser.add_argument("--pitch-range", type=_pitch_range, metavar="LO-HI", help="only MIDI pitches in LO..HI")
    parser.add_argument("--velocities", type=_ints, metavar="V,V,...", help="only these velocities")
    parser.add_argument("--workers", type=int, default=None, help="worker threads, each decoding and computing "
                        "whole batches (default: one per core)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="notes per front-end batch")
    parser.add_argument("--device", default=None, help="front-end device, e.g. cpu or cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    summary = build_feature_file(nsynth=args.nsynth, out=args.out, families=args.families, sources=args.sources,
                                 pitches=args.pitch_range, velocities=args.velocities, workers=args.workers,
                                 batch_size=args.batch_size, device=args.device)
    counts = ", ".join(f"{f} {n}" for f, n in summary["family_counts"].items() if n)
    print(f"wrote {summary['out']}: {summary['notes']} notes ({counts}) in {summary['seconds']:.1f} s "
          f"({summary['files_per_s']:.0f} files/s)")
    return 0


if __name__ == "__main__":  # students: python make_features.py --nsynth nsynth-train --out train.safetensors
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(cli)
    try:
        sys.exit(run(cli.parse_args()))
    except NotegradeError as err:
        print(f"make_features.py: error: {err}", file=sys.stderr)
        sys.exit(1)
