"""av-benchmark's DeSync (hkchengrex/av-benchmark @ 050a5cd): how far apart Synchformer thinks a clip's audio
and video are, in seconds; lower is better.

Per clip, reproduced from av-benchmark (``av_bench/data/video_dataset.py``, ``audio_dataset.py``,
``extract.py``, ``extract_video.py``, ``evaluate.py``):

* video: the first int(25 x ``duration_seconds``) frames at 25 fps (200 for 8 s; av-benchmark's
  ``_SYNC_FPS = 25.0``, as MMAudio's); torchvision ``Resize(224, bicubic)`` of the uint8 frames (short side,
  antialiased), ``CenterCrop(224)``, /255, (x - 0.5) / 0.5; segments of 16 frames every 8 frames (24 for 8 s).
  A clip with fewer frames is left out and listed (the clip reader stops at those frames; av-benchmark
  drops it: "Sync video too short").
* audio: mono (channel mean), 16 kHz (:data:`~sava_metrics.common.RESAMPLER`, torchaudio's ``Resample``
  defaults as av-benchmark's), the first int(16000 x ``duration_seconds``) samples; segments of 10,240
  samples (0.64 s) every 5,120 (24 for 8 s); torchaudio ``MelSpectrogram(16000, n_fft=1024, win_length=400,
  hop_length=160, n_mels=128)``, log(x + 1e-6), zero-padded to 66 frames, (x + 4.2677393) / (2 x 4.5689974).
  Too little audio is an error naming the clip (av-benchmark drops it: "Audio ... is too short").
* Synchformer (:mod:`sava_metrics.synchformer`) embeds every segment once; its sync head then reads the first
  14 and the last 14 segments' features (two 4.8 s windows, overlapping for clips under 9.6 s) and gives 21
  logits per window; the offset is the class value (``make_class_grid(-2, 2, 21)``: -2 to 2 s in 0.2 s) of
  the argmax.

DeSync is the mean of |offset| over both windows of every clip (``evaluate.py`` appends both windows' values
and takes their mean). A positive offset means the audio leads the video (Synchformer's convention: its
``example.py`` starts the audio ``offset_sec`` earlier for a positive offset).

Frame times: output frame k shows the nearest earlier source frame (sava's clip reader), where av-benchmark's
torio decoder applies FFmpeg's ``fps=25`` filter (the nearest frame); they agree for 25 fps sources and
differ by at most one source frame otherwise (80 of 200 frames for a 30 fps source, measured by
``benchmarks/parity_synchformer.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
import torchaudio
import torchvision.transforms.v2.functional as TF
from pydantic import ValidationError
from torch import Tensor

from sava_core.clips import ClipRequest, MediaItem, with_request
from sava_core.contracts import Features, Score
from sava_core.errors import SavaError
from sava_core.protocol import ReferenceStats
from sava_core.registry import Registries
from sava_metrics.common import (
    RESAMPLER,
    MediaExtractor,
    build_model,
    fit_length,
    load_into,
    load_state_dict_file,
    mono_at,
    requested_frames,
    verify_checkpoint,
)
from sava_metrics.ib_score import resize_short_side
from sava_metrics.metrics import ExtractorMetric
from sava_metrics.params import DeSyncParams, SynchformerParams
from sava_metrics.synchformer import PUBLISHED, TINY, Synchformer, offset_grid

SYNC_FPS = 25.0
SEGMENT_FRAMES, SEGMENT_STEP = 16, 8
SAMPLE_RATE = 16000
SEGMENT_SAMPLES, SEGMENT_HOP = 10240, 5120
MEL_FRAMES, MEL_MEAN, MEL_STD = 66, -4.2677393, 4.5689974
#: Video segments per pass of the video tower (bounds its activations: about 80 MB of input at 224 px).
SEGMENTS_PER_PASS = 8
PUBLISHED_FILE = ("Synchformer's synchformer_state_dict.pth (github.com/hkchengrex/MMAudio/releases/download/v0.1/; "
                  "MMAudio lists its md5 as 5b2f5594b0730f70e41e549b7c94390c)")
SOURCE = ("github.com/hkchengrex/av-benchmark @ 050a5cd: av_bench/data/video_dataset.py, audio_dataset.py, "
          "extract.py (encode_audio_with_sync), extract_video.py (encode_video_with_sync), evaluate.py (DeSync)")


class SynchformerExtractor(MediaExtractor):
    """Clips -> two rows per clip, the first and the last window of 14 segments: ``embeddings`` (2B, head_dim),
    the sync head's OFF token, and ``logits`` (2B, 21) over :func:`~sava_metrics.synchformer.offset_grid`.
    Reads the first ``duration_seconds`` of video (25 fps) and audio (16 kHz) of each clip."""

    Params = SynchformerParams
    name: ClassVar[str] = "synchformer"
    modality = "video"
    rows = "window"

    def __init__(self, params: SynchformerParams, duration_seconds: float = 8.0):
        super().__init__()
        self.params, self.duration_seconds = params, duration_seconds
        self.cfg = TINY if params.preset == "tiny" else PUBLISHED
        self.frames = int(SYNC_FPS * duration_seconds)
        self.samples = int(SAMPLE_RATE * duration_seconds)
        self.segments = ((self.frames - SEGMENT_FRAMES) // SEGMENT_STEP + 1,
                         (self.samples - SEGMENT_SAMPLES) // SEGMENT_HOP + 1)
        if min(self.segments) < self.cfg.segments:
            raise SavaError(f"extractor {self.name}: duration_seconds={duration_seconds:g} gives {self.segments[0]} "
                            f"video and {self.segments[1]} audio segments; a window needs {self.cfg.segments} "
                            "(duration_seconds >= 4.8)")
        self.checkpoint_sha256: str | None = None
        if params.preset == "tiny":
            self.model = build_model("tiny", params.seed, lambda: Synchformer(TINY))
        else:
            path, self.checkpoint_sha256 = verify_checkpoint(self.name, params.checkpoint, params.sha256,
                                                             PUBLISHED_FILE)
            model = Synchformer(PUBLISHED)
            load_into(model, load_state_dict_file(path), self.name, path, "av-benchmark's Synchformer()")
            self.model = build_model("published", 0, lambda: model)
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, win_length=400, hop_length=160,
                                                        n_fft=1024, n_mels=self.cfg.mel_bins)
        self.request = ClipRequest(video=True, audio=True, fps=SYNC_FPS, frames=self.frames,
                                   frame_transform=self.transform_frames,
                                   by=f"extractor {self.name} ({self.frames} frames at {SYNC_FPS:g} fps for "
                                      f"duration_seconds={duration_seconds:g})")

    def reads(self) -> ClipRequest:
        return self.request

    def transform_frames(self, frames: Tensor) -> Tensor:
        """(F, 3, H, W) in [0, 1] -> (F, 3, size, size): av-benchmark's ``Resize(size, bicubic)`` of uint8
        frames (short side, antialiased), then ``CenterCrop(size)``; values uint8 / 255."""
        size = self.cfg.image_size
        return TF.center_crop(resize_short_side(frames, size), [size, size])

    def too_short(self, item: MediaItem, what: str, needs: str) -> SavaError:
        return SavaError(f"extractor {self.name}: clip {item.id} ({item.source or 'in memory'}) is too short: {what}; "
                         f"duration_seconds={self.duration_seconds:g} needs {needs} (av-benchmark drops such clips). "
                         "Give longer clips or lower duration_seconds.")

    def prepare(self, item: MediaItem) -> tuple[Tensor, Tensor]:
        """One clip -> (frames (frames, 3, size, size) in [0, 1], mono audio (samples,) at 16 kHz)."""
        if item.request is None and item.video is not None and item.fps:
            available = int(item.video.shape[0] / item.fps * SYNC_FPS + 1e-6)
            if available < self.frames:
                raise self.too_short(item, f"{available} frames at {SYNC_FPS:g} fps", f"{self.frames}")
        video = requested_frames(item, self.request, self.name)[:self.frames]
        audio = mono_at(item, SAMPLE_RATE, self.name)
        if audio.shape[0] < self.samples:
            raise self.too_short(item, f"{audio.shape[0] / SAMPLE_RATE:.3f} s of audio",
                                 f"{self.samples} samples at {SAMPLE_RATE} Hz")
        return video, audio[:self.samples]

    def features(self, items: Sequence[MediaItem] | Any, batch_size: int) -> Iterator[tuple[str, Features]]:
        """(clip id, its two windows' :class:`Features`) per clip, in batches of ``batch_size`` clips; clips
        read from disk are decoded as :meth:`reads` asks, one at a time."""
        pending: list[tuple[str, tuple[Tensor, Tensor]]] = []
        for item in with_request(items, self.request):
            pending.append((item.id, self.prepare(item)))
            if len(pending) == batch_size:
                yield from self._windows(pending)
                pending = []
        if pending:
            yield from self._windows(pending)

    def _windows(self, pending: list[tuple[str, tuple[Tensor, Tensor]]]) -> Iterator[tuple[str, Features]]:
        batch = (torch.stack([v for _, (v, _) in pending]), torch.stack([a for _, (_, a) in pending]))
        with torch.no_grad():
            out = self.extract(batch)
        assert out.logits is not None
        for j, (cid, _) in enumerate(pending):
            yield cid, Features(out.embeddings[2 * j:2 * j + 2], out.logits[2 * j:2 * j + 2])

    def video_features(self, video: Tensor) -> Tensor:
        """Frames (B, frames, 3, size, size) in [0, 1] -> segment features (B, S, 8, video_dim)."""
        segments = video.unfold(1, SEGMENT_FRAMES, SEGMENT_STEP).permute(0, 1, 5, 2, 3, 4)  # (B, S, 16, 3, h, w)
        return torch.cat([
            torch.cat([self.model.extract_vfeats((segments[b:b + 1, i:i + SEGMENTS_PER_PASS] - 0.5) / 0.5)
                       for i in range(0, segments.shape[1], SEGMENTS_PER_PASS)], dim=1)
            for b in range(segments.shape[0])])

    def audio_features(self, audio: Tensor) -> Tensor:
        """Mono audio (B, samples) at 16 kHz -> segment features (B, S, 6, audio_dim)."""
        mel = self.mel(audio.unfold(1, SEGMENT_SAMPLES, SEGMENT_HOP))  # (B, S, 128, 65)
        mel = (fit_length(torch.log(mel + 1e-6), MEL_FRAMES) - MEL_MEAN) / (2 * MEL_STD)
        return self.model.extract_afeats(mel.unsqueeze(2))

    def extract(self, batch: tuple[Tensor, Tensor]) -> Features:
        """(frames (B, frames, 3, size, size) in [0, 1], audio (B, samples) at 16 kHz) -> rows for the first
        and the last window of each clip, in that order: embeddings (2B, head_dim), logits (2B, 21)."""
        video, audio = batch
        vis, aud = self.video_features(video.float()), self.audio_features(audio.float())
        n = self.cfg.segments
        first = self.model.compare_v_a(vis[:, :n], aud[:, :n])
        last = self.model.compare_v_a(vis[:, -n:], aud[:, -n:])
        return Features(torch.stack((first[0], last[0]), 1).flatten(0, 1),
                        torch.stack((first[1], last[1]), 1).flatten(0, 1))

    def protocol(self) -> dict[str, Any]:
        published = self.params.preset == "published"
        common = self.base_protocol(self.params.checkpoint, self.checkpoint_sha256, architecture=(
            "Synchformer as av-benchmark's Synchformer() (MotionFormer divided_224_16x4, AST max_spec_t=66, "
            "3-layer sync transformer; sava_metrics.synchformer)" if published else "Synchformer, tiny widths"))
        s, (sv, sa), n = self.cfg.image_size, self.segments, self.cfg.segments
        window = (n - 1) * SEGMENT_STEP + SEGMENT_FRAMES
        return {**common, "protocol": "av-benchmark", "source": SOURCE, "duration_seconds": self.duration_seconds,
                "fps": SYNC_FPS, "frames": self.frames,
                "frame_times": "output frame k shows the nearest earlier source frame (av-benchmark: FFmpeg's "
                               "fps=25 filter, the nearest frame; the same for 25 fps sources); clips with fewer "
                               "frames are left out",
                "resize": f"torchvision Resize({s}, bicubic, antialias) of uint8 frames (short side), CenterCrop({s})",
                "size": s, "normalisation": "uint8 / 255, (x - 0.5) / 0.5",
                "video_segments": f"{SEGMENT_FRAMES} frames every {SEGMENT_STEP}: {sv}",
                "sample_rate": SAMPLE_RATE, "channels": "mono (mean of channels)", "resampler": RESAMPLER,
                "samples": self.samples,
                "audio_segments": f"{SEGMENT_SAMPLES} samples every {SEGMENT_HOP}: {sa}",
                "mel": f"torchaudio MelSpectrogram({SAMPLE_RATE}, n_fft=1024, win_length=400, hop_length=160, "
                       f"n_mels={self.cfg.mel_bins}), log(x + 1e-6), zero-padded to {MEL_FRAMES} frames, "
                       f"(x + {-MEL_MEAN}) / (2 * {MEL_STD})",
                "windows": f"the first {n} and the last {n} segments ({window} frames, {window / SYNC_FPS:g} s each)",
                "offset_classes": self.cfg.offset_classes, "offset_grid": "numpy linspace(-2, 2, 21) s, float32"}


class DeSync(ExtractorMetric):
    """av-benchmark's DeSync: mean over clips and windows of |Synchformer's argmax offset| (s); lower is better."""

    Params = DeSyncParams
    name = "desync"
    definition = ("av-benchmark DeSync: mean over clips of the mean over two windows (the first and the last 14 "
                  "Synchformer segments, 4.8 s each) of |offset| in seconds, offset = the class value (linspace(-2, "
                  "2, 21) s) of the argmax of Synchformer's offset logits; positive offsets: the audio leads")

    def __init__(self, params: DeSyncParams, *, registries: Registries):
        self.params, self.registries = params, registries
        if params.extractor != "synchformer":
            raise SavaError(f"metric {self.name}: extractor must be 'synchformer', not {params.extractor!r}")
        try:
            extractor = registries["extractor"].build("synchformer", params.extractor_params,
                                                      duration_seconds=params.duration_seconds)
        except ValidationError as err:
            raise SavaError(f"metric {self.name}: bad extractor_params for extractor 'synchformer':\n{err}") from None
        self.extractor = extractor.eval()
        self.needs = frozenset({"video", "audio"})

    def measurement(self) -> dict[str, Any]:
        return {**super().measurement(), "protocol": "av-benchmark", "windows": self.extractor.protocol()["windows"]}

    def score(self, generated: Sequence[MediaItem], reference: ReferenceStats | None) -> Score:
        grid = offset_grid(self.extractor.cfg.offset_classes).double()
        rows = []
        for _, f in self.extractor.features(generated, self.params.batch_size):
            assert f.logits is not None
            rows.append(grid[f.logits.argmax(-1)])  # (2,) s: the first and the last window
        if not rows:
            raise SavaError(f"metric {self.name}: no clips")
        offsets = torch.stack(rows)  # (N, 2)
        values = {"desync": offsets.abs().mean().item(), "desync_first": offsets[:, 0].abs().mean().item(),
                  "desync_last": offsets[:, 1].abs().mean().item(), "desync_signed": offsets.mean().item()}
        return Score(values, {**self.measurement(), "n_generated": len(rows)})
