"""av-benchmark's IB-score (hkchengrex/av-benchmark): per clip, the cosine of ImageBind's video and audio
embeddings, averaged over clips, reported as the raw cosine (``evaluate.py``: ``IB-Score`` is
``torch.cosine_similarity(video, audio, dim=-1).mean().item()``; its README: "sometimes scaled by 100").

Video (``extract_video.py``, ``av_bench/data/video_dataset.py``), reproduced here:

* frames at 0.5 fps as FFmpeg's ``fps=0.5`` filter gives them (what torio's ``StreamingMediaDecoder``
  applies): output frame k shows the last source frame with round(t / 2) <= k, i.e. t < 2k + 1 s
  (the last frame before 1, 3, 5, 7 s), and a clip of n frames at r fps yields round(n / r / 2) frames
  (halves up). The first int(0.5 * duration_seconds) are kept; fewer is refused (av-benchmark raises
  "IB video too short" and drops the clip).
* torchvision ``v2.Resize(224, bicubic)`` of the uint8 frames (short side 224, long side floored,
  antialias), /255, CLIP mean/std; ImageBind's ``SpatialCrop(224, 3)``: left / centre / right crops.
* every pair of consecutive frames of every crop is one (3, 2, 224, 224) clip: (T - 1) x 3 = 9 clips
  for 8 s; ImageBind embeds each (Conv3d (2, 14, 14): one temporal patch) and averages the 9
  unit-norm embeddings (its ``reduce_list``).

Audio: the ``imagebind`` extractor's audio tower unchanged (ImageBind's ``load_and_transform_audio_data``
on the whole track, as av-benchmark's ``ImageBindAudioDataset``; see :mod:`sava_metrics.imagebind`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from pydantic import ValidationError
from torch import Tensor
from torchvision.transforms import InterpolationMode

from sava_core.clips import ClipRequest, MediaItem
from sava_core.contracts import Features
from sava_core.errors import SavaError
from sava_core.metrics import cosine_mean
from sava_core.registry import Registries
from sava_imagebind.model import LICENSE, VISION, frame_pair_clips, normalize_frames, spatial_crops
from sava_metrics.imagebind import ImageBind
from sava_metrics.metrics import CosineMetric
from sava_metrics.params import IBScoreParams, ImageBindParams

IB_FPS = 0.5
CROPS = 3


def ffmpeg_fps_frames(n: int, source_fps: float, fps: float = IB_FPS) -> list[int]:
    """The source frames FFmpeg's ``fps`` filter (round=near, eof_action=round) outputs for a clip of ``n``
    frames at ``source_fps`` starting at 0: output k shows the last frame with round(t * fps) <= k (halves
    up), and round(n / source_fps * fps) frames come out."""
    count = math.floor(n / source_fps * fps + 0.5 + 1e-9)
    return [min(math.ceil((k + 0.5) / fps * source_fps - 1e-9) - 1, n - 1) for k in range(count)]


def resize_short_side(frames: Tensor, size: int) -> Tensor:
    """av-benchmark's ``v2.Resize(size, bicubic)`` on uint8 frames: (F, 3, H, W) in [0, 1] (uint8 / 255) ->
    short side ``size``, long side int(size * long / short), antialiased, rounded to uint8, / 255."""
    u8 = (frames * 255).round().clamp(0, 255).to(torch.uint8)
    return TF.resize(u8, [size], interpolation=InterpolationMode.BICUBIC, antialias=True).float().div_(255)


class ImageBindVideo(ImageBind):
    """ImageBind's vision tower on av-benchmark's video input: one (1, 1024) row per clip, the mean of
    the unit-norm embeddings of (frames - 1) x 3 two-frame crop clips."""

    rows = "clip"

    def __init__(self, params: ImageBindParams, duration_seconds: float):
        super().__init__(params)
        self.duration_seconds = duration_seconds
        self.frames = int(IB_FPS * duration_seconds)
        if self.frames < 2:
            raise SavaError(f"metric ib_score: duration_seconds={duration_seconds} gives {self.frames} frame(s) at "
                            f"{IB_FPS} fps; ImageBind's two-frame clips need at least 2 (duration_seconds >= 4)")

    def reads(self) -> ClipRequest:
        # every frame, resized as decoded: which ones FFmpeg's fps filter keeps depends on the clip's length
        return ClipRequest(video=True, audio=False, frame_transform=self.transform_frames,
                           by="metric ib_score (ImageBind vision, av-benchmark frames)")

    def transform_frames(self, frames: Tensor) -> Tensor:
        return resize_short_side(frames, self.params.size)

    def prepare(self, item: MediaItem) -> Tensor:
        if item.video is None or item.fps is None:
            raise SavaError(f"metric ib_score: clip {item.id} ({item.source or 'in memory'}) has no video")
        video = self.transform_frames(item.video.float()) if item.request is None else item.video.float()
        picked = ffmpeg_fps_frames(video.shape[0], item.fps)
        if len(picked) < self.frames:
            raise SavaError(
                f"metric ib_score: clip {item.id} ({item.source or 'in memory'}) is too short: {video.shape[0]} "
                f"frames at {item.fps:g} fps give {len(picked)} frame(s) at {IB_FPS} fps, and duration_seconds="
                f"{self.duration_seconds:g} needs {self.frames} (av-benchmark drops such clips with 'IB video too "
                "short'). Give longer clips or lower duration_seconds.")
        frames = normalize_frames(video[picked[:self.frames]])  # (T, 3, h, w)
        return frame_pair_clips(spatial_crops(frames, self.params.size))  # (9, 3, 2, size, size)

    def extract(self, batch: Tensor) -> Features:
        return Features(self.towers.embed_views(VISION, batch.float()))

    def protocol(self) -> dict[str, Any]:
        common = self.base_protocol(self.params.checkpoint, self.checkpoint_sha256, tower="vision",
                                    architecture="ImageBind-Huge towers (sava_imagebind)" if self.params.preset
                                    == "published" else "ImageBind towers, tiny widths", license=LICENSE)
        s = self.params.size
        return {**common, "rows": "clip", "protocol": "av-benchmark extract_video.py",
                "duration_seconds": self.duration_seconds, "fps": IB_FPS, "frames": self.frames,
                "frame_times": "FFmpeg fps=0.5 filter: last source frame before 1, 3, 5, ... s; clips yielding "
                               "fewer frames are refused",
                "resize": f"torchvision v2.Resize({s}, bicubic, antialias) of uint8 frames (short side {s})",
                "normalisation": "CLIP mean/std",
                "crops": f"{CROPS} x {s} (ImageBind SpatialCrop: left/top, centre (ceil), right/bottom)",
                "clips": f"{self.frames - 1} x 2 consecutive frames per crop = {(self.frames - 1) * CROPS} views",
                "embedding": "mean of the views' unit-norm embeddings (ImageBind reduce over S)"}


class IBScore(CosineMetric):
    """av-benchmark's IB-score: mean over clips of cos(ImageBind video embedding, ImageBind audio embedding)."""

    Params = IBScoreParams
    name = "ib_score"
    towers = ("vision", "audio")
    definition = ("av-benchmark IB-Score: mean over clips of cos(ImageBind video embedding (0.5 fps, 3 crops, "
                  "two-frame clips, averaged), ImageBind audio embedding (3 x 2 s clips, averaged)), times scale")

    def __init__(self, params: IBScoreParams, *, registries: Registries):
        self.params, self.registries = params, registries
        if params.extractor != "imagebind":
            raise SavaError(f"metric {self.name}: extractor must be 'imagebind', not {params.extractor!r}")
        try:
            vision_params = ImageBindParams.model_validate({**params.extractor_params, "tower": "vision"})
        except ValidationError as err:
            raise SavaError(f"metric {self.name}: bad extractor_params for extractor 'imagebind':\n{err}") from None
        self.extractor = ImageBindVideo(vision_params, params.duration_seconds).eval()
        self.partner = self.build_extractor(tower="audio")
        self.needs = frozenset({"video", "audio"})

    def clip_score(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return cosine_mean(a, b)
