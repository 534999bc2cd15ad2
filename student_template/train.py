"""The training loop: one epoch, evaluation, and ``fit`` with early stopping.

``loader`` is any iterable of ``(features, labels)`` batches: a ``DataLoader`` or the
``FeatureLoader`` of ``featurefile.py`` (device-resident on a GPU).  Batches are moved to ``device`` here.

Example
-------
>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
>>> batches = [(torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,)))]
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> history = fit(model, batches, batches, optimizer=opt, loss_fn=nn.functional.cross_entropy,
...               device="cpu", epochs=3, patience=2)
>>> len(history), sorted(history[0])
(3, ['epoch', 'train_loss', 'valid_accuracy', 'valid_loss'])
"""
import copy
from typing import Callable, Iterable

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    device: "str | torch.device",
) -> float:
    """Train ``model`` for one pass over ``loader``; return the mean loss per example."""
    raise NotImplementedError("TODO: train mode; per batch: move to device, zero grads, forward, loss, backward, step")


def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn,
    device: "str | torch.device",
) -> dict:
    """Mean loss and accuracy of ``model`` on ``loader``, in eval mode without gradients.

    Returns ``{"loss": float, "accuracy": float}``; the model's previous train/eval
    mode is restored afterwards.
    """
    raise NotImplementedError("TODO: remember model.training, switch to eval, loop under torch.no_grad(), restore the mode")


def fit(
    model: nn.Module,
    train_loader: Iterable,
    valid_loader: Iterable,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    device: "str | torch.device",
    epochs: int,
    patience: int,
) -> "list[dict]":
    """Train for up to ``epochs`` epochs with early stopping on the validation loss.

    Stops after ``patience`` epochs without a new best validation loss, then loads the
    best weights back into ``model``.  Returns one dict per epoch run, with keys
    ``epoch`` (1-based), ``train_loss``, ``valid_loss`` and ``valid_accuracy``.
    """
    raise NotImplementedError("TODO: per epoch: train_one_epoch, evaluate, record; keep a copy of the best state_dict")
