"""Diff-Foley's CAVP (Luo et al., NeurIPS 2023) for CAVP similarity: a STAND-IN so far.

What is real here is the input preparation of Diff-Foley's CAVP: video resampled to 4 fps and
resized bilinearly to 224 x 224; audio resampled to 16 kHz mono, a magnitude mel spectrogram
(n_fft 1024, hop 250, 128 Slaney mel bins 125-7600 Hz, centred) put through SpecVQGAN's transforms
(max(x, 1e-5), 20 log10, -20, +100, / 100, clip to [0, 1]). One embedding per video frame (step).

What is missing: the CAVP video encoder (a 3-D ResNet over frames), the audio encoder (PANNs-style
CNN over the mel spectrogram), their projection heads and the loading of Diff-Foley's
``cavp_epoch66.ckpt``. Only ``preset: tiny`` exists: random
:class:`~sava_metrics.standin.TinyTower` s, the audio one pooled to the video's step count. The
published preset raises :class:`SavaError`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torchaudio
from torch import Tensor

from sava_core.contracts import Features
from sava_core.errors import SavaError
from sava_core.evaluation import MediaItem
from sava_metrics.common import RESAMPLER, MediaExtractor, build_model, fit_length, frames_of, mono_at, resize_frames
from sava_metrics.params import CAVPParams
from sava_metrics.standin import TinyTower

SAMPLE_RATE, N_FFT, HOP, N_MELS, F_MIN, F_MAX = 16000, 1024, 250, 128, 125.0, 7600.0


class CAVP(MediaExtractor):
    """video: frames (B, T, 3, size, size) in [0, 1] at ``fps`` -> (B * T, D); audio: (B, C, S) at
    16 kHz -> (B * T, D) with T = floor(S / 16000 * fps). Unit norm. Tiny stand-in only."""

    Params = CAVPParams
    name: ClassVar[str] = "cavp"
    rows: ClassVar[str] = "step"

    def __init__(self, params: CAVPParams):
        super().__init__()
        if params.preset != "tiny":
            raise SavaError("extractor cavp: Diff-Foley's CAVP encoders (cavp_epoch66.ckpt) are not implemented in "
                            "sava_metrics yet, so CAVP similarity cannot be computed with real weights; only "
                            "preset=tiny (a random stand-in for tests) exists. See docs/metrics.md.")
        self.params = params
        self.modality = params.tower
        self.fps = params.fps
        self.sample_rate = SAMPLE_RATE
        self.mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, f_min=F_MIN,
                                                        f_max=F_MAX, n_mels=N_MELS, power=1.0, norm="slaney",
                                                        mel_scale="slaney")
        self.net = build_model("tiny", params.seed, lambda: TinyTower(3 if params.tower == "video" else 1))

    def prepare(self, item: MediaItem) -> Tensor:
        p = self.params
        if p.tower == "video":
            frames = None if p.clip_seconds is None else round(p.clip_seconds * p.fps)
            return resize_frames(frames_of(item, self.name, fps=p.fps, frames=frames), p.size, "bilinear")
        audio = mono_at(item, SAMPLE_RATE, self.name)
        if p.clip_seconds is not None:
            audio = fit_length(audio, round(p.clip_seconds * SAMPLE_RATE))
        return audio[None]

    def extract(self, batch: Tensor) -> Features:
        if self.params.tower == "video":
            b, t = batch.shape[:2]
            return Features(self.net(batch.float().reshape(b * t, *batch.shape[2:])))
        steps = int(batch.shape[-1] / SAMPLE_RATE * self.params.fps + 1e-6)
        if steps < 1:
            raise ValueError(f"CAVP audio needs at least one step (1 / fps s), got {batch.shape[-1]} samples")
        spec = ((20 * torch.log10(self.mel(batch.float().mean(1)).clamp(min=1e-5)) - 20 + 100) / 100).clamp(0, 1)
        emb = self.net.steps(spec[:, None], steps)  # (B, T, D)
        return Features(emb.reshape(-1, emb.shape[-1]))

    def protocol(self) -> dict[str, Any]:
        p = self.params
        common = self.base_protocol(None, None, tower=p.tower, standin="random TinyTower, not CAVP",
                                    steps_per_second=p.fps, clip_seconds=p.clip_seconds)
        if p.tower == "video":
            return {**common, "fps": p.fps, "frame_sampling": "nearest earlier frame",
                    "resize": f"bilinear {p.size}x{p.size}, no crop"}
        return {**common, "sample_rate": SAMPLE_RATE, "channels": "mono (mean of channels)", "resampler": RESAMPLER,
                "frontend": f"mel |STFT| n_fft {N_FFT}, hop {HOP}, {N_MELS} Slaney mel {F_MIN:g}-{F_MAX:g} Hz, "
                            "(20 log10(max(x, 1e-5)) + 80) / 100 clipped to [0, 1]"}
