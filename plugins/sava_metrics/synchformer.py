"""Synchformer (Iashin, Xie, Rahtu and Zisserman, ICASSP 2024) as av-benchmark builds it for DeSync,
inference only.

Ported from hkchengrex/av-benchmark @ 050a5cd, ``av_bench/synchformer/`` (``synchformer.py``,
``motionformer.py``, ``video_model_builder.py``, ``vit_helper.py``, ``ast.py``, ``hf_src/modeling_ast.py``,
``transformer.py``), MIT License, Copyright (c) 2024 Vladimir Iashin (notice below); its MotionFormer
files carry "Copyright (c) Facebook, Inc." and "Copyright 2020 Ross Wightman", its AST is modified from
HuggingFace transformers' (Apache-2.0). Trimmed to the released configuration (``Synchformer()``: the
``divided_224_16x4.yaml`` MotionFormer, the AST with ``max_spec_t=66``, a 3-layer sync transformer with 21
offset classes), without dropout, drop path, token masking, training heads or downloads, and without einops,
timm or omegaconf. Module names are upstream's, so :meth:`Synchformer.state_dict` at :data:`PUBLISHED` has
exactly the keys and shapes of av-benchmark's ``Synchformer()`` (513 tensors, 237,460,245 values; listed in
``configs/synchformer_keys.json``) and the released ``synchformer_state_dict.pth`` loads with every key.

* Video (:class:`MotionFormer`): a segment of 16 frames (3, 16, 224, 224) -> Conv3d tubelets (2, 16, 16)
  -> 8 x 14 x 14 tokens + CLS, spatial + temporal position embeddings, 12 divided space-time blocks (time
  attention, then space attention, then MLP; the CLS token attends to every token), LayerNorm, then per
  frame a CLS-pooling ``nn.TransformerEncoderLayer`` over the 14 x 14 tokens: (8, 768) per segment.
* Audio (:class:`AST`): a log-mel segment (66 frames, 128 bins) -> the AST's 16 x 16 patches at stride 10
  (12 x 6) + CLS + distillation tokens, 12 pre-norm layers, LayerNorm, then per time step a CLS-pooling
  encoder layer over the 12 frequency tokens: (6, 768) per segment.
* Sync head (:class:`GlobalTransformer`): ``vproj`` / ``aproj``, then [OFF, 14 x 8 video, MOD, 14 x 6 audio]
  tokens + a learned position embedding (198 positions), 3 minGPT blocks, LayerNorm, and ``off_head`` on the
  OFF token: 21 logits over the offsets :func:`offset_grid` (-2 to 2 s in 0.2 s steps).

``SynchformerConfig`` holds the widths, depths and patch counts, so a tiny network with the same code can
be built for tests (:data:`TINY`).

MIT License notice of the ported code::

    Copyright (c) 2024 Vladimir Iashin

    Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
    associated documentation files (the "Software"), to deal in the Software without restriction, including
    without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
    following conditions:

    The above copyright notice and this permission notice shall be included in all copies or substantial
    portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
    LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
    EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
    IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
    USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class SynchformerConfig:
    """Widths, depths and patch counts. Video: ``video_dim`` / ``video_depth`` / ``video_heads``,
    ``image_size`` pixels in ``patch_size`` patches, ``frames`` per segment in tubelets of ``tubelet``
    frames. Audio: ``audio_dim`` / ``audio_depth`` / ``audio_heads``, a ``mel_bins`` x ``spec_frames``
    log-mel in ``audio_patch`` patches at stride ``audio_stride``. Head: ``head_dim`` / ``head_depth`` /
    ``head_heads`` over ``segments`` segments, ``offset_classes`` logits. MLPs are ``mlp_ratio`` wide."""

    video_dim: int = 768
    video_depth: int = 12
    video_heads: int = 12
    image_size: int = 224
    patch_size: int = 16
    frames: int = 16
    tubelet: int = 2
    audio_dim: int = 768
    audio_depth: int = 12
    audio_heads: int = 12
    mel_bins: int = 128
    spec_frames: int = 66
    audio_patch: int = 16
    audio_stride: int = 10
    head_dim: int = 768
    head_depth: int = 3
    head_heads: int = 8
    segments: int = 14
    offset_classes: int = 21
    mlp_ratio: int = 4

    @property
    def video_grid(self) -> tuple[int, int]:
        """(temporal tokens, spatial tokens) of one video segment: (8, 196) published."""
        return self.frames // self.tubelet, (self.image_size // self.patch_size) ** 2

    @property
    def audio_grid(self) -> tuple[int, int]:
        """(frequency tokens, time tokens) of one audio segment: (12, 6) published."""
        return ((self.mel_bins - self.audio_patch) // self.audio_stride + 1,
                (self.spec_frames - self.audio_patch) // self.audio_stride + 1)

    @property
    def head_tokens(self) -> int:
        """OFF + video tokens + MOD + audio tokens of one window: 198 published."""
        return 2 + self.segments * (self.video_grid[0] + self.audio_grid[1])


#: The released model (av-benchmark's ``Synchformer()``, ``synchformer_state_dict.pth``).
PUBLISHED = SynchformerConfig()
#: The same code at width 32, two blocks per tower, 32 x 32 frames: for tests (random weights).
TINY = SynchformerConfig(video_dim=32, video_depth=2, video_heads=2, image_size=32, audio_dim=32, audio_depth=2,
                         audio_heads=2, head_dim=32, head_depth=2, head_heads=2)


def offset_grid(classes: int = 21, max_seconds: float = 2.0) -> Tensor:
    """The offset (s) of each class, float32 (classes,): ``make_class_grid(-2, 2, 21)``, numpy's linspace."""
    return torch.from_numpy(np.linspace(-max_seconds, max_seconds, classes)).float()


