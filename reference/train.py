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
    # BEGIN SOLUTION: train mode; per batch: move to device, zero grads, forward, loss, backward, step
    model.train()
    total = torch.zeros((), device=device)  # summed on the device: no host sync per batch
    count = 0
    for features, labels in loader:
        features = features.to(device, non_blocking=True).float()
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(features), labels)
        loss.backward()
        optimizer.step()
        total += loss.detach() * labels.shape[0]
        count += labels.shape[0]
    return (total / max(count, 1)).item()
    # END SOLUTION


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
    # BEGIN SOLUTION: remember model.training, switch to eval, loop under torch.no_grad(), restore the mode
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    try:
        with torch.no_grad():
            for features, labels in loader:
                features = features.to(device, non_blocking=True).float()
                labels = labels.to(device, non_blocking=True)
                logits = model(features)
                total_loss += loss_fn(logits, labels) * labels.shape[0]
                correct += (logits.argmax(dim=1) == labels).sum()
                count += labels.shape[0]
    finally:
        model.train(was_training)
    count = max(count, 1)
    return {"loss": (total_loss / count).item(), "accuracy": (correct.float() / count).item()}
    # END SOLUTION


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
    # BEGIN SOLUTION: per epoch: train_one_epoch, evaluate, record; keep a copy of the best state_dict
    history = []
    best_loss = float("inf")
    best_state = copy.deepcopy(model.state_dict())
    epochs_since_best = 0
    for epoch in range(1, epochs + 1):
        train_loss = train_one_epoch(model, train_loader, optimizer, loss_fn, device)
        metrics = evaluate(model, valid_loader, loss_fn, device)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "valid_loss": metrics["loss"],
                "valid_accuracy": metrics["accuracy"],
            }
        )
        if metrics["loss"] < best_loss:
            best_loss = metrics["loss"]
            best_state = copy.deepcopy(model.state_dict())
            epochs_since_best = 0
        else:
            epochs_since_best += 1
            if epochs_since_best >= patience:
                break
    model.load_state_dict(best_state)
    return history
    # END SOLUTION
