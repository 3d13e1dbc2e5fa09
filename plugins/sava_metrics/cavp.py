"""Diff-Foley's CAVP (Luo et al., NeurIPS 2023) for CAVP similarity.

Architecture and state-dict keys follow Diff-Foley's ``CAVP_Inference`` (``inference/model/
cavp_model.py`` with ``cavp_modules.py``; config ``Stage1_CAVP.yaml``: ``Slowonly_pool`` +
``cnn14_pool``, ``embed_dim`` 512), which loads the published ``cavp_epoch66.ckpt``:

* ``video_encoder``: mmaction2's SlowOnly ResNet3d-50 (``ResNet3dSlowOnly(depth=50)``: stem
  ConvModule (1, 7, 7) stride (1, 2, 2) + max pool (1, 3, 3) stride (1, 2, 2); Bottleneck3d stages
  of 3, 4, 6, 3 blocks, spatial strides 1, 2, 2, 2, no temporal striding, ``3x1x1`` inflation in
  the last two stages only; mmcv ``ConvModule`` = ``conv`` + ``bn`` (BatchNorm3d) + ReLU), then the
  mean over height and width: frames (B, T, 3, 224, 224) in [0, 1] (no normalisation) -> (B, T, 2048).
  mmcv itself is not needed: the few modules used are re-implemented with the same names.
* ``video_project_head``: Linear 2048 -> 512, per time step.
* ``spec_encoder``: Diff-Foley's Cnn14 variant: BatchNorm2d over the 128 mel bins (``bn``), six
  PANNs conv blocks (average pools 2x2 four times, then 1x2, then none), mean over frequency,
  max_pool1d(3, 1, 1) + avg_pool1d(3, 1, 1) over time, ReLU(fc1) applied twice (as upstream), then
  ``final_project`` 2048 -> 512: mel (B, 128, T) -> (B, T // 16, 512).
* ``logit_scale``: kept for loading; unused.

Per-step embeddings are L2-normalised (``encode_video``/``encode_spec`` with ``normalize=True,
pool=False``, as the JavisBench / SVG CAVP score calls them).

Input preparation (as Diff-Foley's demo and JavisBench's ``calc_cavp_score``):

* video: frames at 4 fps (nearest earlier frame; upstream re-encodes with ffmpeg's ``fps`` filter),
  each resized to 224 x 224 (bilinear with antialias, as PIL's ``Resize``; no crop), values in
  [0, 1]; run through the 3-D network in chunks of ``chunk_frames`` consecutive frames (JavisBench:
  40, so clips up to 10 s are one chunk; the temporal convolutions zero-pad at chunk borders).
* audio: 16 kHz mono, the last sample dropped (Diff-Foley's ``get_spectrogram`` keeps
  ``length - 1`` samples so 1 s gives 64 frames), |STFT| with n_fft 1024, hop 250, periodic Hann,
  centred with reflect padding, 128 Slaney mel bins 125-7600 Hz (librosa's ``filters.mel``), then
  SpecVQGAN's transforms: (20 log10(max(x, 1e-5)) - 20 + 100) / 100 clipped to [0, 1]. 16 mel frames
  make one step, so audio and video both give 4 steps per second.

The hop: Diff-Foley's public ``data_preprocess/wav2spec.py`` shows hop 256, under which 10 s give
625 frames and 39 steps, not the 40 video steps the CAVP score pairs; hop 250 gives 640 frames and
40 steps (its comment "ensure: 640 spec"), and is what this protocol uses.

``preset: tiny`` builds the same classes with one block per stage, widths 4-32 and 16-d embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from sava_core.clips import ClipRequest, MediaItem
from sava_core.contracts import Features
from sava_core.errors import SavaError
from sava_metrics.common import (
    RESAMPLER,
    MediaExtractor,
    build_model,
    fit_length,
    load_state_dict_file,
    mono_at,
    requested_frames,
    verify_checkpoint,
)
from sava_metrics.panns import ConvBlock
from sava_metrics.params import CAVPParams

SAMPLE_RATE, N_FFT, HOP, N_MELS, F_MIN, F_MAX = 16000, 1024, 250, 128, 125.0, 7600.0
FPS = 4.0  # CAVP steps per second: video frames, and 16 mel frames of hop 250 at 16 kHz
PUBLISHED = "Diff-Foley CAVP (cavp_epoch66.ckpt, huggingface.co/SimianLuo/Diff-Foley, diff_foley_ckpt/)"


@dataclass(frozen=True)
class CAVPConfig:
    """Widths and depths: ``base_channels`` and ``stage_blocks`` of the SlowOnly ResNet3d,
    ``spec_widths`` of the six Cnn14 conv blocks (the last is also fc1's width), ``embed_dim``."""

    base_channels: int = 64
    stage_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    spec_widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    embed_dim: int = 512


PUBLISHED_CONFIG = CAVPConfig()
TINY_CONFIG = CAVPConfig(base_channels=4, stage_blocks=(1, 1, 1, 1), spec_widths=(4, 8, 8, 8, 16, 16), embed_dim=16)


# ------------------------------------------------------------------------------------------ video: SlowOnly R3D-50


class ConvModule(nn.Module):
    """mmcv's ConvModule for 3-D: bias-free ``conv``, ``bn`` (BatchNorm3d), then ReLU when ``act``."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] | int, stride: tuple[int, int, int] | int = 1,
                 padding: tuple[int, int, int] | int = 0, act: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act else x


class Bottleneck3d(nn.Module):
    """mmaction's Bottleneck3d, ``pytorch`` style (stride in conv2), ``3x1x1`` inflation when ``inflate``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int, inflate: bool, downsample: nn.Module | None):
        super().__init__()
        kernel1, pad1 = ((3, 1, 1), (1, 0, 0)) if inflate else ((1, 1, 1), (0, 0, 0))
        self.conv1 = ConvModule(inplanes, planes, kernel1, padding=pad1)
        self.conv2 = ConvModule(planes, planes, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                                padding=(0, 1, 1))
        self.conv3 = ConvModule(planes, planes * self.expansion, 1, act=False)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet3dSlowOnly(nn.Module):
    """Video (B, 3, T, H, W) -> features (B, 8 * 4 * base, T, 1, 1) (mean over the final H x W)."""

    def __init__(self, base_channels: int = 64, stage_blocks: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        self.conv1 = ConvModule(3, base_channels, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3))
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        inplanes = base_channels
        for i, (blocks, stride, inflate) in enumerate(zip(stage_blocks, (1, 2, 2, 2), (False, False, True, True))):
            planes = base_channels * 2**i
            downsample = None
            if stride != 1 or inplanes != planes * Bottleneck3d.expansion:
                downsample = ConvModule(inplanes, planes * Bottleneck3d.expansion, 1, stride=(1, stride, stride),
                                        act=False)
            layers = [Bottleneck3d(inplanes, planes, stride, inflate, downsample)]
            inplanes = planes * Bottleneck3d.expansion
            layers += [Bottleneck3d(inplanes, planes, 1, inflate, None) for _ in range(1, blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.feat_dim = inplanes

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((-2, -1), keepdim=True)  # upstream's AdaptiveAvgPool2d((1, 1)) on a 5-D tensor


# ------------------------------------------------------------------------------------------ audio: Cnn14 variant


class Cnn14(nn.Module):
    """Diff-Foley's spectrogram encoder: (B, 1, T, 128) -> per-step features (B, T // 16, embed_dim)."""

    POOLS = ((2, 2), (2, 2), (2, 2), (2, 2), (1, 2), (1, 1))

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048), embed_dim: int = 512):
        super().__init__()
        self.bn = nn.BatchNorm2d(N_MELS)
        for i, (cin, cout) in enumerate(zip((1, *widths[:-1]), widths)):
            self.add_module(f"conv_block{i + 1}", ConvBlock(cin, cout))
        self.fc1 = nn.Linear(widths[-1], widths[-1])
        self.final_project = nn.Linear(widths[-1], embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(x.transpose(1, 3)).transpose(1, 3)
        for i, pool in enumerate(self.POOLS):
            x = getattr(self, f"conv_block{i + 1}")(x, pool)
        x = x.mean(3)  # (B, C, T')
        x = (F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)).transpose(1, 2)
        return self.final_project(F.relu(self.fc1(F.relu(self.fc1(x)))))  # fc1 twice, as upstream


class CAVPNet(nn.Module):
    """CAVP_Inference's modules: per-step video and spectrogram embeddings, unit norm."""

    def __init__(self, config: CAVPConfig = PUBLISHED_CONFIG):
        super().__init__()
        self.video_encoder = ResNet3dSlowOnly(config.base_channels, config.stage_blocks)
        self.video_project_head = nn.Linear(self.video_encoder.feat_dim, config.embed_dim)
        self.spec_encoder = Cnn14(config.spec_widths, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_video(self, frames: Tensor) -> Tensor:
        """Frames (B, T, 3, H, W) in [0, 1] -> (B, T, embed_dim)."""
        feat = self.video_encoder(frames.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2)
        return F.normalize(self.video_project_head(feat), dim=-1)

    def encode_spec(self, spec: Tensor) -> Tensor:
        """Scaled mel (B, 128, T) -> (B, T // 16, embed_dim)."""
        return F.normalize(self.spec_encoder(spec[:, None].transpose(2, 3)), dim=-1)


def load_cavp(path: Any, net: CAVPNet) -> int:
    """Load a CAVP checkpoint (``{"state_dict": ...}`` or a bare state dict, ``module.`` prefixes
    removed) into ``net``; every key and shape of ``net`` must be in it. Returns the number of
    checkpoint keys ignored (Diff-Foley loads with ``strict=False`` too)."""
    state = {k.replace("module.", ""): v for k, v in load_state_dict_file(path).items()}
    own = net.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or shapes:
        raise SavaError(f"extractor cavp: checkpoint {path} does not fit the architecture of {PUBLISHED}: missing "
                        f"{missing[:5]}{'...' if len(missing) > 5 else ''}, shape mismatches {shapes[:5]}")
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return len(set(state) - set(own))


# ------------------------------------------------------------------------------------------ the extractor


class CAVP(MediaExtractor):
    """video: frames (B, T, 3, size, size) in [0, 1] at 4 fps -> (B * T, D); audio: (B, C, S) at
    16 kHz -> (B * T', D) with T' = (1 + (S - 2) // 250) // 16 (4 per second). Unit norm."""

    Params = CAVPParams
    name: ClassVar[str] = "cavp"
    rows: ClassVar[str] = "step"

    def __init__(self, params: CAVPParams):
        super().__init__()
        self.params = params
        self.modality = params.tower
        self.fps = FPS
        self.sample_rate = SAMPLE_RATE
        self.checkpoint_sha256: str | None = None
        self.ignored_keys = 0
        self.mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, f_min=F_MIN,
                                                        f_max=F_MAX, n_mels=N_MELS, power=1.0, norm="slaney",
                                                        mel_scale="slaney")
        if params.preset == "tiny":
            self.net = build_model("tiny", params.seed, lambda: CAVPNet(TINY_CONFIG))
        else:
            path, self.checkpoint_sha256 = verify_checkpoint(self.name, params.checkpoint, params.sha256, PUBLISHED)
            self.net = build_model("published", 0, lambda: CAVPNet(PUBLISHED_CONFIG))
            self.ignored_keys = load_cavp(path, self.net)

    def reads(self) -> ClipRequest:
        p = self.params
        if p.tower != "video":
            return super().reads()
        return ClipRequest(video=True, audio=False, fps=FPS,
                           frames=None if p.clip_seconds is None else round(p.clip_seconds * FPS),
                           frame_transform=self.transform_frames, by=f"extractor {self.name} (video)")

    def transform_frames(self, frames: Tensor) -> Tensor:
        """(F, 3, H, W) in [0, 1] -> (F, 3, size, size): bilinear with antialias, no crop, clamped to [0, 1]."""
        size = self.params.size
        return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True).clamp(0, 1)

    def prepare(self, item: MediaItem) -> Tensor:
        p = self.params
        if p.tower == "video":
            return requested_frames(item, self.reads(), self.name)
        audio = mono_at(item, SAMPLE_RATE, self.name)
        if p.clip_seconds is not None:
            audio = fit_length(audio, round(p.clip_seconds * SAMPLE_RATE))
        return audio[None]

    def extract(self, batch: Tensor) -> Features:
        if self.params.tower == "video":
            n = self.params.chunk_frames
            emb = torch.cat([self.net.encode_video(batch[:, i:i + n].float()) for i in range(0, batch.shape[1], n)], 1)
            return Features(emb.reshape(-1, emb.shape[-1]))
        mel = self.mel(batch.float().mean(1)[:, :-1])  # (B, 128, T)
        if mel.shape[-1] < 16:
            raise SavaError(f"extractor cavp: clips of {batch.shape[-1] / SAMPLE_RATE:.3f} s are too short for one "
                            "CAVP step (0.25 s, 16 mel frames); use longer clips")
        spec = ((20 * torch.log10(mel.clamp(min=1e-5)) - 20 + 100) / 100).clamp(0, 1)
        emb = self.net.encode_spec(spec)
        return Features(emb.reshape(-1, emb.shape[-1]))

    def protocol(self) -> dict[str, Any]:
        p = self.params
        common = self.base_protocol(p.checkpoint, self.checkpoint_sha256, tower=p.tower, steps_per_second=FPS,
                                    clip_seconds=p.clip_seconds, ignored_checkpoint_keys=self.ignored_keys,
                                    embedding=f"{self.net.video_project_head.out_features}-d per step, L2-normalised")
        if p.tower == "video":
            return {**common, "fps": FPS, "frame_sampling": "nearest earlier frame", "chunk_frames": p.chunk_frames,
                    "resize": f"bilinear with antialias {p.size}x{p.size}, no crop", "normalisation": "none ([0, 1])"}
        return {**common, "sample_rate": SAMPLE_RATE, "channels": "mono (mean of channels)", "resampler": RESAMPLER,
                "frontend": f"last sample dropped; mel |STFT| n_fft {N_FFT}, hop {HOP}, periodic Hann, centred "
                            f"(reflect), {N_MELS} Slaney mel {F_MIN:g}-{F_MAX:g} Hz, "
                            "(20 log10(max(x, 1e-5)) + 80) / 100 clipped to [0, 1]; 16 frames per step"}
