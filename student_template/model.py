"""NoteCNN: the assignment's CNN for 11-way NSynth instrument-family classification.

Input: (N, 1, 64, 64) log-mel features from ``features.py``.  Output: (N, n_classes) logits.

====== ================= ======================== ============
block  layer             output shape (N = batch)  parameters
====== ================= ======================== ============
1      conv1 3x3, 1->16   (N, 16, 32, 32) (pooled)          160
2      conv2 3x3, 16->32  (N, 32, 16, 16)                 4,640
3      conv3 3x3, 32->64  (N, 64, 8, 8)                  18,496
4      conv4 3x3, 64->128 (N, 128, 4, 4)                 73,856
head   fc 2048->11        (N, 11)                        22,539
total                                                   119,691
====== ================= ======================== ============

Each conv uses padding "same" and a bias, followed by ReLU and ``pool``
(one shared ``MaxPool2d(2, 2)``, which has no parameters).

Example
-------
>>> import torch
>>> model = NoteCNN()
>>> model(torch.zeros(2, 1, 64, 64)).shape
torch.Size([2, 11])
>>> sum(p.numel() for p in model.parameters())
119691
"""
import torch
from torch import nn


class NoteCNN(nn.Module):
    """Four conv/ReLU/max-pool blocks and a linear classifier."""

    def __init__(self, n_classes: int = 11) -> None:
        super().__init__()
        raise NotImplementedError('TODO: define conv1..conv4 (3x3, padding="same"), pool = MaxPool2d(2, 2) and fc = Linear(2048, n_classes)')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) features -> (N, n_classes) logits (no softmax)."""
        raise NotImplementedError("TODO: apply conv -> ReLU -> pool for each of the four blocks, flatten to (N, 2048), then fc")
