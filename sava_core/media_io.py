"""Reading and writing clips: mp4 (H.264 + AAC, via PyAV), wav (soundfile) and audio-visual figures.

Videos are float (F, 3, H, W) in [0, 1] at ``fps`` frames per second; audio is float (C, S) in
[-1, 1] at ``sample_rate`` Hz; both start at t = 0. Every file is written atomically
(:func:`sava_core.io.atomic_path`).

Durations in an mp4: the AAC encoder adds 1024 samples of priming in front and pads the last
frame of 1024 samples, but the mp4 muxer records both in the audio track's edit list and
duration, and :func:`read_mp4` keeps exactly the written samples. The video track lasts F / fps,
the audio track S / sample_rate, so they agree within one frame when S / sample_rate does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from fractions import Fraction
from itertools import cycle
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile
import torch
from torch import Tensor

from sava_core.decode import time_base
from sava_core.io import atomic_path, atomic_write_text

#: Video encoders tried in order (libx264 for H.264; mpeg4 where FFmpeg was built without it).
VIDEO_CODECS = ("libx264", "mpeg4")


def _video_codec() -> str:
    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except av.codec.codec.UnknownCodecError:
            continue
    raise RuntimeError(f"FFmpeg in PyAV {av.__version__} has none of the encoders {VIDEO_CODECS}")


def _layout(channels: int) -> str:
    if channels not in (1, 2):
        raise ValueError(f"mp4 audio must be mono or stereo, not {channels} channels")
    return "mono" if channels == 1 else "stereo"


def write_mp4(path: str | Path, video: Tensor, fps: float, audio: Tensor, sample_rate: int,
              crf: int = 18) -> None:
    """Write ``video`` (F, 3, H, W) in [0, 1] at ``fps`` and ``audio`` (C, S) in [-1, 1] at
    ``sample_rate`` Hz (C = 1 or 2) as one mp4 with an H.264 (yuv420p, quality ``crf``; mpeg4
    without libx264) video stream and an AAC audio stream. H and W must be even (4:2:0 chroma)."""
    f, c, h, w = video.shape
    if c != 3 or h % 2 or w % 2:
        raise ValueError(f"video must be (F, 3, H, W) with even H and W, not {tuple(video.shape)}")
    frames = (video.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    samples = np.ascontiguousarray(audio.detach().clamp(-1, 1).float().cpu().numpy())
    codec = _video_codec()
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        vstream: Any = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))  # PyAV's stubs: a union
        vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            vstream.options = {"crf": str(crf)}
        astream: Any = container.add_stream("aac", rate=sample_rate)
        astream.layout = _layout(samples.shape[0])
        for k in range(f):
            frame = av.VideoFrame.from_ndarray(frames[k], format="rgb24")
            frame.pts = k
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode())
        sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout=astream.layout.name)
        sound.sample_rate, sound.pts = sample_rate, 0
        container.mux(astream.encode(sound))  # PyAV cuts it into the encoder's 1024-sample frames
        container.mux(astream.encode())


def read_mp4(path: str | Path) -> tuple[Tensor, Tensor, float, int]:
    """Read the first video and audio streams of an mp4.

    Returns (video (F, 3, H, W) float in [0, 1], audio (C, S) float, fps, sample_rate); the audio
    keeps the samples the track's duration records (encoder padding at the end is dropped).
    """
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate or vstream.guessed_rate or 0)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(vstream)]
    with av.open(str(path)) as container:
        astream = container.streams.audio[0]
        sample_rate = astream.codec_context.sample_rate
        channels = astream.codec_context.layout.nb_channels
        samples: Any = np.concatenate([
            frame.to_ndarray() if frame.format.is_planar else frame.to_ndarray().reshape(-1, channels).T
            for frame in container.decode(astream)
        ], axis=1)
        if astream.duration is not None:
            samples = samples[:, : round(float(astream.duration * time_base(astream)) * sample_rate)]
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    return video, torch.from_numpy(samples.astype(np.float32)), fps, sample_rate


@contextmanager
def _opened(source: str | Path | av.container.InputContainer) -> Iterator[av.container.InputContainer]:
    """``source`` opened for reading (and closed after), or the open container itself (left open)."""
    if isinstance(source, (str, Path)):
        with av.open(str(source)) as container:
            yield container
    else:
        yield source


def source_frame(k: int, source_fps: float, fps: float | None) -> int:
    """The source frame that output frame ``k`` at ``fps`` shows: the nearest earlier one,
    floor(k * source_fps / fps + 1e-6) (``k`` itself when ``fps`` is None or equals the source rate)."""
    if fps is None or abs(fps - source_fps) <= 1e-6:
        return k
    return math.floor(k * source_fps / fps + 1e-6)


def output_frames(n_source: int, source_fps: float, fps: float | None) -> int:
    """How many output frames at ``fps`` ``n_source`` source frames give: int(n / source_fps * fps + 1e-6)
    (the whole output periods within the video; ``n_source`` when ``fps`` is None or the source rate)."""
    if fps is None or abs(fps - source_fps) <= 1e-6:
        return n_source
    return int(n_source / source_fps * fps + 1e-6)


def read_mp4_video(source: str | Path | av.container.InputContainer, *, fps: float | None = None, stride: int = 1,
                   frames: int | None = None,
                   transform: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, float, int]:
    """Decode only the frames a reader samples, transforming each as it is decoded.

    Output frame k at ``fps`` (None: the source rate) shows source frame :func:`source_frame`;
    of those, every ``stride``-th from the first is kept, at most ``frames`` of them (None: all), and
    decoding stops once they are known. A kept frame is converted to float (1, 3, H, W) in [0, 1]
    (uint8 / 255, as :func:`read_mp4`) and passed through ``transform`` (e.g. a resize) at once, so
    no more than one source-size float frame exists at a time; without ``transform`` the kept frames
    stay uint8 until the end. Returns (frames (F, 3, h, w) float, the source fps, source frames
    decoded); F may fall short of ``frames`` when the clip is too short. ``source``: a file, or a
    container opened with ``av.open`` and not yet read (left open). Raises PyAV's errors.
    """
    def convert(frame: av.VideoFrame) -> Any:
        rgb = _rgb24(frame)
        if transform is None:
            return rgb
        return transform(torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255))

    picked: list[tuple[int, Any]] = []  # (output position before the stride, converted frame)
    k, n, last = 0, 0, None
    with _opened(source) as container:
        vstream = container.streams.video[0]
        source_fps = float(vstream.average_rate or vstream.guessed_rate or 0)
        if not source_fps and fps is not None:
            raise ValueError("the video stream records no frame rate, so it cannot be resampled")
        for frame in container.decode(vstream):
            i, n, last = n, n + 1, frame
            converted = None
            while (frames is None or len(picked) < frames) and source_frame(k, source_fps, fps) == i:
                converted = convert(frame) if converted is None else converted
                picked.append((k, converted))
                k += stride
            if frames is not None and len(picked) >= frames and output_frames(n, source_fps, fps) > picked[-1][0]:
                break
        total = output_frames(n, source_fps, fps)
        picked = [(j, f) for j, f in picked if j < total]
        # positions inside the video whose source frame lies past the last one decoded show the last frame
        while last is not None and (frames is None or len(picked) < frames) and k < total:
            picked.append((k, convert(last)))
            k += stride
    if not picked:
        return torch.zeros(0, 3, 0, 0), source_fps, n
    if transform is not None:
        return torch.cat([f for _, f in picked]), source_fps, n
    h, w = picked[0][1].shape[:2]
    video = torch.empty(len(picked), h, w, 3)  # (F, H, W, 3): the memory layout read_mp4 gives
    for j, (_, rgb) in enumerate(picked):
        video[j] = torch.from_numpy(rgb).float().div_(255)
    return video.permute(0, 3, 1, 2), source_fps, n


def map_large_allocations(threshold_bytes: int = 4 << 20) -> bool:
    """Serve allocations of ``threshold_bytes`` or more with their own memory map, returned to the system
    when freed (glibc ``mallopt(M_MMAP_THRESHOLD)``; True when set, False off glibc).

    Decoding every frame of a long high-resolution clip allocates a source-size float frame (25 MB at
    1080p) and its temporaries per frame while small outputs are kept. glibc's default threshold
    rises to 32 MB after the first such block is freed, so the blocks then come from the heap, each
    hole is split by a kept output, and the heap grows by a frame per frame: measured here, reading
    all 250 frames of a 10 s 1080p clip to grey frames (AV-Align) peaked at 3.1 GB for 0.5 GB kept,
    and 1.6 GB with this set. ``sava eval`` sets it; it is process-wide (an allocation of 4 MB or
    more costs a system call), which is why the library does not set it on import."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(-3, threshold_bytes))  # -3: M_MMAP_THRESHOLD (malloc.h); a fixed value ends the rise


