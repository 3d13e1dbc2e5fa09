"""Decoding real media into :class:`~sava_core.contracts.Clip`: probing, frame-rate conversion,
resizing, channel mixing, resampling, and the record of media that had to be skipped.

Timeline. A clip's t = 0 is the first video frame's timestamp (the video stream's start time);
audio from the same file is placed on that timeline by its own timestamps (so an mp4 whose audio
starts later gets leading silence). Audio from a separate file starts at that file's t = 0.

Video. Output frame k of a segment starting at s seconds shows the instant s + k / fps; it is the
source frame whose timestamp is nearest to that instant (ties go to the earlier frame). Frames
are neither blended nor interpolated, so a 30 fps source read at 8 fps keeps every 3rd-4th frame
and a 12 fps source read at 24 fps repeats frames. Size: ``resize="crop"`` scales the shorter
side to fit the requested (height, width) and cuts the centre; ``"stretch"`` scales to exactly
(height, width) ignoring the aspect ratio; both use FFmpeg's area-averaging scaler on RGB24.

Audio. Decoded to float, trimmed to the duration the stream records (encoder padding dropped),
mixed to the requested channels (mono: mean of all channels; stereo: the first two channels, a mono
source duplicated) and resampled with :func:`torchaudio.functional.resample` (windowed sinc) from
a window 50 ms wider on each side than the segment, then cut at the exact sample, so the cut has no
filter edge. Samples past the end of the track are zeros.

Files that are audio-only (wav, flac, ogg, aiff, ...) are read with soundfile, everything else
with PyAV. Unreadable media raise :class:`MediaError` carrying the path and the reason.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import soundfile
import torch
import torchaudio.functional as AF
from torch import Tensor

from sava_core.contracts import Clip
from sava_core.io import atomic_write_text, not_regular

log = logging.getLogger("sava")

#: Extensions read with soundfile instead of PyAV.
SOUNDFILE_EXTENSIONS = frozenset(f".{f.lower()}" for f in soundfile.available_formats()) | {".aif"}
#: Audio read around a segment on each side before resampling (seconds).
RESAMPLE_MARGIN = 0.05
#: A stream whose readable data ends this much (seconds) before its recorded end is truncated.
TRUNCATION_TOLERANCE = 0.25

ResizeMode = Literal["crop", "stretch"]


class MediaError(Exception):
    """A media file that cannot be used: ``path`` and a short ``reason`` (missing, empty, truncated,
    not media, no audio track, no video stream, decode error, too short)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class DecodeSpec:
    """What a clip is decoded to: ``fps`` (frames/s), ``sample_rate`` (Hz), frame ``height`` x
    ``width`` in pixels (None: the source size), ``resize`` mode and audio ``channels`` (1 or 2)."""

    fps: float
    sample_rate: int
    height: int | None = None
    width: int | None = None
    resize: ResizeMode = "crop"
    channels: int = 1


@dataclass(frozen=True)
class MediaInfo:
    """What a cheap probe learns about one clip (a video file, optionally a separate audio file).

    ``duration``: seconds usable by both modalities from t = 0 (the shorter track).
    ``video_start``: the first video frame's time in its file (s); ``audio_start``: where t = 0 lies
    in the audio file's timeline (s). ``source_fps``, ``width``, ``height``, ``source_rate`` (Hz)
    and ``source_channels`` describe the source streams.
    """

    duration: float
    video_start: float
    audio_start: float
    source_fps: float
    width: int
    height: int
    source_rate: int
    source_channels: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Skip:
    """A file (or one segment of it) that was left out, and why."""

    path: str
    reason: str


def record_skip(skips: list[Skip], path: str | Path, reason: str) -> None:
    """Append a :class:`Skip` and log it as a warning on the ``sava`` logger."""
    skips.append(Skip(str(path), reason))
    log.warning("skipping %s: %s", path, reason)


def write_skipped(run_dir: str | Path, skips: list[Skip]) -> Path:
    """Add ``skips`` to ``run_dir/skipped.csv`` (columns ``path,reason``; header only when nothing was
    skipped), rewriting it atomically; rows already there (from other splits) are kept once.
    Returns its path."""
    path = Path(run_dir) / "skipped.csv"
    rows: list[tuple[str, str]] = []
    if path.is_file():
        rows = [(r[0], r[1]) for r in list(csv.reader(path.read_text().splitlines()))[1:] if len(r) >= 2]
    rows += [(s.path, s.reason) for s in skips if (s.path, s.reason) not in rows]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


