"""ImageBind-Huge's vision and audio towers (Girdhar et al., CVPR 2023), re-implemented to load the
official ``imagebind_huge.pth`` exactly.

Licence: ImageBind's code and weights are CC-BY-NC 4.0 (non-commercial use only). This module
re-implements the architecture of ``facebookresearch/ImageBind`` (``imagebind/models/
imagebind_model.py``, ``multimodal_preprocessors.py``, ``transformer.py``, ``helpers.py``) for the
two modalities SAVA uses; the weights you load stay under CC-BY-NC 4.0.

Module names and parameter shapes follow upstream, so ``modality_preprocessors.{vision,audio}``,
``modality_trunks.{vision,audio}``, ``modality_heads.{vision,audio}`` and
``modality_postprocessors.audio`` of the official state dict load one to one (text, depth, thermal
and IMU keys of the file are skipped):

* vision: frames (N, 3, 224, 224), CLIP-normalised -> repeated to 2 frames (``PadIm2Video``) ->
  Conv3d (2, 14, 14) stride (2, 14, 14), no bias -> 256 patches + CLS, learned positions ->
  LayerNorm(eps 1e-6) -> 32 pre-norm blocks of width 1280 (16 heads, ``nn.MultiheadAttention``,
  MLP 5120 with exact GELU) -> LayerNorm -> CLS -> Linear 1280 -> 1024 (no bias) -> L2 normalise.
* audio: a 2 s clip as a kaldi fbank (N, 1, 128, 204) -> Conv2d 16x16 stride 10, no bias -> 12 x 19
  patches -> LayerNorm -> + CLS, learned positions -> 12 blocks of width 768 (12 heads, key/value
  bias tokens) -> LayerNorm -> CLS -> Linear 768 -> 1024 -> L2 normalise -> x 20 (a fixed logit
  scale, ``modality_postprocessors.audio.1.log_logit_scale``).

:data:`HUGE` is the published configuration; :data:`TINY` builds the same classes small for tests.
Input preparation (CLIP normalisation, kaldi fbank, ImageBind's clip sampler) lives here too, so
every user of the towers prepares inputs the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor, nn

from sava_core.errors import SavaError
from sava_core.io import file_sha256

VISION, AUDIO = "vision", "audio"
LICENSE = "CC-BY-NC 4.0 (ImageBind code and weights: non-commercial use only)"
PUBLISHED = "ImageBind-Huge (imagebind_huge.pth, dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth)"

#: ImageBind's image normalisation (OpenAI CLIP's mean and std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: ImageBind's audio front end (``imagebind/data.py``): 16 kHz, 2 s clips, 128-bin fbank, 204 frames.
SAMPLE_RATE, CLIP_SECONDS, FBANK_BINS, FBANK_FRAMES = 16000, 2, 128, 204
FBANK_MEAN, FBANK_STD = -4.268, 9.138
#: Clips per audio file in ImageBind's ``load_and_transform_audio_data`` (embeddings averaged).
CLIPS_PER_AUDIO = 3


@dataclass(frozen=True)
class ImageBindConfig:
    """Sizes of the two towers (upstream ``imagebind_huge`` arguments for :data:`HUGE`)."""

    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_kernel: tuple[int, int, int]
    image_size: int
    audio_width: int
    audio_layers: int
    audio_heads: int
    audio_kernel: int
    audio_stride: int
    out_dim: int


HUGE = ImageBindConfig(vision_width=1280, vision_layers=32, vision_heads=16, vision_kernel=(2, 14, 14), image_size=224,
                       audio_width=768, audio_layers=12, audio_heads=12, audio_kernel=16, audio_stride=10, out_dim=1024)
TINY = ImageBindConfig(vision_width=32, vision_layers=2, vision_heads=2, vision_kernel=(2, 14, 14), image_size=56,
                       audio_width=32, audio_layers=2, audio_heads=2, audio_kernel=16, audio_stride=10, out_dim=16)


# ------------------------------------------------------------------------------------------ preprocessors


class PadIm2Video(nn.Module):
    """Images (N, C, H, W) -> videos (N, C, T, H, W) of ``frames`` repeated frames."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: Tensor) -> Tensor:
        x = x.unsqueeze(2) if x.ndim == 4 else x
        return x.repeat(1, 1, self.frames, 1, 1) if x.shape[2] == 1 else x


