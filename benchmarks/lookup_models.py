"""Real models for the lookup detector's benchmark: rendered public and private splits, honest models, their accuracies.

One job: produce (and cache in ``--work``) what ``benchmarks/bench_lookup.py`` needs from real
training: a public world rendered from one SoundFont (train/valid/test with disjoint instruments:
the test split plays NSynth's public test split) and a private control split rendered from another
SoundFont with a secret variation (``notegrade data render --single-split private
--variation-secret``); honest NoteCNNs trained on the public training split over a grid of seeds,
epochs and training-set sizes; and each model's per-note correctness on the public test notes and
the private notes (clean features, as the reference's numbers are recorded).  Cached as
``models.json``; a rerun only trains what is missing.  Epochs are snapshots of one run per (seed,
size): the weights as they are after that many epochs.
"""
from __future__ import annotations

import json
import pathlib
import time

import numpy as np

PUBLIC_FONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
# Two private control splits, each rendered from a SoundFont the public world never uses, with a
# secret variation: a full GM font like the public one, and a small, cruder one (a larger shift).
CONTROL_FONTS = {"musescore": "/usr/share/sounds/sf3/MuseScore_General.sf3",
                 "timgm": "/usr/share/sounds/sf2/TimGM6mb.sf2"}
PUBLIC_RENDER = {"seed": 0, "max_programs_per_family": 10, "notes_per_instrument": 40}
CONTROL_RENDER = {"seed": 0, "max_programs_per_family": 8, "notes_per_instrument": 16}
REFERENCE = {"seed": 0, "epochs": 8, "size": 1.0}
GRID = {"seed": (0, 1, 2), "epochs": (1, 2, 4, 8, 16), "size": (0.3, 1.0)}


def prepare_data(work: pathlib.Path, *, workers: int = 2) -> dict:
    """Render the public world and the control splits, and their feature files (once); the paths."""
    from reference.make_features import build_feature_file
    from reference.render import main as render

    paths = {split: work / f"{split}.safetensors" for split in ("train", "valid", "test", *CONTROL_FONTS)}
    if all(p.is_file() for p in paths.values()):
        return paths
    if not (work / "public" / "nsynth-test").is_dir():
        render(out=work / "public", soundfonts=[PUBLIC_FONT], workers=workers, progress=False, overwrite=True,
               **PUBLIC_RENDER)
    for name, font in CONTROL_FONTS.items():
        if not (work / name / "nsynth-private").is_dir():
            render(out=work / name, soundfonts=[font], workers=workers, progress=False, overwrite=True,
                   single_split="private", variation_secret=work / "control.secret", **CONTROL_RENDER)
    for split in ("train", "valid", "test"):
        build_feature_file(nsynth=work / "public" / f"nsynth-{split}", out=paths[split], workers=workers,
                           progress=False, device="cpu")
    for name in CONTROL_FONTS:
        build_feature_file(nsynth=work / name / "nsynth-private", out=paths[name], workers=workers, progress=False,
                           device="cpu")
    return paths


def _subset(features, labels, size: float, seed: int):
    if size >= 1.0:
        return features, labels
    rows = np.sort(np.random.default_rng([seed, 99]).choice(len(labels), int(size * len(labels)), replace=False))
    return features[rows], labels[rows]


def train(paths: dict, *, seed: int, epochs: "tuple[int, ...]", size: float) -> "dict[int, dict]":
    """NoteCNNs trained on ``size`` of the public training split (one CPU thread): ``{e: state_dict after e
    epochs}`` for each ``e`` in ``epochs`` (one run, the weights as they are after that epoch)."""
    import copy

    import torch
    import torch.nn.functional as F

    from autograder.featurefile import FeatureLoader, FeatureSet, read_feature_file
    from reference.model import NoteCNN
    from reference.train import train_one_epoch

    data = read_feature_file(paths["train"], mmap=False)
    features, labels = _subset(np.asarray(data.features), np.asarray(data.labels), size, seed)
    subset = FeatureSet(features=features, labels=labels, notes=np.arange(len(labels)), note_strs=[""] * len(labels),
                        metadata=data.metadata)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = NoteCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loader = FeatureLoader(subset, batch_size=32, shuffle=True, seed=seed)
    states = {}
    for epoch in range(1, max(epochs) + 1):
        train_one_epoch(model, loader, optimizer, F.cross_entropy, "cpu")
        if epoch in epochs:
            states[epoch] = copy.deepcopy(model.state_dict())
    return states


def correctness(state: dict, path: pathlib.Path) -> np.ndarray:
    """Per-note correctness (bool) of ``state`` on a feature file's notes."""
    import torch

    from autograder.featurefile import read_feature_file
    from reference.model import NoteCNN

    data = read_feature_file(path, mmap=False)
    model = NoteCNN()
    model.load_state_dict(state)
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(torch.from_numpy(np.asarray(data.features[i:i + 256], dtype=np.float32)))
                            for i in range(0, len(data), 256)]).numpy()
    return logits.argmax(1) == np.asarray(data.labels)


def model_key(seed: int, epochs: int, size: float) -> str:
    return f"seed{seed}-epochs{epochs}-size{size:g}"


def honest_models(work: pathlib.Path, *, workers: int = 2, echo=print) -> dict:
    """``{key: {"seed", "epochs", "size", "public": [0/1...], <control>: [0/1...]}}``, cached in models.json."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    paths = prepare_data(work, workers=workers)
    cache = work / "models.json"
    models = json.loads(cache.read_text()) if cache.is_file() else {}
    for seed in GRID["seed"]:
        for size in GRID["size"]:
            if all(model_key(seed, e, size) in models for e in GRID["epochs"]):
                continue
            started = time.perf_counter()
            for epochs, state in train(paths, seed=seed, epochs=GRID["epochs"], size=size).items():
                if (seed, epochs, size) == (REFERENCE["seed"], REFERENCE["epochs"], REFERENCE["size"]):
                    torch.save(state, work / "reference.pt")
                entry = {"seed": seed, "epochs": epochs, "size": size,
                         "public": correctness(state, paths["test"]).astype(int).tolist()}
                for name in CONTROL_FONTS:
                    entry[name] = correctness(state, paths[name]).astype(int).tolist()
                models[model_key(seed, epochs, size)] = entry
                echo(f"{model_key(seed, epochs, size)}: public {np.mean(entry['public']):.1%} "
                     f"({len(entry['public'])} notes), " + ", ".join(
                         f"{name} {np.mean(entry[name]):.1%} ({len(entry[name])})" for name in CONTROL_FONTS))
            cache.write_text(json.dumps(models))
            echo(f"seed {seed}, size {size:g}: {time.perf_counter() - started:.0f} s")
    return models


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/notegrade-lookup"))
    args = parser.parse_args()
    honest_models(args.work)
