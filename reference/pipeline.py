"""Train NoteCNN on feature files: config -> data on the device -> fit -> checkpoint, history, plots.

Writes into ``--out DIR``:

* ``model.pt``        the plain ``state_dict`` to submit (loads with ``torch.load(..., weights_only=True)``)
* ``checkpoint.pt``   ``{"state_dict", "config", "metrics", "history"}`` (also ``weights_only``-safe)
* ``history.csv`` / ``history.json``   one row per epoch
* ``curves.png``      training/validation loss and validation accuracy per epoch
* ``config.json``     the exact configuration used

Example
-------
>>> from reference.pipeline import TrainConfig
>>> TrainConfig(epochs=2).optimizer
'adam'
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autograder.errors import NotegradeError
from autograder.featurefile import FeatureLoader, read_feature_file
from reference.features import DB_OFFSET, DB_SCALE, frontend_hash
from reference.losses import SoftmaxCrossEntropy, cross_entropy, l1_penalty, l2_penalty
from reference.model import NoteCNN
from reference.train import evaluate, fit

EXAMPLES = """examples:
  notegrade train --train data/train.safetensors --valid data/valid.safetensors --out runs/ref
  notegrade train --train train.safetensors --valid valid.safetensors --out runs/sgd \\
      --optimizer sgd --lr 0.05 --momentum 0.9 --l2 1e-4 --epochs 40 --patience 6
  python pipeline.py --train train.safetensors --valid valid.safetensors --out runs/mine   (student template)
"""


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in the checkpoint and config.json)."""

    epochs: int = 10  # upper bound on passes over the training set; early stopping may end sooner
    patience: int = 4  # epochs without a lower validation loss before stopping
    batch_size: int = 64  # examples per optimizer step (64 is also fastest on CPU with channels_last)
    optimizer: str = "adam"  # "adam" or "sgd" (SGD uses momentum)
    lr: float = 1e-3  # learning rate
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    l1: float = 0.0  # lambda for l1_penalty(model), added to the loss
    l2: float = 0.0  # lambda for l2_penalty(model), added to the loss
    label_smoothing: float = 0.1  # share of the target spread evenly over all classes (0: plain cross-entropy)
    loss: str = "cross_entropy"  # "cross_entropy" | "softmax_cross_entropy" (losses.py) | "torch" (F.cross_entropy)
    seed: int = 0  # seeds weights and batch order: same seed, same run on the CPU
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    threads: int = 0  # CPU threads for torch (0: all cores)
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU (1.4x here) and tensor cores
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on the CPU)
    augment: bool = True  # random gain + SpecAugment-style time and frequency masks on training batches
    gain_db: float = 10.0  # augmentation: per-note level change, uniform in +-gain_db dB
    max_mask: int = 8  # augmentation: widest masked band of mel bins and of frames


class _Augment:
    """Training-batch augmentation on features, seeded: the test instruments are unseen, so make
    the network rely less on one instrument's exact level and spectral detail.

    Per note: shift the level by up to ``gain_db`` dB (silent bins stay at the floor), then set one
    random band of up to ``max_mask`` mel bins and one of up to ``max_mask`` frames to silence.
    """

    def __init__(self, loader, *, gain_db: float, max_mask: int, seed: int) -> None:
        self.loader, self.gain_db, self.max_mask = loader, gain_db, max_mask
        self.generator = torch.Generator().manual_seed(seed + 1)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        floor = (-100.0 - DB_OFFSET) / DB_SCALE  # the front-end's value for digital silence
        for features, labels in self.loader:
            n, device = features.shape[0], features.device
            rand = torch.rand(n, 5, generator=self.generator).to(device)
            gain = ((rand[:, 0] * 2 - 1) * self.gain_db / DB_SCALE).view(n, 1, 1, 1)
            features = torch.where(features > floor, (features + gain).clamp(min=floor), features)
            bins = torch.arange(features.shape[2], device=device)
            steps = torch.arange(features.shape[3], device=device)
            width = (rand[:, 1] * (self.max_mask + 1)).floor()
            start = (rand[:, 2] * (features.shape[2] - width)).floor()
            band = (bins >= start[:, None]) & (bins < (start + width)[:, None])  # (n, mels)
            width = (rand[:, 3] * (self.max_mask + 1)).floor()
            start = (rand[:, 4] * (features.shape[3] - width)).floor()
            frames = (steps >= start[:, None]) & (steps < (start + width)[:, None])  # (n, frames)
            mask = band[:, None, :, None] | frames[:, None, None, :]
            yield features.masked_fill(mask, floor), labels