class PatchEmbedGeneric(nn.Module):
    """``proj`` (one layer, or a Sequential of several) then optional ``norm_layer``:
    (N, C, *grid) -> tokens (N, L, D)."""

    def __init__(self, proj_stem: list[nn.Module], norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = nn.Sequential(*proj_stem) if len(proj_stem) > 1 else proj_stem[0]
        self.norm_layer = norm_layer

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return x if self.norm_layer is None else self.norm_layer(x)


class SpatioTemporalPosEmbeddingHelper(nn.Module):
    """Learned positions (1, ``num_tokens``, D): the CLS token's, then one per patch."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, dim) * dim**-0.5)


class RGBDTPreprocessor(nn.Module):
    """Patch stem + CLS token + learned positions: input -> tokens (N, 1 + L, D).

    When the input gives a different number of patches than the positions were learned for, the
    patch positions are resized bicubically by ``sqrt(L / L0)`` as upstream does (square grids only).
    """

    def __init__(self, stem: PatchEmbedGeneric, layout: tuple[int, ...], dim: int):
        super().__init__()
        self.rgbt_stem = stem
        self.layout = layout
        self.pos_embedding_helper = SpatioTemporalPosEmbeddingHelper(1 + math.prod(layout), dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)

    def positions(self, patches: int) -> Tensor:
        pos = self.pos_embedding_helper.pos_embed
        learned = pos.shape[1] - 1
        if patches == learned:
            return pos
        side, new_side = math.isqrt(learned), math.isqrt(patches)
        if self.layout[-1] != self.layout[-2] or new_side * new_side != patches:
            raise ValueError(f"ImageBind resizes positions only between square patch grids ({self.layout} -> "
                             f"{patches} patches); give square inputs")
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, scale_factor=math.sqrt(patches / learned), mode="bicubic")
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, patches, -1).to(pos.dtype)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.rgbt_stem(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.positions(tokens.shape[1] - 1)


# ------------------------------------------------------------------------------------------ trunks


class SeqFirst(nn.Module):
    """(N, L, D) <-> (L, N, D), the layout ``nn.MultiheadAttention`` takes by default."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(0, 1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class BlockWithMasking(nn.Module):
    """Pre-norm transformer block on (L, N, D): x + attn(norm_1(x)), then x + mlp(norm_2(x))."""

    def __init__(self, dim: int, heads: int, bias_kv: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class SimpleTransformer(nn.Module):
    """Tokens (N, L, D) -> (N, L, D): optional LayerNorm, ``blocks``, batch-first again."""

    def __init__(self, dim: int, layers: int, heads: int, *, pre_norm: bool, bias_kv: bool):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_norm else nn.Identity(),
                                                   SeqFirst())
        self.blocks = nn.Sequential(*[BlockWithMasking(dim, heads, bias_kv) for _ in range(layers)])
        self.post_transformer_layer = SeqFirst()

    def forward(self, tokens: Tensor) -> Tensor:
        return self.post_transformer_layer(self.blocks(self.pre_transformer_layer(tokens)))


# ------------------------------------------------------------------------------------------ heads


class SelectElement(nn.Module):
    """(N, L, D) -> the token at ``index``: (N, D)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.index]


class Normalize(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)


class LearnableLogitScaling(nn.Module):
    """x * min(exp(log_logit_scale), 100); the audio tower's scale is a fixed buffer (log 20)."""

    def __init__(self, init: float):
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(init)))

    def forward(self, x: Tensor) -> Tensor:
        return self.log_logit_scale.exp().clamp(max=100) * x


def _head(width: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width, eps=1e-6), SelectElement(0), nn.Linear(width, out_dim, bias=False))