# ----------------------------------------------------------------------------------- probing


def _check_file(path: str) -> None:
    """Refuse, before opening it, a path that is missing, empty or not a regular file (a device such
    as /dev/zero, a pipe, a folder; symlinks are followed)."""
    kind = not_regular(path)
    if kind == "missing":
        raise MediaError(path, "missing file")
    if kind is not None:
        raise MediaError(path, f"not a regular file ({kind})")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "empty file (0 bytes)")


def _open(path: str) -> av.container.InputContainer:
    _check_file(path)
    try:
        return av.open(path)
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"not readable media (truncated or not audio/video): {exc.strerror or exc}") from None


def time_base(stream: av.stream.Stream) -> Fraction:
    """The stream's time base (seconds per tick); PyAV leaves it None only for streams it cannot time."""
    if stream.time_base is None:
        raise MediaError(str(stream.container.name), f"stream {stream.index} has no time base")
    return stream.time_base


def _stream_span(container: av.container.InputContainer, stream: av.stream.Stream) -> tuple[float, float]:
    """(start, end) in seconds of ``stream`` as its header records them."""
    tb = time_base(stream)
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    if stream.duration is not None:
        return start, start + float(stream.duration * tb)
    if container.duration is not None:
        return start, float(container.duration) / av.time_base
    return start, math.inf


def _readable_end(path: str, container: av.container.InputContainer, stream: av.stream.Stream, end: float) -> float:
    """Demux (no decoding) the last second of ``stream``; the end (s) of the last packet found."""
    tb = time_base(stream)
    try:
        container.seek(max(0, int((end - 1.0) / tb)), stream=stream, backward=True)
        last = -math.inf
        for packet in container.demux(stream):
            if packet.pts is not None and packet.size:
                last = max(last, float((packet.pts + (packet.duration or 0)) * tb))
        return last
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"unreadable stream: {exc.strerror or exc}") from None


def _probe_soundfile(path: str) -> tuple[float, int, int]:
    """(duration s, sample rate Hz, channels) of an audio-only file read by soundfile."""
    _check_file(path)
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise MediaError(path, f"not a readable audio file: {exc}") from None
    if info.frames == 0:
        raise MediaError(path, "audio file holds no samples")
    return info.frames / info.samplerate, info.samplerate, info.channels


def probe(video: str | Path, audio: str | Path | None = None) -> MediaInfo:
    """Open ``video`` (and ``audio``, when the sound is in a separate file), check that both streams
    exist and are readable to their recorded end, and return a :class:`MediaInfo`.

    Cheap: reads headers and demuxes the last second of each stream. Raises :class:`MediaError`.
    """
    video = str(video)
    with _open(video) as container:
        if not container.streams.video:
            raise MediaError(video, "no video stream")
        vs = container.streams.video[0]
        v_start, v_end = _stream_span(container, vs)
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        width, height = vs.codec_context.width, vs.codec_context.height
        if not fps or not width or not height or not math.isfinite(v_end):
            raise MediaError(video, "video stream without frame rate, size or duration")
        if _readable_end(video, container, vs, v_end) < v_end - max(TRUNCATION_TOLERANCE, 2 / fps):
            raise MediaError(video, f"truncated: video data ends before the recorded {v_end - v_start:.2f} s")
        if audio is None:
            if not container.streams.audio:
                raise MediaError(video, "no audio track")
            ast = container.streams.audio[0]
            a_start, a_end = _stream_span(container, ast)
            rate, channels = ast.codec_context.sample_rate, ast.codec_context.channels
            if _readable_end(video, container, ast, a_end) < a_end - TRUNCATION_TOLERANCE:
                raise MediaError(video, f"truncated: audio data ends before the recorded {a_end - a_start:.2f} s")
            return MediaInfo(min(v_end, a_end) - v_start, v_start, v_start, fps, width, height, rate, channels)
    audio = str(audio)
    if Path(audio).suffix.lower() in SOUNDFILE_EXTENSIONS:
        a_duration, rate, channels = _probe_soundfile(audio)
        return MediaInfo(min(v_end - v_start, a_duration), v_start, 0.0, fps, width, height, rate, channels)
    with _open(audio) as container:
        if not container.streams.audio:
            raise MediaError(audio, "no audio track")
        ast = container.streams.audio[0]
        a_start, a_end = _stream_span(container, ast)
        if _readable_end(audio, container, ast, a_end) < a_end - TRUNCATION_TOLERANCE:
            raise MediaError(audio, f"truncated: audio data ends before the recorded {a_end - a_start:.2f} s")
        rate, channels = ast.codec_context.sample_rate, ast.codec_context.channels
    return MediaInfo(min(v_end - v_start, a_end - a_start), v_start, a_start, fps, width, height, rate, channels)