class ClsPoolLayer(nn.TransformerEncoderLayer):
    """A pre-norm ``nn.TransformerEncoderLayer`` (GELU, eps 1e-6) over [CLS, tokens] that returns the CLS
    output: (N, L, D) -> (N, D). Upstream's ``BaseEncoderLayer`` without masks and position embeddings."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__(d_model=dim, nhead=heads, dim_feedforward=hidden, dropout=0.0, activation=nn.GELU(),
                         layer_norm_eps=1e-6, batch_first=True, norm_first=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return super().forward(x)[:, 0]


# ------------------------------------------------------------------------------------------ video: MotionFormer


class DividedAttention(nn.Module):
    """MotionFormer's divided attention over [CLS, frames x patches] tokens (B, 1 + F * N, D): the CLS
    query attends to every token; each patch token attends, with the CLS key, to the tokens of its own
    frame (``space``) or to its own patch position in every frame (``time``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, frames: int, over: str) -> Tensor:
        b, t, d = x.shape
        h, dh = self.heads, d // self.heads
        q, k, v = (y.reshape(b, t, h, dh).transpose(1, 2).reshape(b * h, t, dh) for y in self.qkv(x).chunk(3, -1))
        q = q * self.scale
        cls_out = (q[:, :1] @ k.transpose(1, 2)).softmax(-1) @ v
        n = (t - 1) // frames
        space = over == "space"

        def split(y: Tensor) -> Tensor:  # (bh, F * N, dh) -> space: (bh * F, N, dh); time: (bh * N, F, dh)
            y = y.reshape(b * h, frames, n, dh)
            return (y if space else y.transpose(1, 2)).reshape(-1, n if space else frames, dh)

        groups = frames if space else n
        qs = split(q[:, 1:])
        ks = torch.cat((k[:, :1].repeat_interleave(groups, 0), split(k[:, 1:])), dim=1)
        vs = torch.cat((v[:, :1].repeat_interleave(groups, 0), split(v[:, 1:])), dim=1)
        out = (qs @ ks.transpose(1, 2)).softmax(-1) @ vs
        out = out.reshape(b * h, frames, n, dh) if space else out.reshape(b * h, n, frames, dh).transpose(1, 2)
        out = torch.cat((cls_out, out.reshape(b * h, frames * n, dh)), dim=1)
        return self.proj(out.reshape(b, h, t, dh).transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DividedSpaceTimeBlock(nn.Module):
    """x + time attention(norm3 x), then + space attention(norm1 x), then + MLP(norm2 x); LayerNorm eps 1e-6."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DividedAttention(dim, heads)
        self.timeattn = DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        x = x + self.timeattn(self.norm3(x), frames, "time")
        x = x + self.attn(self.norm1(x), frames, "space")
        return x + self.mlp(self.norm2(x))


class MotionFormer(nn.Module):
    """Segments (N, 3, frames, size, size), normalised to [-1, 1] -> per-frame-pair features (N, frames //
    tubelet, video_dim)."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        d = cfg.video_dim
        t, n = cfg.video_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d))
        self.temp_embed = nn.Parameter(torch.zeros(1, t, d))
        for p in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(p, std=0.02)
        # MotionFormer's 2-D patching: unused with tubelets, but part of the released state dict
        self.patch_embed = nn.ModuleDict({"proj": nn.Conv2d(3, d, cfg.patch_size, cfg.patch_size)})
        tubelet = (cfg.tubelet, cfg.patch_size, cfg.patch_size)
        self.patch_embed_3d = nn.ModuleDict({"proj": nn.Conv3d(3, d, tubelet, tubelet)})
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(d, cfg.video_heads, cfg.mlp_ratio)
                                    for _ in range(cfg.video_depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.spatial_attn_agg = ClsPoolLayer(d, cfg.video_heads, d * cfg.mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed_3d["proj"](x)  # (N, D, t, h, w)
        n, d, t, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (N, t * h * w, D), time-major
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        patches = self.pos_embed[:, 1:].repeat(1, t, 1) + self.temp_embed.repeat_interleave(h * w, 1)
        x = x + torch.cat((self.pos_embed[:, :1], patches), dim=1)
        for block in self.blocks:
            x = block(x, t)
        x = self.norm(x[:, 1:])  # (N, t * h * w, D)
        x = self.spatial_attn_agg(x.reshape(n * t, h * w, d))  # one CLS-pooled row per frame pair
        return x.reshape(n, t, d)


# ------------------------------------------------------------------------------------------ audio: AST


class Dense(nn.Module):
    """A Linear under transformers' ``.dense`` name."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.dense = nn.Linear(inputs, outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(x)


class ASTSelfAttention(nn.Module):
    """transformers' (ViT) self-attention: softmax(q k^T / sqrt(d)) v, no mask."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = (m(x).reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for m in (self.query, self.key, self.value))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)


class ASTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = ASTSelfAttention(dim, heads)
        self.output = Dense(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.attention(x))


class ASTLayer(nn.Module):
    """x + attention(layernorm_before x), then + output(GELU(intermediate(layernorm_after x))); eps 1e-12."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.attention = ASTAttention(dim, heads)
        self.intermediate = Dense(dim, hidden)
        self.output = Dense(hidden, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output(nn.functional.gelu(self.intermediate(self.layernorm_after(x))))


class ASTEmbeddings(nn.Module):
    """Log-mel (N, frames, bins) -> [CLS, distillation, f x t patches] + position embeddings."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        d = cfg.audio_dim
        f, t = cfg.audio_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, f * t + 2, d))
        for p in (self.cls_token, self.distillation_token, self.position_embeddings):
            nn.init.trunc_normal_(p, std=0.02)
        self.patch_embeddings = nn.ModuleDict(
            {"projection": nn.Conv2d(1, d, cfg.audio_patch, stride=cfg.audio_stride)})

    def forward(self, x: Tensor) -> Tensor:
        patches = self.patch_embeddings["projection"](x.unsqueeze(1).transpose(2, 3))  # (N, D, f, t)
        patches = patches.flatten(2).transpose(1, 2)  # (N, f * t, D), frequency-major
        n = x.shape[0]
        tokens = (self.cls_token.expand(n, -1, -1), self.distillation_token.expand(n, -1, -1), patches)
        return torch.cat(tokens, dim=1) + self.position_embeddings


