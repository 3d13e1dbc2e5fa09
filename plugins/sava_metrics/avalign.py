"""AV-Align (Yariv et al., "Diverse and Aligned Audio-to-Video Generation via Text-to-Video Model
Adaptation", AAAI 2024): the intersection over union of audio onsets and motion peaks, with no
learned weights.

The protocol is the reference implementation's (github.com/guyyariv/TempoTokens, ``av_align.py``
at commit bf0b1e3), with OpenCV and librosa doing what they do there:

* video: each frame as 8-bit BGR, to grey with ``cv2.cvtColor``; Farneback optical flow between
  consecutive frames (``pyr_scale`` 0.5, 3 levels, window 15, 3 iterations, ``poly_n`` 5,
  ``poly_sigma`` 1.2); the mean flow magnitude per frame pair, the first pair counted twice (so
  value i belongs to frame i); a motion peak is a strict local maximum of at least 0.1 px, at
  time i / fps;
* audio: mono, resampled to 22,050 Hz (``librosa.load``'s default, soxr_hq), onsets by
  ``librosa.onset.onset_detect`` on ``onset_strength`` (defaults);
* per clip: the number of audio onsets within (strictly) one frame of a not yet matched motion
  peak, over |onsets| + |peaks| - matches; the score is the mean over clips.

A clip with neither an onset nor a motion peak has no defined IoU (the reference divides by zero):
it is left out of the mean and counted in the protocol's ``n_undefined``.

``implementation: javisbench`` follows JavisBench's copy instead (github.com/JavisDiT/JavisDiT
``eval/javisbench/src/av_align.py`` @ 6af1a7a, from Seeing-and-Hearing): the same flow and onset
calls, but the audio at the file's own rate (``librosa.load(sr=None)``), every strict local maximum
a motion peak (no 0.1 px floor), an onset counted when any peak is within one frame (a peak may
match several onsets), and matches / (|onsets| + |peaks| - matches + 1e-6), so a clip with neither
scores 0 and none is left out. OpenCV (opencv-python-headless) and librosa are dependencies of sava.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sava_core.clips import ClipRequest, MediaItem, with_request
from sava_core.contracts import Metric, Score
from sava_core.errors import SavaError
from sava_core.registry import Registries
from sava_metrics.params import AVAlignParams

SAMPLE_RATE = 22050
FLOW_THRESHOLD = 0.1
REFERENCES = {"tempotokens": "github.com/guyyariv/TempoTokens av_align.py @ bf0b1e3",
              "javisbench": "github.com/JavisDiT/JavisDiT eval/javisbench/src/av_align.py @ 6af1a7a"}


def _libraries() -> tuple[Any, Any]:
    try:
        import cv2
        import librosa
    except ImportError as err:
        raise SavaError(f"metric av_align needs OpenCV and librosa ({err.name} is missing): "
                        'pip install opencv-python-headless librosa (both are dependencies of sava)') from None
    return cv2, librosa


def grey_frames(video: Any) -> Any:
    """(F, 3, H, W) RGB in [0, 1] -> (F, 1, H, W) uint8 grey, as the reference makes it: 8-bit BGR, then
    ``cv2.cvtColor(BGR2GRAY)``. As a clip reader's frame transform, a 1080p frame is kept as 2 MB."""
    cv2, _ = _libraries()
    frames = (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grey = [cv2.cvtColor(np.ascontiguousarray(f[..., ::-1]), cv2.COLOR_BGR2GRAY) for f in frames]  # RGB -> BGR
    return torch.from_numpy(np.stack(grey))[:, None] if grey else torch.zeros(0, 1, 0, 0, dtype=torch.uint8)


def motion_peaks(video: Any, fps: float, threshold: float = FLOW_THRESHOLD) -> list[float]:
    """Times (s) of the motion peaks of ``video`` at ``fps`` ((F, 3, H, W) in [0, 1], or the (F, 1, H, W)
    uint8 of :func:`grey_frames`): strict local maxima of the mean flow magnitude of at least
    ``threshold`` px."""
    cv2, _ = _libraries()
    grey = [f[0] for f in (video if video.dtype == torch.uint8 else grey_frames(video)).numpy()]

    def magnitude(a: np.ndarray, b: np.ndarray) -> float:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        return float(cv2.mean(cv2.magnitude(flow[..., 0], flow[..., 1]))[0])

    if len(grey) < 2:
        return []
    trajectory = [magnitude(grey[0], grey[1])] + [magnitude(grey[i - 1], grey[i]) for i in range(1, len(grey))]
    return [i / fps for i in range(1, len(trajectory) - 1)
            if trajectory[i - 1] < trajectory[i] > trajectory[i + 1] and trajectory[i] >= threshold]


def audio_onsets(audio: Any, sample_rate: int, rate: int | None = SAMPLE_RATE) -> list[float]:
    """Times (s) of the onsets of ``audio`` (C, S) in [-1, 1] at ``sample_rate`` Hz, detected at ``rate``
    Hz (None: at ``sample_rate``)."""
    _, librosa = _libraries()
    y = audio.double().mean(0).numpy().astype(np.float32)
    rate = rate or sample_rate
    if sample_rate != rate:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=rate, res_type="soxr_hq")
    envelope = librosa.onset.onset_strength(y=y, sr=rate)
    frames = librosa.onset.onset_detect(onset_envelope=envelope, sr=rate)
    return [float(t) for t in librosa.frames_to_time(frames, sr=rate)]