# ----------------------------------------------------------------------------------- decoding


def _frame_rgb(frame: av.VideoFrame, spec: DecodeSpec) -> np.ndarray:
    """One frame as uint8 (H, W, 3), resized per ``spec``."""
    if spec.height is None or spec.width is None:
        return frame.to_ndarray(format="rgb24")
    h, w = spec.height, spec.width
    if spec.resize == "stretch":
        return frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
    scale = max(w / frame.width, h / frame.height)
    sw, sh = max(w, round(frame.width * scale)), max(h, round(frame.height * scale))
    rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (sh - h) // 2, (sw - w) // 2
    return rgb[top:top + h, left:left + w]


def decode_video(path: str | Path, info: MediaInfo, start: float, frames: int, spec: DecodeSpec) -> Tensor:
    """Frames (``frames``, 3, H, W) in [0, 1] showing the instants ``start + k / spec.fps`` (s, clip
    time), each the nearest source frame. Raises :class:`MediaError`."""
    path = str(path)
    targets = info.video_start + start + np.arange(frames) / spec.fps
    period = 1 / info.source_fps
    times: list[float] = []
    decoded: list[av.VideoFrame] = []
    try:
        with av.open(path) as container:
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"
            if start > 0:
                container.seek(max(0, int((targets[0] - period) / time_base(vs))), stream=vs, backward=True)
            for frame in container.decode(vs):
                if frame.pts is None:
                    continue
                t = float(frame.pts * time_base(vs))
                if t < targets[0] - period:
                    continue
                times.append(t)
                decoded.append(frame)
                if t > targets[-1] + period:
                    break
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"video decode error: {exc.strerror or exc}") from None
    if not decoded:
        raise MediaError(path, f"no video frames decoded at {start:.2f} s")
    order = np.argsort(times, kind="stable")
    times_sorted = np.asarray(times)[order]
    right = np.searchsorted(times_sorted, targets).clip(0, len(times_sorted) - 1)
    left = (right - 1).clip(0)
    tie = 1e-6  # seconds: equal distances up to rounding go to the earlier frame
    nearest = np.where(np.abs(times_sorted[left] - targets) <= np.abs(times_sorted[right] - targets) + tie, left, right)
    picks = order[nearest]
    rgb = {int(i): _frame_rgb(decoded[i], spec) for i in np.unique(picks)}
    video = torch.from_numpy(np.stack([rgb[int(i)] for i in picks]))
    return video.permute(0, 3, 1, 2).float().div_(255)


def _pyav_audio(path: str, window_start: float, window_end: float) -> tuple[np.ndarray, float, int, float]:
    """Float samples (C, n) of the first audio stream from about ``window_start`` to ``window_end``
    (s, file time), the time of the first sample, the rate (Hz) and the stream's recorded end (s)."""
    chunks: list[np.ndarray] = []
    first: float | None = None
    try:
        with av.open(path) as container:
            ast = container.streams.audio[0]
            _, end = _stream_span(container, ast)
            rate = ast.codec_context.sample_rate
            resampler = av.AudioResampler(format="fltp")
            if window_start > 0:
                container.seek(max(0, int(window_start / time_base(ast))), stream=ast, backward=True)
            for frame in container.decode(ast):
                if frame.pts is None:
                    continue
                t = float(frame.pts * time_base(ast))
                if t + frame.samples / rate < window_start:
                    continue
                if first is None:
                    first = t
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
                if t > window_end:
                    break
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"audio decode error: {exc.strerror or exc}") from None
    if first is None:
        raise MediaError(path, f"no audio decoded at {window_start:.2f} s")
    return np.concatenate(chunks, axis=1), first, rate, end