class ASTModel(nn.Module):
    """The AST backbone: log-mel (N, frames, bins) -> last hidden state (N, 2 + f * t, D) after LayerNorm."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        d = cfg.audio_dim
        self.embeddings = ASTEmbeddings(cfg)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(
            ASTLayer(d, cfg.audio_heads, d * cfg.mlp_ratio) for _ in range(cfg.audio_depth))})
        self.layernorm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embeddings(x)
        for layer in self.encoder["layer"]:
            x = layer(x)
        return self.layernorm(x)


class AST(nn.Module):
    """Log-mel segments (N, frames, bins) -> per-time-step features (N, t, audio_dim)."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        self.grid = cfg.audio_grid
        self.ast = ASTModel(cfg)
        self.freq_attn_agg = ClsPoolLayer(cfg.audio_dim, cfg.audio_heads, cfg.audio_dim * cfg.mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        f, t = self.grid
        x = self.ast(x)[:, 2:]  # (N, f * t, D) without CLS and distillation tokens
        n, _, d = x.shape
        x = x.reshape(n, f, t, d).transpose(1, 2).reshape(n * t, f, d)
        return self.freq_attn_agg(x).reshape(n, t, d)  # one CLS-pooled row per time step


# ------------------------------------------------------------------------------------------ the sync head


class SelfAttention(nn.Module):
    """minGPT's attention: softmax(q k^T / sqrt(d)) v, no mask, then ``proj``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.key, self.query, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        k, q, v = (m(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for m in (self.key, self.query, self.value))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        return self.proj((att.softmax(-1) @ v).transpose(1, 2).contiguous().view(b, t, d))


class HeadBlock(nn.Module):
    """x + attn(ln1 x), then + mlp(ln2 x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class LearnedPositions(nn.Module):
    """Upstream's ``RandInitPositionalEncoding``: x + pos_emb (1, L, D)."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(1, length, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pos_emb


class GlobalTransformer(nn.Module):
    """[OFF, video tokens, MOD, audio tokens] -> (the OFF token after ``ln_f`` (B, D), offset logits (B, classes))."""

    def __init__(self, cfg: SynchformerConfig):
        super().__init__()
        d = cfg.head_dim
        self.vis_in_lnorm, self.aud_in_lnorm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.OFF_tok = nn.Parameter(torch.randn(1, 1, d))
        self.MOD_tok = nn.Parameter(torch.randn(1, 1, d))
        self.pos_emb_cfg = LearnedPositions(cfg.head_tokens, d)
        self.blocks = nn.Sequential(*(HeadBlock(d, cfg.head_heads, cfg.mlp_ratio) for _ in range(cfg.head_depth)))
        self.ln_f = nn.LayerNorm(d)
        self.off_head = nn.Linear(d, cfg.offset_classes)

    def forward(self, v: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        b = v.shape[0]
        x = torch.cat((self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(v),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(a)), dim=1)
        token = self.ln_f(self.blocks(self.pos_emb_cfg(x)))[:, 0]
        return token, self.off_head(token)


class Synchformer(nn.Module):
    """The released Synchformer's modules (``vfeat_extractor``, ``afeat_extractor``, ``vproj``, ``aproj``,
    ``transformer``), with av-benchmark's three entry points."""

    def __init__(self, cfg: SynchformerConfig = PUBLISHED):
        super().__init__()
        self.cfg = cfg
        self.vfeat_extractor = MotionFormer(cfg)
        self.afeat_extractor = AST(cfg)
        self.vproj = nn.Linear(cfg.video_dim, cfg.head_dim)
        self.aproj = nn.Linear(cfg.audio_dim, cfg.head_dim)
        self.transformer = GlobalTransformer(cfg)

    def extract_vfeats(self, vis: Tensor) -> Tensor:
        """(B, S, frames, 3, H, W) in [-1, 1] -> (B, S, frames // tubelet, video_dim)."""
        b, s = vis.shape[:2]
        return self.vfeat_extractor(vis.flatten(0, 1).transpose(1, 2)).unflatten(0, (b, s))

    def extract_afeats(self, aud: Tensor) -> Tensor:
        """Normalised log-mel (B, S, 1, bins, frames) -> (B, S, t, audio_dim)."""
        b, s = aud.shape[:2]
        return self.afeat_extractor(aud.flatten(0, 2).transpose(1, 2)).unflatten(0, (b, s))

    def compare_v_a(self, vis: Tensor, aud: Tensor) -> tuple[Tensor, Tensor]:
        """Features of one window, video (B, segments, tv, Dv) and audio (B, segments, ta, Da) ->
        (the OFF token (B, head_dim), offset logits (B, offset_classes))."""
        v, a = self.vproj(vis), self.aproj(aud)
        return self.transformer(v.flatten(1, 2), a.flatten(1, 2))