def _rgb24(frame: av.VideoFrame) -> np.ndarray:
    """A frame as uint8 (H, W, 3), converted on this thread: swscale's own threads, interleaved with
    torch's (which spin between operations), made decoding small clips several times slower."""
    try:
        return frame.to_ndarray(format="rgb24", threads=1)
    except TypeError:  # PyAV without the `threads` option
        return frame.to_ndarray(format="rgb24")


def read_mp4_audio(source: str | Path | av.container.InputContainer) -> tuple[Tensor, int, int | None]:
    """The first audio stream of an mp4 as :func:`read_mp4` reads it, without touching the video:
    (audio (C, S) float32, sample rate, the samples the track records or None). S is at most the
    recorded count (encoder padding dropped); fewer means the track's data ends early. ``source``:
    a file, or a container opened with ``av.open`` and not yet read (left open)."""
    with _opened(source) as container:
        astream = container.streams.audio[0]
        sample_rate = astream.codec_context.sample_rate
        channels = astream.codec_context.layout.nb_channels
        chunks = [frame.to_ndarray() if frame.format.is_planar else frame.to_ndarray().reshape(-1, channels).T
                  for frame in container.decode(astream)]
        recorded = (round(float(astream.duration * time_base(astream)) * sample_rate)
                    if astream.duration is not None else None)
    samples: Any = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    if recorded is not None:
        samples = samples[:, :recorded]
    return torch.from_numpy(samples.astype(np.float32)), sample_rate, recorded


