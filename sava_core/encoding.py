"""Media splits in memory and their encodings: rendering a dataset split, latent grids under a VAE
(batched, on the encoder's device) and text prompts as padded tokens with the null prompt.

Latent layouts follow the encoders: a *grid* is what a backbone denoises (``encode_grid``), a
*sequence* (B, T, D) is what Stage I aligns (``grid_to_sequence`` or ``encode``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sava_core.config import Recipe
from sava_core.contracts import Dataset, TextEncoder
from sava_core.device import module_device
from sava_core.errors import SavaError
from sava_core.registry import Registries


def media_dataset(recipe: Recipe, registries: Registries) -> Dataset:
    """The recipe's dataset, which must provide media (the generation stages render and encode clips)."""
    data: Dataset = registries["dataset"].build(recipe.data.name, recipe.data.params)
    if not data.provides_media:
        raise SavaError(f"data: the generation stages need a media dataset; {recipe.data.name!r} provides latents only")
    return data


@dataclass
class MediaSplit:
    """A split rendered into memory: video (N, F, 3, H, W), audio (N, C, S), captions, metadata."""

    video: Tensor
    audio: Tensor
    captions: list[str]
    meta: list[dict[str, Any]]
    fps: float
    sample_rate: int


def load_media(data: Dataset, split: str, limit: int | None = None) -> MediaSplit:
    """The first ``limit`` clips (all when None) of ``split``, stacked; the clips must share shapes."""
    items = data.media(split)
    n = len(items) if limit is None else min(limit, len(items))
    if n == 0:
        raise SavaError(f"data: the {split!r} split is empty; the generation stages need train, val and test clips")
    clips = [items[i] for i in range(n)]
    return MediaSplit(torch.stack([c.video for c in clips]), torch.stack([c.audio for c in clips]),
                      [c.caption for c in clips], [c.meta for c in clips], clips[0].fps, clips[0].sample_rate)


@torch.no_grad()
def encode_grids(encoder: Any, media: Tensor, batch_size: int = 64) -> Tensor:
    """Run ``encoder.encode_grid`` over ``media`` in batches on the encoder's device; grids on the CPU."""
    device = module_device(encoder)
    return torch.cat([encoder.encode_grid(media[i : i + batch_size].to(device)).cpu()
                      for i in range(0, len(media), batch_size)])


@dataclass
class TextBatch:
    """Prompts as padded tokens (N, L, D) and mask (N, L), plus the null (empty) prompt (1, L, D)."""

    tokens: Tensor
    mask: Tensor
    null_tokens: Tensor
    null_mask: Tensor


def _pad_tokens(x: Tensor, length: int) -> Tensor:
    """Tokens (N, L, D) or a mask (N, L) zero-padded to ``length`` along L."""
    pad = (0, 0, 0, length - x.shape[1]) if x.dim() == 3 else (0, length - x.shape[1])
    return torch.nn.functional.pad(x, pad)


@torch.no_grad()
def encode_text(text: TextEncoder, prompts: list[str]) -> TextBatch:
    """``prompts`` and the empty prompt under ``text``, padded to a common length."""
    emb = text.encode(prompts)
    null = text.encode([""])
    length = max(emb.tokens.shape[1], null.tokens.shape[1])
    return TextBatch(_pad_tokens(emb.tokens, length), _pad_tokens(emb.mask, length),
                     _pad_tokens(null.tokens, length), _pad_tokens(null.mask, length))
