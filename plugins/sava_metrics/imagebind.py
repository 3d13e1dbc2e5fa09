"""ImageBind (Girdhar et al., CVPR 2023) towers for AVHScore, with JavisBench's input preparation.

The towers are :mod:`sava_imagebind.model`'s re-implementation of ImageBind-Huge, loading the
official ``imagebind_huge.pth`` key for key (CC-BY-NC 4.0: non-commercial use only).
``preset: published`` reads ``checkpoint`` after its sha256 is checked; ``preset: tiny`` builds the
same classes with width 32, two blocks, 16-d embeddings and random weights.

Input preparation as JavisBench's ``AVScoreDataset`` (``eval/javisbench/src/dataset.py``) feeds
``imagebind_huge``:

* vision: every frame; short side to ``size`` (bicubic with antialias; JavisBench uses PIL's
  bicubic resize on uint8 frames), centre crop, CLIP mean/std -> one unit-norm embedding per frame.
* audio: mono (channel mean; JavisBench's kaldi fbank reads the first channel of a stereo file),
  16 kHz, ImageBind's ``load_and_transform_audio_data``: three 2 s clips starting at
  k * max(D - 2, 0) / 3 s (pytorchvideo's ``ConstantClipsPerVideoSampler``), each clip's mean removed
  in place (as upstream, so overlapping clips see earlier clips' mean removal), 128-bin kaldi fbank
  (25 / 10 ms, Hanning, htk_compat, no dither) padded or cropped to 204 frames, (x + 4.268) / 9.138;
  the three unit-norm clip embeddings are averaged (upstream averages them after its logit scale,
  which a cosine does not see).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from sava_core.clips import ClipRequest, MediaItem
from sava_core.contracts import Features
from sava_imagebind.model import (
    AUDIO,
    CLIPS_PER_AUDIO,
    FBANK_BINS,
    FBANK_FRAMES,
    FBANK_MEAN,
    FBANK_STD,
    LICENSE,
    PUBLISHED,
    SAMPLE_RATE,
    TINY,
    VISION,
    ImageBindTowers,
    audio_clips,
    load_towers,
    normalize_frames,
    resize_center_crop,
)
from sava_metrics.common import (
    RESAMPLER,
    MediaExtractor,
    build_model,
    mono_at,
    requested_frames,
    verify_checkpoint,
)
from sava_metrics.params import ImageBindParams

FRAMES_PER_PASS = 32


class ImageBind(MediaExtractor):
    """vision: frames (B, F, 3, size, size) in [0, 1] -> (B * F, 1024); audio: (B, C, S) at 16 kHz ->
    (B, 1024), the mean of three clip embeddings. Unit-norm rows (the audio mean is not renormalised)."""

    Params = ImageBindParams
    name: ClassVar[str] = "imagebind"

    def __init__(self, params: ImageBindParams):
        super().__init__()
        self.params = params
        self.modality = "video" if params.tower == "vision" else "audio"
        self.rows = "frame" if params.tower == "vision" else "clip"
        self.sample_rate = SAMPLE_RATE
        self.checkpoint_sha256: str | None = None
        part = VISION if params.tower == "vision" else AUDIO
        if params.preset == "tiny":
            self.towers = build_model("tiny", params.seed, lambda: ImageBindTowers(TINY, (part,)))
        else:
            path, self.checkpoint_sha256 = verify_checkpoint(self.name, params.checkpoint, params.sha256, PUBLISHED)
            towers = load_towers(str(path), None, (part,), "extractor imagebind: checkpoint")
            self.towers = build_model("published", 0, lambda: towers)

    def reads(self) -> ClipRequest:
        if self.params.tower != "vision":
            return super().reads()
        return ClipRequest(video=True, audio=False, frame_transform=self.transform_frames,
                           by=f"extractor {self.name} (vision)")

    def transform_frames(self, frames: Tensor) -> Tensor:
        """(F, 3, H, W) in [0, 1] -> (F, 3, size, size): short side bicubic (antialias), centre crop."""
        return resize_center_crop(frames, self.params.size)

    def prepare(self, item: MediaItem) -> Tensor:
        if self.params.tower == "vision":
            return requested_frames(item, self.reads(), self.name)
        return mono_at(item, SAMPLE_RATE, self.name)[None]

    def extract(self, batch: Tensor) -> Features:
        if self.params.tower == "vision":
            frames = normalize_frames(batch.float().flatten(0, 1))
            return Features(torch.cat([self.towers.embed(VISION, frames[i:i + FRAMES_PER_PASS])
                                       for i in range(0, len(frames), FRAMES_PER_PASS)]))
        fbanks = torch.cat([audio_clips(a) for a in batch.float().mean(1)])  # (B * 3, 1, 128, 204)
        return Features(self.towers.embed(AUDIO, fbanks).reshape(batch.shape[0], CLIPS_PER_AUDIO, -1).mean(1))

    def protocol(self) -> dict[str, Any]:
        common = self.base_protocol(self.params.checkpoint, self.checkpoint_sha256, tower=self.params.tower,
                                    architecture="ImageBind-Huge towers (sava_imagebind)" if self.params.preset
                                    == "published" else "ImageBind towers, tiny widths", license=LICENSE)
        if self.params.tower == "vision":
            return {**common, "frames": "all", "resize": f"short side {self.params.size} bicubic (antialias), "
                    f"centre crop {self.params.size}", "normalisation": "CLIP mean/std",
                    "embedding": "head output L2-normalised, one per frame"}
        return {**common, "sample_rate": SAMPLE_RATE, "channels": "mono (mean of channels)", "resampler": RESAMPLER,
                "clips": f"{CLIPS_PER_AUDIO} x 2 s at k * max(D - 2, 0) / {CLIPS_PER_AUDIO} s "
                         "(ConstantClipsPerVideoSampler), mean removed in place as upstream; unit-norm clip "
                         "embeddings averaged",
                "frontend": f"kaldi fbank {FBANK_BINS} bins, 25/10 ms Hanning, htk_compat, {FBANK_FRAMES} frames, "
                            f"(x - {FBANK_MEAN}) / {FBANK_STD}"}
