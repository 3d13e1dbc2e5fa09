"""Fixed positional embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sinusoids(length: int, channels: int) -> Tensor:
    """Fixed sinusoidal embeddings (length, channels) of positions 0..length-1 (channels even)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(length * 2.0) * torch.arange(channels // 2, dtype=torch.float32) / max(channels // 2, 1))
    angles = pos * freq * math.pi
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
