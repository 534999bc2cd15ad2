"""Every reference loss against its torch oracle: values, gradients (gradcheck, float64), extremes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference import losses


def test_l1_and_mse_match_torch(rng):
    pred = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(losses.l1_loss(pred, target), F.l1_loss(pred, target))
    torch.testing.assert_close(losses.mse_loss(pred, target), F.mse_loss(pred, target))
    assert torch.autograd.gradcheck(lambda p: losses.mse_loss(p, target), (pred,))
    # l1 is not differentiable at 0; random values never hit it exactly
    assert torch.autograd.gradcheck(lambda p: losses.l1_loss(p, target), (pred,))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_torch_and_is_stable(rng, dim):
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(losses.softmax(logits, dim=dim), torch.softmax(logits, dim=dim))
    assert torch.autograd.gradcheck(lambda z: losses.softmax(z, dim=dim), (logits,))
    huge = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    out = losses.softmax(huge, dim=-1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.softmax(huge, dim=-1))


def test_binary_cross_entropy_matches_torch_including_0_and_1(rng):
    prob = torch.rand(9, dtype=torch.float64).clamp(0.05, 0.95).requires_grad_(True)
    target = torch.randint(0, 2, (9,)).double()
    torch.testing.assert_close(losses.binary_cross_entropy(prob, target), F.binary_cross_entropy(prob, target))
    assert torch.autograd.gradcheck(lambda p: losses.binary_cross_entropy(p, target), (prob,))
    extreme = torch.tensor([0.0, 1.0, 0.0, 1.0], requires_grad=True)
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    value = losses.binary_cross_entropy(extreme, labels)
    torch.testing.assert_close(value, F.binary_cross_entropy(extreme.detach(), labels))  # 50 = 2 * 100 / 4
    value.backward()
    assert torch.isfinite(extreme.grad).all()


def test_cross_entropy_matches_torch_and_is_stable(rng):
    logits = torch.randn(8, 11, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 11, (8,))
    torch.testing.assert_close(losses.cross_entropy(logits, target), F.cross_entropy(logits, target))
    assert torch.autograd.gradcheck(lambda z: losses.cross_entropy(z, target), (logits,))
    for scale in (1e2, 1e3, 1e4):
        big = (torch.randn(8, 11) * scale).requires_grad_(True)
        value = losses.cross_entropy(big, target)
        torch.testing.assert_close(value, F.cross_entropy(big.detach(), target), rtol=1e-5, atol=1e-3)
        value.backward()
        assert torch.isfinite(big.grad).all()


def test_softmax_cross_entropy_backward_matches_autograd(rng):
    logits = torch.randn(6, 11, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 11, (6,))
    assert torch.autograd.gradcheck(lambda z: losses.SoftmaxCrossEntropy.apply(z, target), (logits,))
    value = losses.SoftmaxCrossEntropy.apply(logits, target)
    (grad,) = torch.autograd.grad(value * 3.0, logits)
    oracle = logits.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(oracle, target) * 3.0, oracle)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(value, F.cross_entropy(logits, target))


def test_penalties_sum_weights_only():
    model = nn.Sequential(nn.Linear(3, 2), nn.Conv2d(1, 2, 3))
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    torch.testing.assert_close(losses.l1_penalty(model), sum(w.abs().sum() for w in weights))
    torch.testing.assert_close(losses.l2_penalty(model), sum((w**2).sum() for w in weights))
    losses.l2_penalty(model).backward()
    torch.testing.assert_close(model[0].weight.grad, 2 * model[0].weight.detach())
    assert model[0].bias.grad is None
