"""ImageBind (Girdhar et al., CVPR 2023) towers for AVHScore (JavisBench): a STAND-IN so far.

What is real here is the input preparation of JavisBench's AVHScore: vision takes every frame,
resizes its short side to 224 (bicubic, antialiased), centre-crops 224 x 224 and applies the CLIP
normalisation; audio is resampled to 16 kHz mono, three 2 s clips are taken at evenly spaced starts
(ImageBind's ``ConstantClipsPerVideoSampler``), each becomes a 128-bin kaldi fbank (25 ms / 10 ms,
Hanning, htk_compat, no dither, after removing the clip's mean) padded or cropped to 204 frames and
normalised with mean -4.268 and std 9.138; the three clip embeddings are averaged.

What is missing: the ImageBind-Huge towers (ViT-H/14 vision, ViT-B audio with 16x16 patches at
stride 10, their heads and post-processors) and the loading of ``imagebind_huge.pth``. Only
``preset: tiny`` exists: a random :class:`~sava_metrics.standin.TinyTower` per modality. The
published preset raises :class:`SavaError`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor

from sava_core.contracts import Features
from sava_core.errors import SavaError
from sava_core.evaluation import MediaItem
from sava_metrics.common import RESAMPLER, MediaExtractor, build_model, fit_length, frames_of, mono_at, resize_frames
from sava_metrics.params import ImageBindParams
from sava_metrics.standin import TinyTower

SAMPLE_RATE, CLIPS, CLIP_SECONDS, FBANK_BINS, FBANK_FRAMES = 16000, 3, 2.0, 128, 204
FBANK_MEAN, FBANK_STD = -4.268, 9.138
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


def audio_clips_fbank(audio: Tensor) -> Tensor:
    """Mono 16 kHz audio (S,) -> normalised fbanks (3, 1, 128, 204) of three evenly spaced 2 s clips."""
    n = round(CLIP_SECONDS * SAMPLE_RATE)
    audio = fit_length(audio, max(n, audio.shape[0]))
    starts = torch.linspace(0, audio.shape[0] - n, CLIPS).round().long().tolist()
    out = []
    for s in starts:
        clip = audio[s:s + n]
        fb = kaldi.fbank((clip - clip.mean())[None], htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
                         window_type="hanning", num_mel_bins=FBANK_BINS, dither=0.0, frame_length=25, frame_shift=10)
        out.append((fit_length(fb.T, FBANK_FRAMES) - FBANK_MEAN) / FBANK_STD)
    return torch.stack(out)[:, None]


class ImageBind(MediaExtractor):
    """vision: frames (B, F, 3, size, size) in [0, 1] -> (B * F, D); audio: (B, C, S) at 16 kHz -> (B, D).
    Unit-norm embeddings. Tiny stand-in only (see the module docstring)."""

    Params = ImageBindParams
    name: ClassVar[str] = "imagebind"

    def __init__(self, params: ImageBindParams):
        super().__init__()
        if params.preset != "tiny":
            raise SavaError("extractor imagebind: the published ImageBind-Huge towers (imagebind_huge.pth) are not "
                            "implemented in sava_metrics yet, so AVHScore cannot be computed with real weights; "
                            "only preset=tiny (a random stand-in for tests) exists. See docs/metrics.md.")
        self.params = params
        self.modality = "video" if params.tower == "vision" else "audio"
        self.rows = "frame" if params.tower == "vision" else "clip"
        self.sample_rate = SAMPLE_RATE
        self.net = build_model("tiny", params.seed, lambda: TinyTower(3 if params.tower == "vision" else 1))

    def prepare(self, item: MediaItem) -> Tensor:
        if self.params.tower == "vision":
            return resize_frames(frames_of(item, self.name), self.params.size, "bicubic-short-side+center-crop")
        return mono_at(item, SAMPLE_RATE, self.name)[None]

    def extract(self, batch: Tensor) -> Features:
        if self.params.tower == "vision":
            b, f = batch.shape[:2]
            x = (batch.float().reshape(b * f, *batch.shape[2:]) - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]
            return Features(self.net(x))
        fbanks = torch.stack([audio_clips_fbank(a) for a in batch.float().mean(1)])  # (B, 3, 1, 128, 204)
        emb = self.net(fbanks.flatten(0, 1)).reshape(batch.shape[0], CLIPS, -1)
        return Features(emb.mean(1))

    def protocol(self) -> dict[str, Any]:
        common = self.base_protocol(None, None, tower=self.params.tower, standin="random TinyTower, not ImageBind")
        if self.params.tower == "vision":
            return {**common, "frames": "all", "resize": f"short side {self.params.size} bicubic (antialias), "
                    f"centre crop {self.params.size}", "normalisation": "CLIP mean/std"}
        return {**common, "sample_rate": SAMPLE_RATE, "channels": "mono (mean of channels)", "resampler": RESAMPLER,
                "clips": f"{CLIPS} x {CLIP_SECONDS} s, evenly spaced starts, embeddings averaged",
                "frontend": f"kaldi fbank {FBANK_BINS} bins, 25/10 ms, {FBANK_FRAMES} frames, "
                            f"(x - {FBANK_MEAN}) / {FBANK_STD}"}
