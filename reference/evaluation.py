"""Evaluate a checkpoint on a feature file: accuracy, per-family accuracy, confusion matrix.

Writes ``DIR/metrics.json`` (``accuracy``, ``per_family``, ``confusion``, counts, provenance) and
``DIR/confusion.png``.  The checkpoint may be a plain ``state_dict`` (``model.pt``) or the
``checkpoint.pt`` that ``notegrade train`` writes; both load with ``weights_only=True``.

Example
-------
>>> import numpy as np
>>> summary = summarize(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), families=["a", "b", "c"])
>>> summary["accuracy"], summary["per_family"]["c"]
(0.75, 0.5)
"""
from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from autograder.errors import NotegradeError
from autograder.featurefile import FeatureLoader, read_feature_file
from reference.features import frontend_hash
from reference.model import NoteCNN
from reference.pipeline import resolve_device

EXAMPLES = """examples:
  notegrade evaluate --model runs/ref/model.pt --features data/test.safetensors --out runs/ref/test
  notegrade evaluate --model runs/ref/checkpoint.pt --features data/valid.safetensors --out eval --device cpu
"""


def load_state_dict(path: Path) -> dict:
    """A NoteCNN state_dict from ``model.pt`` or ``checkpoint.pt`` (never unpickles code).

    A file that is none (empty, a Git LFS pointer, text, a pickled model, a training checkpoint) gets the
    message a student gets for it (:func:`autograder.checks.checkpoint.read_checkpoint`), naming ``path``."""
    if not path.is_file():
        raise NotegradeError(f"checkpoint {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise NotegradeError(f"checkpoint {path} cannot be read ({err.strerror or err})") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - whatever torch says, the message below says it in one sentence
        raise NotegradeError(_refusal(path, data)) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NotegradeError(_refusal(path, data))
    return obj


def _refusal(path: Path, data: bytes) -> str:
    """The grader's message for a ``model.pt`` of these bytes, about ``path`` (an instructor submits nothing)."""
    from autograder.checks.checkpoint import CheckpointRefused, read_checkpoint

    try:
        read_checkpoint(data, policy={"buffer_budget": len(data)})  # the kind of file, not the budget
    except CheckpointRefused as refused:
        message = re.sub(r" and submit (that file|the real model\.pt)", "", str(refused))
        return str(path) + message.removeprefix("model.pt") if message.startswith("model.pt") else f"{path}: {message}"
    return f"{path} holds no state_dict (a dict of tensors); save model.state_dict()"


@torch.inference_mode()
def predict(model: torch.nn.Module, loader: FeatureLoader) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) class ids over the whole loader."""
    model.eval()
    preds, labels = [], []
    for features, target in loader:
        preds.append(model(features).argmax(dim=1))  # stays on the device: one sync at the end
        labels.append(target)
    return torch.cat(preds).cpu().numpy(), torch.cat(labels).cpu().numpy()


def summarize(pred: np.ndarray, true: np.ndarray, *, families: list[str]) -> dict:
    """Accuracy, per-family accuracy (None where a family has no examples) and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix

    labels = list(range(len(families)))
    confusion = confusion_matrix(true, pred, labels=labels)
    support = confusion.sum(axis=1)
    per_family = {
        name: (float(confusion[i, i] / support[i]) if support[i] else None) for i, name in enumerate(families)
    }
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "per_family": per_family,
        "confusion": confusion.tolist(),
        "support": {name: int(n) for name, n in zip(families, support)},
        "n": int(len(true)),
        "families": list(families),
    }


def plot_confusion(summary: dict, path: Path) -> None:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(summary["confusion"], dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = summary["families"]
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted family", ylabel="true family",
           title=f"Confusion (accuracy {100 * summary['accuracy']:.1f}%, n={summary['n']})")
    for i in range(len(names)):
        for j in range(len(names)):
            if counts[i, j]:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true family")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(*, checkpoint: Path, features: Path, out: Path, device: str = "auto", batch_size: int = 256) -> dict:
    """Evaluate ``checkpoint`` on ``features``; write metrics.json and confusion.png into ``out``."""
    state = load_state_dict(checkpoint)
    model = NoteCNN()
    from autograder.harness.checkpoint import mismatch  # every missing/unexpected/misshapen key, by name

    problem = mismatch(model.state_dict(), state)
    if problem:
        raise NotegradeError(f"{checkpoint}: {problem.replace('your NoteCNN', 'the reference NoteCNN')}")
    model.load_state_dict(state)
    dev = resolve_device(device)
    model = model.to(dev, memory_format=torch.channels_last)
    data = read_feature_file(features, expected_frontend_hash=frontend_hash())
    loader = FeatureLoader(data, batch_size=batch_size, shuffle=False, seed=0, device=dev, channels_last=True)
    pred, true = predict(model, loader)
    families = json.loads(data.metadata["families"])
    summary = summarize(pred, true, families=families)
    summary.update(checkpoint=str(checkpoint), features=str(features), split=data.metadata.get("split"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_confusion(summary, out / "confusion.png")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --model as in calibrate and selfcheck; --checkpoint is its older name
    parser.add_argument("--model", "--checkpoint", dest="checkpoint", type=Path, required=True, metavar="FILE",
                        help="model.pt (state_dict) or checkpoint.pt")
    parser.add_argument("--features", type=Path, required=True, help="feature file to evaluate on")
    parser.add_argument("--out", type=Path, required=True, help="output directory for metrics.json, confusion.png")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=256, help="notes per forward pass")


def run(args: argparse.Namespace) -> int:
    summary = main(checkpoint=args.checkpoint, features=args.features, out=args.out, device=args.device,
                   batch_size=args.batch_size)
    print(f"accuracy {100 * summary['accuracy']:.1f}% on {summary['n']} notes")
    for name, acc in summary["per_family"].items():
        print(f"  {name:<11} " + ("   n/a" if acc is None else f"{100 * acc:5.1f}%") + f"  (n={summary['support'][name]})")
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'confusion.png'}")
    return 0