class _Autocast(nn.Module):
    """Runs the wrapped model under CUDA bf16 autocast and returns float32 logits.

    bf16 needs no loss scaling, so the contract's ``train_one_epoch`` works unchanged.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return self.model(x).float()


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; refuse CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NotegradeError(f"--device {name}: this machine has no CUDA GPU; use --device cpu or auto")
    return device


def channels_last_works(model: nn.Module, device: torch.device) -> bool:
    """Whether ``model`` runs a channels_last batch (False: its forward needs contiguous memory, e.g.
    ``x.view(x.size(0), -1)``, a correct model that only the faster memory format breaks).  Raises
    :class:`NotegradeError` when the forward fails on contiguous input too."""
    x = torch.zeros(2, 1, 64, 64, device=device)
    try:
        with torch.inference_mode():  # (spelled unlike train.py's evaluate, which students write)
            model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        return True
    except RuntimeError:
        pass
    try:
        with torch.inference_mode():
            model.to(memory_format=torch.contiguous_format)(x)
    except Exception as err:
        raise NotegradeError(f"NoteCNN.forward fails on a batch of 2 notes: {type(err).__name__}: {err}") from None
    return False


def make_loss(config: TrainConfig, model: nn.Module):
    """The training objective: the chosen cross-entropy plus optional L1/L2 penalties."""
    base = {
        "cross_entropy": cross_entropy,
        "softmax_cross_entropy": SoftmaxCrossEntropy.apply,
        "torch": nn.functional.cross_entropy,
    }[config.loss]
    if not (config.l1 or config.l2 or config.label_smoothing):
        return base

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = base(logits, target)
        if config.label_smoothing:
            # Cross-entropy against the uniform target is logsumexp(z) - mean(z), i.e. the loss above
            # plus z_target - mean(z).  Smoothing keeps logits bounded, so the validation loss that
            # early stopping watches does not explode on confident mistakes (unseen instruments).
            picked = (logits * nn.functional.one_hot(target.long(), logits.shape[1])).sum(dim=1)
            loss = loss + config.label_smoothing * (picked - logits.mean(dim=1)).mean()
        if config.l1:
            loss = loss + config.l1 * l1_penalty(model)
        if config.l2:
            loss = loss + config.l2 * l2_penalty(model)
        return loss

    return loss_fn


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    raise NotegradeError(f"unknown optimizer {config.optimizer!r}; use 'adam' or 'sgd'")


def main(*, train: Path, valid: Path, out: Path, config: TrainConfig | None = None) -> dict:
    """Train the reference NoteCNN; return ``{"history", "metrics", "out"}``."""
    config = config or TrainConfig()
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    expected = frontend_hash()
    train_set = read_feature_file(train, expected_frontend_hash=expected)
    valid_set = read_feature_file(valid, expected_frontend_hash=expected)
    if config.channels_last and not channels_last_works(NoteCNN().to(device), device):
        print("note: your NoteCNN.forward does not accept channels_last input (x.view(x.size(0), -1) needs "
              "contiguous memory; torch.flatten(x, 1) does not), so training uses contiguous tensors: correct, "
              "a little slower", file=sys.stderr)
        config = dataclasses.replace(config, channels_last=False)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    train_loader = FeatureLoader(
        train_set, batch_size=config.batch_size, shuffle=True, seed=config.seed, device=device,
        channels_last=config.channels_last,
    )
    valid_loader = FeatureLoader(
        valid_set, batch_size=256, shuffle=False, seed=config.seed, device=device, channels_last=config.channels_last
    )

    model = NoteCNN().to(device, memory_format=fmt)
    trained = _Autocast(model) if (config.amp and device.type == "cuda") else model
    optimizer = make_optimizer(config, model)
    loss_fn = make_loss(config, model)

    start = time.perf_counter()
    if config.augment:
        train_loader = _Augment(train_loader, gain_db=config.gain_db, max_mask=config.max_mask, seed=config.seed)
    history = fit(
        trained, _Progress(train_loader, "epoch"), valid_loader, optimizer=optimizer, loss_fn=loss_fn, device=device,
        epochs=config.epochs, patience=config.patience,
    )
    seconds = time.perf_counter() - start
    final = evaluate(trained, valid_loader, nn.functional.cross_entropy, device)
    metrics = {
        "valid_loss": final["loss"],
        "valid_accuracy": final["accuracy"],
        "epochs_run": len(history),
        "train_seconds": round(seconds, 2),
        "examples_per_second": round(len(history) * len(train_set.labels) / max(seconds, 1e-9), 1),
        "device": str(device),
    }
    _save(out, model=model, config=config, metrics=metrics, history=history)
    return {"history": history, "metrics": metrics, "out": str(out)}


def _save(out: Path, *, model: nn.Module, config: TrainConfig, metrics: dict, history: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / "model.pt")
    torch.save(
        {"state_dict": state, "config": dataclasses.asdict(config), "metrics": metrics, "history": history},
        out / "checkpoint.pt",
    )
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    with open(out / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_history(history, out / "curves.png")


def plot_history(history: list[dict], path: Path) -> None:
    """Loss (train, valid) and validation accuracy per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["valid_loss"] for h in history], label="valid")
    left.set(xlabel="epoch", ylabel="loss", title="Loss")
    left.legend()
    right.plot(epochs, [100 * h["valid_accuracy"] for h in history], color="tab:green")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_CHOICES = {"optimizer": ("adam", "sgd"), "loss": ("cross_entropy", "softmax_cross_entropy", "torch")}