def write_wav(path: str | Path, audio: Tensor, sample_rate: int) -> None:
    """Write ``audio`` (C, S) in [-1, 1] at ``sample_rate`` Hz as 16-bit PCM wav."""
    data = audio.detach().clamp(-1, 1).float().cpu().numpy().T
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), data, sample_rate, format="WAV", subtype="PCM_16")


def save_av_figure(path: str | Path, video: Tensor, audio: Tensor, fps: float, sample_rate: int,
                   events: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
                   title: str = "", max_keyframes: int = 16) -> None:
    """Save a PNG: a row of keyframes above the log-power spectrogram (dB) of ``audio``, on one time axis.

    ``video`` (F, 3, H, W) in [0, 1] at ``fps``; ``audio`` (C, S) at ``sample_rate`` Hz (channels are
    averaged). n = min(F, ``max_keyframes``) keyframes, evenly spaced, each drawn centred on the
    instant it shows (frame k shows k / fps) and duration / n seconds wide. ``events``: times in
    seconds drawn as vertical lines across both rows, or {label: times} for several kinds with a
    legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, _, h, w = video.shape
    duration = f / fps
    n = min(f, max_keyframes)
    mono = audio.detach().float().mean(0).cpu()
    n_fft = 1 << max(6, round(np.log2(0.032 * sample_rate)))
    spec = torch.stft(mono, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
    db = 10 * torch.log10(spec.abs().pow(2) + 1e-10)
    db = db.clamp(min=db.max() - 80)

    width = 10.0
    strip = width / n * h / w
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(width, strip + 3.2 + 0.6 * bool(title)),
                                      gridspec_kw={"height_ratios": [strip, 3.2]})
    slot = duration / n
    for i in range(n):
        k = min(f - 1, int(i * f / n))
        top.imshow(video[k].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
                   extent=(k / fps - slot / 2, k / fps + slot / 2, 0, 1), aspect="auto", interpolation="nearest")
    top.set_ylim(0, 1)
    top.set_yticks([])
    bottom.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma",
                  extent=(0, mono.shape[0] / sample_rate, 0, sample_rate / 2))
    bottom.set_xlim(-slot / 2, duration)
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("frequency (Hz)")
    if events is not None:
        groups = events if isinstance(events, Mapping) else {"": events}
        for (label, times), colour in zip(groups.items(), cycle(("white", "cyan", "lime", "orange"))):
            for j, t in enumerate(times):
                for ax in (top, bottom):
                    ax.axvline(t, color=colour, linestyle="--", linewidth=1.2,
                               label=label if ax is bottom and j == 0 and label else None)
        if any(groups):
            bottom.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save_samples(folder: Path, prompts: list[str], video: Tensor, audio: Tensor, fps: float, sample_rate: int,
                 limit: int) -> None:
    """mp4 (video + audio), wav and a keyframes-over-spectrogram PNG for the first ``limit`` samples
    (``sample-NNN.*``); video (N, F, 3, H, W) in [0, 1], audio (N, C, S) in [-1, 1]."""
    for i in range(min(limit, len(prompts))):
        stem = folder / f"sample-{i:03d}"
        write_mp4(stem.with_suffix(".mp4"), video[i], fps, audio[i], sample_rate)
        write_wav(stem.with_suffix(".wav"), audio[i], sample_rate)
        save_av_figure(stem.with_suffix(".png"), video[i], audio[i], fps, sample_rate, title=prompts[i])


def write_clips(folder: Path, captions: list[str], video: Tensor, audio: Tensor, fps: float, sample_rate: int) -> Path:
    """Clips as ``clip-NNNNN.mp4`` (video + audio) with their captions in ``clip-NNNNN.txt``: the
    layout ``sava eval`` reads; generated and reference clips of the same index share a name."""
    for i, caption in enumerate(captions):
        write_mp4(folder / f"clip-{i:05d}.mp4", video[i], fps, audio[i], sample_rate)
        atomic_write_text(folder / f"clip-{i:05d}.txt", caption)
    return folder
