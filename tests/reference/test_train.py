"""train_one_epoch / evaluate / fit on the CPU: they learn, keep modes, stop early, restore the best."""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from reference.model import NoteCNN
from reference.train import evaluate, fit, train_one_epoch


def _batches(n, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 64, 64, generator=gen)
    y = torch.randint(0, 11, (n,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def test_fit_overfits_a_tiny_batch(rng):
    model = NoteCNN()
    data = _batches(16, 16, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = fit(model, data, data, optimizer=opt, loss_fn=F.cross_entropy, device="cpu", epochs=60, patience=60)
    assert history[-1]["train_loss"] < 0.1 * history[0]["train_loss"]
    assert evaluate(model, data, F.cross_entropy, "cpu")["accuracy"] == 1.0


def test_train_one_epoch_returns_mean_loss_and_steps(rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64 * 64, 11))
    data = _batches(32, 8, seed=2)
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_one_epoch(model, data, opt, F.cross_entropy, "cpu")
    expected = sum(F.cross_entropy(model(x), y).item() * len(y) for x, y in data) / 32
    assert abs(loss - expected) < 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_evaluate_uses_eval_mode_no_grad_and_restores_mode(rng):
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64 * 64, 11)

        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return self.lin(x.flatten(1))

    model = Probe().train()
    data = _batches(8, 4, seed=3)
    result = evaluate(model, data, F.cross_entropy, "cpu")
    assert set(result) == {"loss", "accuracy"} and 0.0 <= result["accuracy"] <= 1.0
    assert seen == [(False, False), (False, False)]
    assert model.training
    model.eval()
    evaluate(model, data, F.cross_entropy, "cpu")
    assert not model.training


def test_fit_early_stops_and_restores_best_weights(rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64 * 64, 11))
    train = _batches(32, 8, seed=4)
    valid = _batches(16, 8, seed=5)  # unrelated labels: the validation loss soon rises
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    history = fit(model, train, valid, optimizer=opt, loss_fn=F.cross_entropy, device="cpu", epochs=50, patience=3)
    losses = [h["valid_loss"] for h in history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert len(history) == best + 1 + 3 < 50
    restored = evaluate(model, valid, F.cross_entropy, "cpu")["loss"]
    assert abs(restored - losses[best]) < 1e-6
