"""Loss functions and regularisers, written from scratch.

Rules of the assignment: use only elementary tensor operations (``exp``, ``log``,
``sum``, ``max``, indexing, ...).  No ``torch.nn.functional`` losses, no
``softmax``/``log_softmax``/``logsumexp`` built-ins, no ``nn.*Loss`` modules.
Every loss is mean-reduced, like PyTorch's default ``reduction="mean"``.

Example
-------
>>> import torch
>>> logits = torch.tensor([[2.0, 0.5, -1.0]])
>>> round(float(cross_entropy(logits, torch.tensor([0]))), 4)
0.2413
>>> softmax(logits).sum().item()
1.0
"""
import torch
from torch import nn

# Log-probabilities are clamped at -100, exactly as torch.nn.functional.binary_cross_entropy
# does, so that a probability of exactly 0 or 1 gives a finite loss.
LOG_CLAMP = -100.0
# Smallest probability fed to log(): below exp(-100) in float32/float64, so the clamp above is
# what decides the value, and log() never sees 0 (whose gradient would be 0 * inf = NaN).
_TINY_PROB = 1e-44


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error: ``mean(|pred - target|)``."""
    raise NotImplementedError("TODO: return the mean of the absolute differences")


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error: ``mean((pred - target) ** 2)``."""
    raise NotImplementedError("TODO: return the mean of the squared differences")


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax along ``dim``, stable for large logits (subtract the max first)."""
    raise NotImplementedError("TODO: subtract the max along dim (it cancels out), exponentiate, divide by the sum")


def binary_cross_entropy(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``-(t log p + (1 - t) log(1 - p))``.

    ``prob`` holds probabilities in [0, 1].  Each log term is clamped at -100 (as
    PyTorch does) so that ``prob`` exactly 0 or 1 gives a finite loss and a finite,
    non-NaN gradient.
    """
    raise NotImplementedError("TODO: clamp both log terms at -100 without ever taking log(0)")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy of (N, C) ``logits`` against (N,) class indices.

    Uses log-sum-exp, so it stays finite for ``|logits|`` up to 1e4 and beyond.
    """
    raise NotImplementedError("TODO: loss_i = logsumexp(logits_i) - logits_i[target_i], with the max subtracted first")


class SoftmaxCrossEntropy(torch.autograd.Function):
    """Cross-entropy with a hand-written backward pass.

    ``SoftmaxCrossEntropy.apply(logits, target)`` returns the same mean loss as
    ``cross_entropy``; its gradient with respect to the logits is
    ``(softmax(logits) - one_hot(target)) / N``.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: compute the loss, and save what backward needs with ctx.save_for_backward")

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        raise NotImplementedError("TODO: return (grad wrt logits, None): (softmax - one_hot) / N, scaled by grad_output")


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """L1 regulariser: the sum of ``|w|`` over every weight tensor (biases excluded).

    "Weight tensors" are the parameters whose name ends in ``weight``; multiply the
    result by your lambda and add it to the loss.
    """
    raise NotImplementedError('TODO: sum |w| over model.named_parameters() whose name ends with "weight"')


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """L2 regulariser: the sum of ``w ** 2`` over every weight tensor (biases excluded, no 1/2)."""
    raise NotImplementedError('TODO: sum w ** 2 over model.named_parameters() whose name ends with "weight"')
