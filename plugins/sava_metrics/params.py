"""Parameters of the evaluation extractors and metrics (torch-free, so listing stays light).

Every extractor has ``preset``: ``published`` loads the published network from the local file in
``checkpoint`` (verified by ``sha256``; nothing is ever downloaded), ``tiny`` builds a scaled-down
network of the same architecture with random weights under ``seed`` (for tests: its numbers mean
nothing and its protocol says so). Protocol facts: ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from sava_core.config import StrictModel, normalise_sha256

Preset = Literal["published", "tiny"]


class ExtractorParams(StrictModel):
    """What every extractor shares: which weights, verified how."""

    preset: Preset = Field("published", description="published: local checkpoint; tiny: random weights (tests only)")
    checkpoint: str | None = Field(None, description="local path of the published weights (never downloaded)")
    sha256: str | None = Field(
        None, description="expected sha256 of the checkpoint (hex); required unless a published hash is known"
    )
    seed: int = Field(0, description="seed of the tiny preset's random weights")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        return normalise_sha256(value)


class VGGishParams(ExtractorParams):
    """VGGish (Hershey et al. 2017, torchvggish port): 16 kHz mono, 0.96 s windows of 96x64 log-mel,
    one 128-d embedding per window, without PCA and without the final ReLU (as fadtk)."""

    clip_seconds: float | None = Field(
        None, gt=0, description="crop (from the start) or zero-pad each clip; None: as is")


class PANNsParams(ExtractorParams):
    """PANNs Cnn14 16 kHz (Kong et al. 2020): window 512, hop 160, 64 mel bins 50-8000 Hz;
    2048-d clip embedding and 527 AudioSet logits (before the sigmoid)."""

    clip_seconds: float | None = Field(
        None, gt=0, description="crop (from the start) or zero-pad each clip; None: as is")


class CLAPParams(ExtractorParams):
    """CLAP (LAION, transformers ``ClapModel``): ``checkpoint`` is a local model directory (as saved by
    ``save_pretrained``: config, weights, preprocessor and tokenizer files)."""

    tower: Literal["audio", "text"] = Field("audio", description="which embedding this extractor returns")


class I3DParams(ExtractorParams):
    """Inception-I3D (Kinetics-400) for FVD: ``frames`` frames ``frame_stride`` apart from the first,
    bilinear resize to ``size`` x ``size`` (no crop), scaled to [-1, 1]; 400 logits averaged over time."""

    frames: int = Field(16, ge=1, description="frames per clip (the FVD protocol: 16)")
    frame_stride: int = Field(1, ge=1, description="take every k-th frame of the clip")
    fps: float | None = Field(None, gt=0, description="resample frames to this rate first; None: the clip's own rate")
    size: int = Field(224, ge=8, description="square resize in pixels (224 for the published protocol)")
    preprocessing: Literal["stylegan-v", "javisbench"] = Field(
        "stylegan-v", description="stylegan-v: the first `frames` frames, bilinear square resize, [-1, 1]; "
        "javisbench: `frames` frames spread evenly over the clip, letterboxed, JavisBench's [0, 1] input")


class ImageBindParams(ExtractorParams):
    """ImageBind-Huge towers (Girdhar et al. 2023; CC-BY-NC 4.0) as JavisBench's AVHScore uses them:
    ``checkpoint`` is the local ``imagebind_huge.pth``. See :mod:`sava_metrics.imagebind`."""

    tower: Literal["vision", "audio"] = Field(
        "vision", description="vision: one row per frame; audio: one row per clip")
    size: int = Field(224, ge=8, description="vision: resize the short side (bicubic) and centre-crop to this")


class CAVPParams(ExtractorParams):
    """Diff-Foley's CAVP (Luo et al. 2023) as CAVP similarity uses it: ``checkpoint`` is the local
    ``cavp_epoch66.ckpt``; 4 embedding steps per second. See :mod:`sava_metrics.cavp`."""

    tower: Literal["video", "audio"] = Field("video", description="which per-step embedding this extractor returns")
    clip_seconds: float | None = Field(None, gt=0, description="crop (from the start) or pad each clip; None: as is")
    size: int = Field(224, ge=8, description="bilinear square resize in pixels")
    chunk_frames: int = Field(40, ge=1, description="video: frames per pass of the 3-D network (JavisBench: 40)")


class PaSSTParams(ExtractorParams):
    """PaSST-S (Koutini et al. 2022) through the optional hear21passt package: 32 kHz mono, 10 s,
    768-d embedding and 527 AudioSet logits. ``checkpoint``: the local passt-s-f128-p16-s10-ap.476-swa.pt."""

    clip_seconds: float | None = Field(None, gt=0, le=10, description="crop (from the start) or zero-pad each clip to "
                                       "this first (av-benchmark: 8); every clip is then zero-padded or cropped to "
                                       "the model's 10 s window")


# ------------------------------------------------------------------------------------------ metrics


class MetricParams(StrictModel):
    """Which extractor a metric uses and with which parameters; features are computed in batches."""

    extractor: str = Field(description="registered extractor name")
    extractor_params: dict[str, Any] = Field(default_factory=dict, description="that extractor's parameters")
    batch_size: int = Field(8, ge=1, description="clips per extractor call")


class FrechetParams(MetricParams):
    """Fréchet distance between Gaussians fitted to generated and reference embeddings."""

    infinity: bool = Field(False, description="also report FAD-infinity (needs reference clips, not saved statistics)")
    infinity_points: int = Field(25, ge=2, description="FAD-infinity: number of subset sizes n")
    infinity_min: int | None = Field(None, ge=2, description="FAD-infinity: smallest n (default min(500, N // 2))")


class FVDParams(FrechetParams):
    extractor: str = "i3d"


class FADParams(FrechetParams):
    extractor: str = "vggish"


class FDParams(FrechetParams):
    extractor: str = "panns_cnn14"


class KLParams(MetricParams):
    """KL(reference || generated) of paired clips' classifier distributions (av-benchmark)."""

    extractor: str = "panns_cnn14"