def _soundfile_audio(path: str, window_start: float, window_end: float) -> tuple[np.ndarray, float, int, float]:
    """Like :func:`_pyav_audio`, for files soundfile reads."""
    try:
        info = soundfile.info(path)
        i0 = max(0, math.floor(window_start * info.samplerate))
        i1 = min(info.frames, math.ceil(window_end * info.samplerate))
        data, rate = soundfile.read(path, start=i0, stop=max(i0, i1), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise MediaError(path, f"audio decode error: {exc}") from None
    return data.T, i0 / rate, rate, info.frames / rate


def _mix(samples: Tensor, channels: int) -> Tensor:
    """(C, n) -> (``channels``, n): mono = mean of all, stereo = first two (mono duplicated)."""
    if channels == 1:
        return samples.mean(0, keepdim=True)
    return samples[:2] if samples.shape[0] >= 2 else samples.expand(2, -1)


def decode_audio(path: str | Path, origin: float, start: float, samples: int, spec: DecodeSpec) -> Tensor:
    """Audio (channels, ``samples``) in [-1, 1] at ``spec.sample_rate`` Hz from clip time ``start``
    (s); clip t = 0 lies at ``origin`` seconds of the file. Raises :class:`MediaError`."""
    path = str(path)
    t0 = origin + start
    t1 = t0 + samples / spec.sample_rate
    read = _soundfile_audio if Path(path).suffix.lower() in SOUNDFILE_EXTENSIONS else _pyav_audio
    data, first, rate, end = read(path, max(0.0, t0 - RESAMPLE_MARGIN), t1 + RESAMPLE_MARGIN)
    data = data[:, : max(0, round((end - first) * rate))]  # drop encoder padding past the recorded end
    # a source window on the source's sample grid, zero-filled outside the track
    w0 = round((t0 - RESAMPLE_MARGIN - first) * rate)
    n = math.ceil((t1 - t0 + 2 * RESAMPLE_MARGIN) * rate)
    window = np.zeros((data.shape[0], n), dtype=np.float32)
    lo, hi = max(w0, 0), min(w0 + n, data.shape[1])
    if hi > lo:
        window[:, lo - w0:hi - w0] = data[:, lo:hi]
    mixed = _mix(torch.from_numpy(window), spec.channels)
    if rate != spec.sample_rate:
        mixed = AF.resample(mixed, rate, spec.sample_rate)
    window_start = first + w0 / rate
    j0 = round((t0 - window_start) * spec.sample_rate)
    out = mixed[:, j0:j0 + samples]
    if out.shape[1] < samples:
        out = torch.nn.functional.pad(out, (0, samples - out.shape[1]))
    return out.clamp_(-1, 1).contiguous()


def segment_sizes(segment: float, spec: DecodeSpec) -> tuple[int, int]:
    """(video frames F, audio samples S) of a ``segment``-second cut: F = round(segment * fps),
    S = round(F / fps * sample_rate), so both modalities span exactly F / fps seconds."""
    frames = max(1, round(segment * spec.fps))
    return frames, round(frames / spec.fps * spec.sample_rate)


def decode_segment(video: str | Path, audio: str | Path | None, info: MediaInfo, start_frame: int,
                   frames: int, spec: DecodeSpec, caption: str = "", meta: dict[str, Any] | None = None) -> Clip:
    """The :class:`Clip` of ``frames`` output frames starting at output frame ``start_frame`` (clip
    time start_frame / fps): video and audio cut at the same instant, audio S = round(frames / fps *
    sample_rate) samples. Raises :class:`MediaError`."""
    start = start_frame / spec.fps
    samples = round(frames / spec.fps * spec.sample_rate)
    v = decode_video(video, info, start, frames, spec)
    a = decode_audio(audio if audio is not None else video, info.audio_start, start, samples, spec)
    return Clip(v, a, spec.fps, spec.sample_rate, caption,
                {**(meta or {}), "source": str(video), "audio_source": str(audio or video), "start": start})


def check_media(video: str | Path, audio: str | Path | None = None) -> list[str]:
    """Every problem of one clip, for ``sava data check``: the probe's, then any error while decoding
    every packet of both streams, and a video frame count far below what the header promises.
    Empty when the clip is usable."""
    try:
        info = probe(video, audio)
    except MediaError as exc:
        return [f"{exc.path}: {exc.reason}" if audio is not None else exc.reason]
    problems = []
    try:
        with av.open(str(video)) as container:
            expected = container.streams.video[0].frames
            count = sum(1 for _ in container.decode(video=0))
        if expected and count < expected - max(2, round(TRUNCATION_TOLERANCE * info.source_fps)):
            problems.append(f"truncated: {count} of {expected} video frames decode")
    except av.error.FFmpegError as exc:
        problems.append(f"video decode error: {exc.strerror or exc}")
    try:
        decode_audio(audio if audio is not None else video, info.audio_start, 0.0,
                     max(1, round(info.duration * info.source_rate)),
                     DecodeSpec(fps=info.source_fps, sample_rate=info.source_rate, channels=1))
    except MediaError as exc:
        problems.append(exc.reason)
    return problems

