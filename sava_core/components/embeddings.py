"""Fixed positional embeddings, and pooling of token sequences."""

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


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Tokens (B, N, D), mask (B, N) bool (None: all kept) -> (B, D) mean of the kept tokens (0 where none is)."""
    if mask is None:
        return tokens.mean(1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