class ISCParams(MetricParams):
    """Inception Score of the generated clips' classifier logits."""

    extractor: str = "panns_cnn14"
    splits: int = Field(10, ge=1, description="number of splits (torch-fidelity: 10)")
    seed: int = Field(0, description="seed of the shuffle before splitting")


class CosineParams(MetricParams):
    """Mean cosine similarity of two towers' embeddings, times ``scale``."""

    scale: float = Field(1.0, gt=0, description="multiply the mean cosine by this (some papers report x100)")


class CLAPScoreParams(CosineParams):
    """Cosine of each clip's CLAP audio embedding with its caption's CLAP text embedding."""

    extractor: str = "clap"


class AVHScoreParams(CosineParams):
    """JavisBench AVHScore: per clip, mean over frames of cos(ImageBind frame, ImageBind audio)."""

    extractor: str = "imagebind"


class CAVPSimParams(CosineParams):
    """Per clip, mean over time steps of cos(CAVP video step, CAVP audio step); mean over clips."""

    extractor: str = "cavp"


class IBScoreParams(CosineParams):
    """av-benchmark's IB-score: per clip, cos(ImageBind video embedding, ImageBind audio embedding), mean
    over clips; raw cosine (scale 1), as av-benchmark's evaluate.py reports it. See sava_metrics.ib_score."""

    extractor: str = "imagebind"
    duration_seconds: float = Field(8.0, gt=0, description="video read: int(0.5 * duration) frames at 0.5 fps "
                                    "(av-benchmark's duration_sec / --audio_length); shorter clips are refused")


class AVAlignParams(StrictModel):
    """AV-Align as one of two reference implementations computes it (sava_metrics.avalign)."""

    implementation: Literal["tempotokens", "javisbench"] = Field(
        "tempotokens", description="tempotokens: AV-Align's authors' (22,050 Hz, peaks >= 0.1 px, each peak matched "
        "once); javisbench: JavisBench's (the file's rate, every local maximum, a peak may match several onsets)")


class SynchformerParams(ExtractorParams):
    """Synchformer (Iashin et al. 2024) as av-benchmark runs it for DeSync: ``checkpoint`` is the local
    ``synchformer_state_dict.pth`` (a plain state dict). See sava_metrics.synchformer and sava_metrics.desync."""


class DeSyncParams(MetricParams):
    """av-benchmark's DeSync: per clip, |offset| (s) of Synchformer's argmax offset class on the first and the
    last 14 segments (4.8 s each), averaged; mean over clips; lower is better. See sava_metrics.desync."""

    extractor: str = "synchformer"
    duration_seconds: float = Field(8.0, ge=4.8, description="the first duration_seconds of each clip are read: "
                                    "25 fps video and 16 kHz audio (av-benchmark's --audio_length); shorter clips "
                                    "are left out (too few frames) or refused (too little audio)")
    batch_size: int = Field(2, ge=1, description="clips per extractor call (each holds 25 x duration_seconds "
                                                 "frames of 3 x 224 x 224 floats: 120 MB for 8 s)")