def peak_iou(onsets: Sequence[float], peaks: Sequence[float], fps: float) -> float | None:
    """Onsets within one frame of an unmatched peak, over the union; None when both are empty."""
    if not onsets and not peaks:
        return None
    used = [False] * len(peaks)
    matched = 0
    for onset in onsets:
        for j, peak in enumerate(peaks):
            if not used[j] and peak - 1 / fps < onset < peak + 1 / fps:
                matched += 1
                used[j] = True
                break
    return matched / (len(onsets) + len(peaks) - matched)


def javisbench_peak_iou(onsets: Sequence[float], peaks: Sequence[float], fps: float) -> float:
    """JavisBench's IoU: onsets within one frame of any peak, over the union plus 1e-6 (0 when both are empty)."""
    matched = sum(any(peak - 1 / fps < onset < peak + 1 / fps for peak in peaks) for onset in onsets)
    return matched / (len(onsets) + len(peaks) - matched + 1e-6)


class AVAlign(Metric):
    """``av_align``: mean over clips of :func:`peak_iou` (in [0, 1]; higher is better aligned)."""

    Params = AVAlignParams
    needs = frozenset({"video", "audio"})

    def __init__(self, params: AVAlignParams, *, registries: Registries):
        self.params = params
        _libraries()

    def protocol(self) -> dict[str, Any]:
        cv2, librosa = _libraries()
        implementation = self.params.implementation
        definition = ("IoU of librosa onsets (mono, 22050 Hz) and Farneback optical-flow peaks (>= 0.1 px), each peak "
                      "matched once within one frame; mean over clips with any peak" if implementation == "tempotokens"
                      else "IoU of librosa onsets (mono, the file's rate) and Farneback optical-flow local maxima, an "
                      "onset matched when any peak is within one frame, + 1e-6 in the union; mean over clips")
        return {"metric": "av_align", "implementation": implementation, "reference": REFERENCES[implementation],
                "definition": definition, "opencv": cv2.__version__, "librosa": librosa.__version__}

    def clip_iou(self, clip: MediaItem) -> float | None:
        """The IoU of one clip (None: undefined, as the TempoTokens reference leaves it)."""
        assert clip.video is not None and clip.audio is not None and clip.fps and clip.sample_rate
        if self.params.implementation == "javisbench":
            onsets = audio_onsets(clip.audio, clip.sample_rate, rate=None)
            return javisbench_peak_iou(onsets, motion_peaks(clip.video, clip.fps, threshold=-np.inf), clip.fps)
        return peak_iou(audio_onsets(clip.audio, clip.sample_rate), motion_peaks(clip.video, clip.fps), clip.fps)

    def compute(self, generated: Sequence[MediaItem], reference: Any = None) -> Score:
        scores, undefined = [], 0
        # clips on disk are decoded to grey uint8 frame by frame: a 10 s 1080p clip holds 0.6 GB, not 6 GB
        request = ClipRequest(video=True, audio=True, frame_transform=grey_frames, by="metric av_align (grey frames)")
        for clip in with_request(generated, request):
            iou = self.clip_iou(clip)
            if iou is None:
                undefined += 1
            else:
                scores.append(iou)
        if not scores:
            raise SavaError(f"metric av_align: none of the {undefined} clip(s) has an audio onset or a motion peak")
        return Score({"av_align": float(np.mean(scores))},
                     {**self.protocol(), "n_generated": len(scores) + undefined, "n_undefined": undefined})
