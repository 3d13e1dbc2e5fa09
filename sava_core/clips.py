"""Clips on disk for evaluation: a folder (``*.mp4`` with audio, or ``*.wav`` / ``*.flac`` for
audio-only metrics; an optional ``<stem>.txt`` beside a clip holds its caption) or a manifest
(``.csv`` with a header, or ``.jsonl``) with the columns ``path`` (relative to the manifest), and
optionally ``caption`` and ``id``. A clip's id is its ``id`` column or its file stem; paired metrics
(KL) match generated and reference clips by id.

A clip is decoded when it is read, as the reader's :class:`ClipRequest` asks: only the modalities
it needs, and for video only the frames it samples, each transformed (resized) as it is decoded, so
memory does not grow with a clip's resolution. Indexing a :class:`ClipSet` decodes the whole clip
(every frame at its source size, as float32). A file that cannot be used raises :class:`ClipError`
(path and reason)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sava_core.errors import SavaError
from sava_core.io import not_regular, require_file

VIDEO_SUFFIXES = (".mp4",)
AUDIO_SUFFIXES = (".wav", ".flac")
#: An audio track whose data ends this much (seconds) before its recorded end is truncated.
TRUNCATION_TOLERANCE = 0.25


@dataclass(frozen=True)
class ClipRequest:
    """What a reader of clips (an extractor, a metric) needs decoded, so that the clip reader decodes
    only that: ``video`` / ``audio`` (whether to decode each; a file's other streams are only
    probed), and for video the frames it samples: output frames at ``fps`` (None: the source rate;
    output frame k shows the nearest earlier source frame, floor(k * source_fps / fps + 1e-6)),
    every ``frame_stride``-th of them from the first, the first ``frames`` of those (None: all).
    ``frame_transform`` maps each kept frame, (1, 3, H, W) float in [0, 1], to what the reader
    keeps (e.g. a resize to the protocol's size); it runs as each frame is decoded, so a clip is
    never held at its source resolution. ``by`` names who asks, in messages. Audio is decoded whole
    (it is small). Two requests are equal when every field is (a bound method as the transform
    compares by its object)."""

    video: bool = True
    audio: bool = True
    fps: float | None = None
    frame_stride: int = 1
    frames: int | None = None
    frame_transform: Callable[[Tensor], Tensor] | None = None
    by: str = ""

    @property
    def samples_frames(self) -> bool:
        """Whether the decoded video differs from the whole clip (frames sampled or transformed)."""
        return (self.fps is not None or self.frame_stride != 1 or self.frames is not None
                or self.frame_transform is not None)


#: The whole clip, every modality: what indexing a :class:`ClipSet` decodes.
WHOLE_CLIP = ClipRequest()


@dataclass
class MediaItem:
    """One clip to evaluate: ``video`` (F, 3, H, W) in [0, 1] at ``fps`` and/or ``audio`` (C, S) in
    [-1, 1] at ``sample_rate`` Hz (``None`` for a modality the file lacks or the reader did not ask
    for), its caption and id. ``streams``: the modalities the file holds ("video", "audio"), decoded
    or not (default: those given). ``request``: the :class:`ClipRequest` whose frame sampling and
    transform ``video`` already went through (its frames are then at ``fps`` = the request's rate
    divided by its stride), or None when ``video`` is the whole clip."""

    id: str
    video: Tensor | None = None
    fps: float | None = None
    audio: Tensor | None = None
    sample_rate: int | None = None
    caption: str = ""
    source: str = ""
    streams: frozenset[str] | None = None
    request: ClipRequest | None = None

    def __post_init__(self) -> None:
        if self.streams is None:
            self.streams = frozenset(n for n, v in (("video", self.video), ("audio", self.audio)) if v is not None)


class ClipError(SavaError):
    """A clip that cannot be used: ``path``, a short ``reason`` (for the list of skipped clips, in
    the words of :class:`sava_core.decode.MediaError`) and the full message."""

    def __init__(self, path: str | Path, reason: str, message: str | None = None):
        self.path, self.reason = str(path), reason
        super().__init__(message or f"cannot read clip {path}: {reason}; replace or remove the file")


def _check_clip_file(path: Path) -> None:
    kind = not_regular(path)
    if kind == "missing":
        raise ClipError(path, "missing file", f"clip {path} not found; give the path of an existing file")
    if kind is not None:
        raise ClipError(path, f"not a regular file ({kind})",
                        f"clip {path} is not a regular file ({kind}); give a file")
    if path.stat().st_size == 0:
        raise ClipError(path, "empty file (0 bytes)")


def read_clip(path: str | Path, id: str, caption: str = "", request: ClipRequest = WHOLE_CLIP) -> MediaItem:
    """Decode what ``request`` asks of one file: an mp4 (video and/or audio, only the sampled frames,
    each transformed as it is decoded: :func:`sava_core.media_io.read_mp4_video`) or an audio file.
    A stream the file lacks is None (``streams`` says which it has). Raises :class:`ClipError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    _check_clip_file(path)
    if suffix in VIDEO_SUFFIXES:
        return _read_mp4(path, id, caption, request)
    if suffix in AUDIO_SUFFIXES:
        if not request.audio:
            return MediaItem(id, caption=caption, source=str(path), streams=frozenset({"audio"}))
        import soundfile

        try:
            data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (soundfile.SoundFileError, RuntimeError) as err:
            raise ClipError(path, f"not a readable audio file: {err}",
                            f"cannot read {path} as audio: {err}; replace or remove the file") from None
        return MediaItem(id, None, None, torch.from_numpy(data.T.copy()), int(sample_rate), caption, str(path))
    raise ClipError(path, f"unsupported file type {suffix!r}",
                    f"clip {path}: unsupported file type {suffix!r}; use {', '.join(VIDEO_SUFFIXES + AUDIO_SUFFIXES)}")


def _mp4_problem(path: Path, reason: str) -> ClipError:
    return ClipError(path, reason, f"cannot read {path} as an mp4: {reason}; replace or remove the file")


def _ffmpeg_words(err: Exception) -> str:
    """FFmpeg's own words for an error, without the path PyAV appends."""
    return str(getattr(err, "strerror", None) or err)


def _read_mp4(path: Path, id: str, caption: str, request: ClipRequest) -> MediaItem:
    import av

    from sava_core.media_io import read_mp4_video

    errors = (av.error.FFmpegError, OSError, ValueError, IndexError)
    try:
        container = av.open(str(path))
    except errors as err:
        raise _mp4_problem(path, f"not readable media (truncated or not audio/video): {_ffmpeg_words(err)}") from None
    with container:  # opened once for its streams and the first modality asked for
        streams = frozenset(n for n, s in (("video", container.streams.video), ("audio", container.streams.audio))
                            if s)
        if not streams:
            raise _mp4_problem(path, "no video or audio stream")
        item = MediaItem(id, caption=caption, source=str(path), streams=streams)
        audio_left = request.audio and "audio" in streams
        if request.video and "video" in streams:
            try:
                video, source_fps, decoded = read_mp4_video(container, fps=request.fps, stride=request.frame_stride,
                                                            frames=request.frames, transform=request.frame_transform)
            except errors as err:
                raise _mp4_problem(path, f"video decode error: {_ffmpeg_words(err)}") from None
            _set_video(item, path, video, source_fps, decoded, request)
        elif audio_left:
            _set_audio(item, path, container, errors)
            audio_left = False
    if audio_left:  # after the video: from the start of the file again
        _set_audio(item, path, path, errors)
    return item


def _set_video(item: MediaItem, path: Path, video: Tensor, source_fps: float, decoded: int,
               request: ClipRequest) -> None:
    """Give ``item`` the frames :func:`~sava_core.media_io.read_mp4_video` kept, or refuse too few."""
    if decoded == 0:
        raise _mp4_problem(path, "no video frames decoded")
    needed = request.frames or 1
    if video.shape[0] < needed:
        sampling = f"stride {request.frame_stride}" + (f", {request.fps:g} fps" if request.fps else "")
        who = request.by or "the reader"
        raise ClipError(
            path, f"too short: {video.shape[0]} frame(s) after sampling ({sampling}); {who} needs {needed}",
            f"{who}: clip {item.id} ({path}) has {video.shape[0]} frames after sampling ({sampling}); the protocol "
            f"needs {needed}. Use longer clips or lower `frames`.")
    rate = request.fps if request.fps is not None else source_fps
    item.video, item.fps = video, rate / request.frame_stride
    item.request = request if request.samples_frames else None


def _set_audio(item: MediaItem, path: Path, source: Any, errors: tuple[type[Exception], ...]) -> None:
    """Give ``item`` the audio of ``source`` (``path`` or its unread container); refuse a truncated track."""
    from sava_core.media_io import read_mp4_audio

    try:
        audio, sample_rate, recorded = read_mp4_audio(source)
    except errors as err:
        raise _mp4_problem(path, f"audio decode error: {_ffmpeg_words(err)}") from None
    if recorded is not None and audio.shape[1] < recorded - TRUNCATION_TOLERANCE * sample_rate:
        raise _mp4_problem(path, f"truncated: audio data ends at {audio.shape[1] / sample_rate:.2f} s of the "
                                 f"recorded {recorded / sample_rate:.2f} s")
    item.audio, item.sample_rate = audio, sample_rate


def read_item(path: Path, id: str, caption: str = "") -> MediaItem:
    """Decode one whole file (every frame at its source size, and the audio): :func:`read_clip`."""
    return read_clip(path, id, caption)


def with_request(clips: Sequence[MediaItem], request: ClipRequest) -> Sequence[MediaItem]:
    """``clips`` decoded as ``request`` asks when they are read from disk (anything with a
    ``with_request`` method: a :class:`ClipSet`, the evaluation driver's views); other sequences (clips
    held in memory) unchanged, to be sampled by the reader itself."""
    method = getattr(clips, "with_request", None)
    return method(request) if callable(method) else clips


@dataclass(frozen=True)
class ClipEntry:
    """A clip on disk: its id, file and caption."""

    id: str
    path: Path
    caption: str


class ClipSet(Sequence[MediaItem]):
    """Clips on disk, decoded on access (one at a time, so a set never has to fit in memory)."""

    def __init__(self, entries: Sequence[ClipEntry], source: str):
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise SavaError(f"{source}: clip ids must be unique; repeated: {', '.join(dup)}")
        self._entries = list(entries)
        self.source = source

    @classmethod
    def from_path(cls, path: str | Path) -> ClipSet:
        """A folder of clips or a manifest (``.csv`` / ``.jsonl``)."""
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + AUDIO_SUFFIXES)
            if not files:
                raise SavaError(f"{path}: no clips ({', '.join(VIDEO_SUFFIXES + AUDIO_SUFFIXES)}) in this folder")
            entries = []
            for f in files:
                txt = f.with_suffix(".txt")
                caption = require_file(txt, "caption file").read_text().strip() if not_regular(txt) != "missing" else ""
                entries.append(ClipEntry(f.stem, f, caption))
            return cls(entries, str(path))
        if not_regular(path) == "missing":
            raise SavaError(f"{path} not found: give a folder of clips or a manifest (.csv or .jsonl)")
        if path.suffix.lower() in (".csv", ".jsonl"):
            return cls(_read_manifest(require_file(path, "clip manifest")), str(path))
        raise SavaError(f"{path}: expected a folder of clips or a manifest (.csv or .jsonl)")

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self._entries]

    @property
    def entries(self) -> list[ClipEntry]:
        """Each clip's id, path and caption, without decoding it."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def read(self, index: int, request: ClipRequest = WHOLE_CLIP) -> MediaItem:
        """Clip ``index`` decoded as ``request`` asks; raises :class:`ClipError`."""
        e = self._entries[index]
        return read_clip(e.path, e.id, e.caption, request)

    def with_request(self, request: ClipRequest) -> RequestedClips:
        """These clips, each decoded as ``request`` asks when read."""
        return RequestedClips(self, request)

    def __getitem__(self, index: int) -> MediaItem:  # type: ignore[override]
        return self.read(index)

    def __iter__(self) -> Iterator[MediaItem]:
        return (self[i] for i in range(len(self)))


class RequestedClips(Sequence[MediaItem]):
    """A :class:`ClipSet` whose clips are decoded as one :class:`ClipRequest` asks."""

    def __init__(self, clips: ClipSet, request: ClipRequest):
        self.clips, self.request, self.source = clips, request, clips.source

    @property
    def ids(self) -> list[str]:
        return self.clips.ids

    def with_request(self, request: ClipRequest) -> RequestedClips:
        return RequestedClips(self.clips, request)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> MediaItem:  # type: ignore[override]
        return self.clips.read(index, self.request)

    def __iter__(self) -> Iterator[MediaItem]:
        return (self[i] for i in range(len(self)))


def _read_manifest(path: Path) -> list[ClipEntry]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise SavaError(f"{path}:{n}: not a JSON object: {err}") from None
    if not rows:
        raise SavaError(f"{path}: the manifest lists no clips")
    entries = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise SavaError(f"{path}: row {n} has no 'path' (columns: path, and optionally caption and id)")
        clip = Path(row["path"])
        clip = clip if clip.is_absolute() else path.parent / clip
        entries.append(ClipEntry(str(row.get("id") or clip.stem), clip, str(row.get("caption") or "")))
    return entries
