"""The tiny random tower that stands in for networks not implemented yet (ImageBind, CAVP).

It has the right interface only: an image-like input (B, C, H, W) -> a unit-norm embedding
(B, dim). Its numbers mean nothing; extractors that use it say so in their protocol.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class TinyTower(nn.Module):
    """Two strided convolutions, global average pooling and a linear map: (B, C, H, W) -> (B, dim)."""

    def __init__(self, in_channels: int, dim: int = 16, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 4, stride=4)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.proj = nn.Linear(2 * width, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.normalize(self.proj(x.mean((2, 3))), dim=-1)

    def steps(self, x: Tensor, steps: int) -> Tensor:
        """(B, C, H, W) -> per-step embeddings (B, steps, dim), pooling the last axis into ``steps``."""
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = F.adaptive_avg_pool1d(x.mean(2), steps).transpose(1, 2)  # (B, steps, 2 * width)
        return F.normalize(self.proj(x), dim=-1)