class ImageBindTowers(nn.Module):
    """The ImageBind vision and/or audio towers with upstream module names.

    ``embed(modality, x)``: vision frames (N, 3, S, S) CLIP-normalised, or audio fbanks (N, 1, 128, 204)
    -> unit-norm embeddings (N, out_dim). ``forward(modality, x)`` is upstream's output (the audio one
    multiplied by its logit scale 20).
    """

    def __init__(self, config: ImageBindConfig, modalities: tuple[str, ...] = (VISION, AUDIO)):
        super().__init__()
        self.config = config
        c = config
        pre, trunks, heads, post = {}, {}, {}, {}
        if VISION in modalities:
            conv = nn.Conv3d(3, c.vision_width, c.vision_kernel, stride=c.vision_kernel, bias=False)
            stem = PatchEmbedGeneric([PadIm2Video(c.vision_kernel[0]), conv])
            grid = c.image_size // c.vision_kernel[1]
            pre[VISION] = RGBDTPreprocessor(stem, (1, grid, grid), c.vision_width)
            trunks[VISION] = SimpleTransformer(c.vision_width, c.vision_layers, c.vision_heads, pre_norm=True,
                                               bias_kv=False)
            heads[VISION] = _head(c.vision_width, c.out_dim)
            post[VISION] = Normalize()
        if AUDIO in modalities:
            stem = PatchEmbedGeneric([nn.Conv2d(1, c.audio_width, c.audio_kernel, stride=c.audio_stride, bias=False)],
                                     nn.LayerNorm(c.audio_width))
            layout = tuple((n - c.audio_kernel) // c.audio_stride + 1 for n in (FBANK_BINS, FBANK_FRAMES))
            pre[AUDIO] = RGBDTPreprocessor(stem, layout, c.audio_width)
            trunks[AUDIO] = SimpleTransformer(c.audio_width, c.audio_layers, c.audio_heads, pre_norm=False,
                                              bias_kv=True)
            heads[AUDIO] = _head(c.audio_width, c.out_dim)
            post[AUDIO] = nn.Sequential(Normalize(), LearnableLogitScaling(20.0))
        self.modality_preprocessors = nn.ModuleDict(pre)
        self.modality_trunks = nn.ModuleDict(trunks)
        self.modality_heads = nn.ModuleDict(heads)
        self.modality_postprocessors = nn.ModuleDict(post)

    def head_output(self, modality: str, x: Tensor) -> Tensor:
        """Preprocessor, trunk and head: (N, out_dim), not normalised."""
        tokens = self.modality_trunks[modality](self.modality_preprocessors[modality](x))
        return self.modality_heads[modality](tokens)

    def embed(self, modality: str, x: Tensor) -> Tensor:
        """Unit-norm embeddings (N, out_dim): the head output, L2-normalised."""
        return F.normalize(self.head_output(modality, x), dim=-1)

    def forward(self, modality: str, x: Tensor) -> Tensor:
        return self.modality_postprocessors[modality](self.head_output(modality, x))

    def embed_views(self, modality: str, x: Tensor, chunk: int = 32) -> Tensor:
        """Upstream's ``reduce_list`` for inputs of several views per item: (B, S, *input) -> (B, out_dim),
        the mean over the S views (clips, crops) of their unit-norm embeddings (not renormalised; upstream
        averages after the postprocessor, whose logit scale a cosine does not see). A vision view may be a
        clip (3, T, H, W): ``PadIm2Video`` repeats only single frames, so T = 2 gives one temporal patch."""
        b, s = x.shape[:2]
        flat = x.reshape(b * s, *x.shape[2:])
        rows = torch.cat([self.embed(modality, flat[i:i + chunk]) for i in range(0, len(flat), chunk)])
        return rows.reshape(b, s, -1).mean(1)


# ------------------------------------------------------------------------------------------ weights


def load_towers(path: str | None, sha256: str | None, modalities: tuple[str, ...], setting: str) -> ImageBindTowers:
    """:data:`HUGE` towers with the ``modalities`` tensors of a local ``imagebind_huge.pth``.

    The file is read with ``torch.load(weights_only=True)`` (memory-mapped when it is a zip
    checkpoint), checked against ``sha256`` when given, and every key and shape of the towers must be
    present in it. ``setting`` names the parameter in error messages.
    """
    if not path:
        raise SavaError(f"{setting}: no checkpoint given; set it to the local file of {PUBLISHED}. "
                        "Nothing is downloaded; preset: tiny builds random weights for tests.")
    file = Path(path).expanduser()
    if not file.is_file():
        raise SavaError(f"{setting}: checkpoint {file} not found; point it at the local file of {PUBLISHED}")
    if sha256 is not None and (digest := file_sha256(file)) != sha256:
        raise SavaError(f"{setting}: {file} has sha256 {digest}, but sha256 expects {sha256}; it is not the expected "
                        f"file ({PUBLISHED}). Point the checkpoint at the right file or fix the sha256 setting.")
    state = _read_state(file, setting)
    foreign = sorted(k for k in state if not k.startswith("modality_"))
    if foreign:
        raise SavaError(f"{setting}: {file} is not an ImageBind checkpoint (keys such as {foreign[:3]}); "
                        f"point it at {PUBLISHED}")
    with torch.device("meta"):
        towers = ImageBindTowers(HUGE, modalities)
    own = towers.state_dict()
    prefixes = tuple(f"modality_{part}.{m}." for part in ("preprocessors", "trunks", "heads", "postprocessors")
                     for m in modalities)
    mine = {k: v for k, v in state.items() if k.startswith(prefixes)}
    missing = sorted(set(own) - set(mine))
    unexpected = sorted(set(mine) - set(own))
    shapes = [f"{k} {tuple(mine[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in mine and mine[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise SavaError(f"{setting}: {file} does not fit ImageBind-Huge's {'/'.join(modalities)} towers: missing "
                        f"{missing[:4]}, unexpected {unexpected[:4]}, shape mismatches {shapes[:4]}; point it at "
                        f"{PUBLISHED}")
    towers.load_state_dict(mine, assign=True)
    return towers


def _read_state(file: Path, setting: str) -> dict[str, Tensor]:
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # files in the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types; all mean the same here
        raise SavaError(f"{setting}: {file} cannot be read as a plain state dict with torch.load(weights_only=True): "
                        f"{type(err).__name__}: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SavaError(f"{setting}: {file} is not a state dict of tensors; point it at {PUBLISHED}")
    return state


# ------------------------------------------------------------------------------------------ inputs


def normalize_frames(frames: Tensor) -> Tensor:
    """Frames (..., 3, H, W) in [0, 1] -> CLIP-normalised (ImageBind's ``transforms.Normalize``)."""
    mean = torch.tensor(CLIP_MEAN, dtype=frames.dtype, device=frames.device)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=frames.dtype, device=frames.device)[:, None, None]
    return (frames - mean) / std


def resize_center_crop(frames: Tensor, size: int) -> Tensor:
    """Frames (N, 3, H, W) in [0, 1] -> (N, 3, size, size): short side to ``size`` (bicubic with
    antialias, as PIL's resize in ImageBind's ``transforms.Resize``), then the centre crop, clamped
    to [0, 1]."""
    h, w = frames.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    frames = F.interpolate(frames, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return frames[..., top:top + size, left:left + size].clamp(0, 1)


def clip_fbank(clip: Tensor) -> Tensor:
    """ImageBind's ``waveform2melspec`` + normalisation: mono 16 kHz (S,) -> (1, 128, 204).

    The clip's mean is removed, a 128-bin kaldi fbank is taken (25 ms Hanning windows every 10 ms,
    htk_compat, no dither, no energy), frames are zero-padded or cropped to 204, then
    (x - (-4.268)) / 9.138.
    """
    return _fbank(clip - clip.mean())


def _fbank(clip: Tensor) -> Tensor:
    """:func:`clip_fbank` of a clip whose mean is already removed."""
    fbank = kaldi.fbank(clip[None], htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
                        window_type="hanning", num_mel_bins=FBANK_BINS, dither=0.0, frame_length=25, frame_shift=10).T
    fbank = F.pad(fbank, (0, max(FBANK_FRAMES - fbank.shape[1], 0)))[:, :FBANK_FRAMES]
    return ((fbank - FBANK_MEAN) / FBANK_STD)[None]


def clip_starts(duration: Fraction, clips: int = CLIPS_PER_AUDIO) -> list[Fraction]:
    """Start times of pytorchvideo's ``ConstantClipsPerVideoSampler(2 s, clips)``: k * max(D - 2, 0) / clips."""
    return [Fraction(max(duration - CLIP_SECONDS, 0), clips) * k for k in range(clips)]


def audio_clips(audio: Tensor) -> Tensor:
    """ImageBind's ``load_and_transform_audio_data`` for mono 16 kHz audio (S,) -> fbanks (3, 1, 128, 204).

    Clip k spans samples [int(t_k * 16000), int(t_k * 16000) + 32000) (shorter at the end of a short
    file, then padded in the fbank). Upstream removes each clip's mean *in place* on a view of the
    waveform, so a later overlapping clip sees samples already shifted by the earlier clips' means;
    this is reproduced.
    """
    wave = audio.detach().clone()
    out = []
    for start in clip_starts(Fraction(wave.shape[0], SAMPLE_RATE)):
        a = int(start * SAMPLE_RATE)
        view = wave[a:a + CLIP_SECONDS * SAMPLE_RATE]
        view -= view.mean()
        out.append(_fbank(view))
    return torch.stack(out)


def spatial_crops(frames: Tensor, size: int) -> Tensor:
    """ImageBind's ``SpatialCrop(size, 3)`` (``uniform_crop``): (..., H, W) -> (3, ..., size, size), the
    left, centre and right squares along the long side (top, centre, bottom when H > W; three equal
    crops when H == W), the centre at offset ceil((L - size) / 2)."""
    h, w = frames.shape[-2:]
    y, x = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
    if h > w:
        boxes = [(0, x), (y, x), (h - size, x)]
    else:
        boxes = [(y, 0), (y, x), (y, w - size)]
    return torch.stack([frames[..., top:top + size, left:left + size] for top, left in boxes])


def frame_pair_clips(crops: Tensor) -> Tensor:
    """av-benchmark's ``encode_video_with_imagebind``: crops (K, T, 3, H, W) -> (T - 1) * K two-frame clips
    (3, 2, H, W), frames (i, i + 1) of every crop, ordered clip-major ((T - 1, K) flattened) as upstream."""
    k, t = crops.shape[:2]
    pairs = torch.stack([crops[:, i:i + 2] for i in range(t - 1)])  # (T - 1, K, 2, 3, H, W)
    return pairs.flatten(0, 1).transpose(1, 2)  # (N, 3, 2, H, W)
