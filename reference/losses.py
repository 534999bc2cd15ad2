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
    # BEGIN SOLUTION: return the mean of the absolute differences
    return (pred - target).abs().mean()
    # END SOLUTION


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error: ``mean((pred - target) ** 2)``."""
    # BEGIN SOLUTION: return the mean of the squared differences
    return ((pred - target) ** 2).mean()
    # END SOLUTION


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax along ``dim``, stable for large logits (subtract the max first)."""
    # BEGIN SOLUTION: subtract the max along dim (it cancels out), exponentiate, divide by the sum
    shifted = logits - logits.amax(dim=dim, keepdim=True).detach()
    exps = shifted.exp()
    return exps / exps.sum(dim=dim, keepdim=True)
    # END SOLUTION


def binary_cross_entropy(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``-(t log p + (1 - t) log(1 - p))``.

    ``prob`` holds probabilities in [0, 1].  Each log term is clamped at -100 (as
    PyTorch does) so that ``prob`` exactly 0 or 1 gives a finite loss and a finite,
    non-NaN gradient.
    """
    # BEGIN SOLUTION: clamp both log terms at -100 without ever taking log(0)
    log_p = torch.log(prob.clamp(min=_TINY_PROB)).clamp(min=LOG_CLAMP)
    log_not_p = torch.log((1.0 - prob).clamp(min=_TINY_PROB)).clamp(min=LOG_CLAMP)
    return -(target * log_p + (1.0 - target) * log_not_p).mean()
    # END SOLUTION


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy of (N, C) ``logits`` against (N,) class indices.

    Uses log-sum-exp, so it stays finite for ``|logits|`` up to 1e4 and beyond.
    """
    # BEGIN SOLUTION: loss_i = logsumexp(logits_i) - logits_i[target_i], with the max subtracted first
    top = logits.amax(dim=1, keepdim=True).detach()
    log_sum_exp = top.squeeze(1) + (logits - top).exp().sum(dim=1).log()
    picked = logits.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return (log_sum_exp - picked).mean()
    # END SOLUTION


class SoftmaxCrossEntropy(torch.autograd.Function):
    """Cross-entropy with a hand-written backward pass.

    ``SoftmaxCrossEntropy.apply(logits, target)`` returns the same mean loss as
    ``cross_entropy``; its gradient with respect to the logits is
    ``(softmax(logits) - one_hot(target)) / N``.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION: compute the loss, and save what backward needs with ctx.save_for_backward
        probs = softmax(logits, dim=1)
        ctx.save_for_backward(probs, target)
        return cross_entropy(logits, target)
        # END SOLUTION

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # BEGIN SOLUTION: return (grad wrt logits, None): (softmax - one_hot) / N, scaled by grad_output
        probs, target = ctx.saved_tensors
        grad = probs.clone()
        grad[torch.arange(grad.shape[0], device=grad.device), target.long()] -= 1.0
        return grad * (grad_output / grad.shape[0]), None
        # END SOLUTION


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """L1 regulariser: the sum of ``|w|`` over every weight tensor (biases excluded).

    "Weight tensors" are the parameters whose name ends in ``weight``; multiply the
    result by your lambda and add it to the loss.
    """
    # BEGIN SOLUTION: sum |w| over model.named_parameters() whose name ends with "weight"
    return sum(p.abs().sum() for name, p in model.named_parameters() if name.endswith("weight"))
    # END SOLUTION


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """L2 regulariser: the sum of ``w ** 2`` over every weight tensor (biases excluded, no 1/2)."""
    # BEGIN SOLUTION: sum w ** 2 over model.named_parameters() whose name ends with "weight"
    return sum((p**2).sum() for name, p in model.named_parameters() if name.endswith("weight"))
    # END SOLUTION
