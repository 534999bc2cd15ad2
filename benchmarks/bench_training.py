"""Benchmark 2: reference training on the CPU.

1. Throughput: examples/s of the contract's ``train_one_epoch`` (NoteCNN, Adam, batch 64) on real
   training features, NCHW against channels_last, both timed in this run on the same cores.
2. Time to target: the default ``notegrade train`` configuration on the rendered dataset's train and
   valid splits, then accuracy on the test split's held-out instruments (target: >= 65% within
   10 minutes of training on 2 CPU cores; rendering and feature building are not counted).

Usage (feature files from ``notegrade data render`` + ``notegrade data features``)::

    python benchmarks/bench_training.py --train data/train.safetensors --valid data/valid.safetensors \\
        --test data/test.safetensors [--throughput-batches 60] [--skip-full]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autograder.featurefile import FeatureLoader, read_feature_file
from reference import evaluation, pipeline
from reference.model import NoteCNN
from reference.train import train_one_epoch


def throughput(train: Path, *, batches: int, batch_size: int = 64) -> dict[str, float]:
    """examples/s of train_one_epoch over the first ``batches`` batches, per memory format."""
    data = read_feature_file(train)
    results = {}
    for name, channels_last in (("NCHW", False), ("channels_last", True)):
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = NoteCNN().to(memory_format=fmt)
        loader = FeatureLoader(data, batch_size=batch_size, shuffle=True, seed=0, channels_last=channels_last)
        subset = [batch for _, batch in zip(range(batches), loader)]
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        train_one_epoch(model, subset[:3], optimizer, F.cross_entropy, "cpu")  # warm-up
        start = time.perf_counter()
        train_one_epoch(model, subset, optimizer, F.cross_entropy, "cpu")
        results[name] = len(subset) * batch_size / (time.perf_counter() - start)
    return results


def time_to_target(train: Path, valid: Path, test: Path, *, out: Path) -> dict:
    """Default reference training, then test-split accuracy."""
    result = pipeline.main(train=train, valid=valid, out=out, config=pipeline.TrainConfig())
    summary = evaluation.main(checkpoint=out / "model.pt", features=test, out=out / "test")
    return {**result["metrics"], "test_accuracy": summary["accuracy"], "per_family": summary["per_family"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=Path("data/train.safetensors"))
    parser.add_argument("--valid", type=Path, default=Path("data/valid.safetensors"))
    parser.add_argument("--test", type=Path, default=Path("data/test.safetensors"))
    parser.add_argument("--throughput-batches", type=int, default=60)
    parser.add_argument("--skip-full", action="store_true", help="only the throughput part")
    parser.add_argument("--out", type=Path, default=None, help="keep the full run here (default: a temp dir)")
    args = parser.parse_args()
    for path in (args.train, args.valid, args.test):
        if not path.is_file():
            raise SystemExit(
                f"{path} not found: render and build features first, e.g.\n"
                "  notegrade data render --out data/rendered\n"
                "  notegrade data features --nsynth data/rendered/nsynth-train --out data/train.safetensors  (and valid, test)"
            )
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load {load:.2f}")
    rates = throughput(args.train, batches=args.throughput_batches)
    print(f"train_one_epoch throughput (batch 64, Adam): NCHW {rates['NCHW']:.0f} examples/s, "
          f"channels_last {rates['channels_last']:.0f} examples/s ({rates['channels_last'] / rates['NCHW']:.2f}x)")
    if args.skip_full:
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "run"
        full = time_to_target(args.train, args.valid, args.test, out=out)
    n_train = len(read_feature_file(args.train).labels)
    print(f"default training: {full['epochs_run']} epochs over {n_train} notes in {full['train_seconds']:.0f} s "
          f"({full['examples_per_second']:.0f} examples/s incl. validation), load {os.getloadavg()[0]:.2f}")
    print(f"test accuracy (held-out instruments): {100 * full['test_accuracy']:.1f}% "
          f"(target 65%: {'met' if full['test_accuracy'] >= 0.65 else 'NOT met'}; "
          f"time limit 600 s: {'met' if full['train_seconds'] <= 600 else 'NOT met'})")
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in full["per_family"].items()}))


if __name__ == "__main__":
    main()