class _Progress:
    """A loader that shows a tqdm bar per pass (the contract's ``fit`` stays free of display code)."""

    def __init__(self, loader, desc: str) -> None:
        self.loader, self.desc, self.passes = loader, desc, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        from tqdm.auto import tqdm

        self.passes += 1
        return iter(tqdm(self.loader, desc=f"{self.desc} {self.passes}", leave=False, unit="batch", disable=None))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", type=Path, required=True, help="training feature file (notegrade data features)")
    parser.add_argument("--valid", type=Path, required=True, help="validation feature file")
    parser.add_argument("--out", type=Path, required=True, help="output directory (model.pt, history, plots)")
    helps = _field_comments()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default,
                                help=helps.get(field.name))
        else:
            kind = {"int": int, "float": float, "str": str}[str(field.type)]
            parser.add_argument(flag, type=kind, default=field.default, choices=_CHOICES.get(field.name),
                                help=helps.get(field.name))


def _field_comments() -> dict[str, str]:
    """--help text for each TrainConfig field: its comment in the class body (one source of truth)."""
    import inspect
    import re

    pattern = re.compile(r"^\s+(\w+): \w+ = .*?  # (.+)$")
    return {m[1]: m[2].replace("%", "%%") for m in map(pattern.match, inspect.getsource(TrainConfig).splitlines()) if m}


def run(args: argparse.Namespace, *, student: bool = False) -> int:
    """``notegrade train`` (the instructor's) or, with ``student``, ``python pipeline.py`` (the student's)."""
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    result = main(train=args.train, valid=args.valid, out=args.out, config=config)
    m = result["metrics"]
    submit = " (submit it with model.py, losses.py and train.py)" if student else ""
    print(
        f"trained {m['epochs_run']} epochs in {m['train_seconds']:.0f} s on {m['device']} "
        f"({m['examples_per_second']:.0f} examples/s); valid accuracy {100 * m['valid_accuracy']:.1f}%\n"
        f"wrote {args.out / 'model.pt'}{submit}, checkpoint.pt, history.csv, curves.png"
    )
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(_parser)
    try:
        raise SystemExit(run(_parser.parse_args(), student=True))
    except NotegradeError as _err:
        raise SystemExit(f"error: {_err}")
