"""Clips on disk for evaluation: a folder (``*.mp4`` with audio, or ``*.wav`` / ``*.flac`` for
audio-only metrics; an optional ``<stem>.txt`` beside a clip holds its caption) or a manifest
(``.csv`` with a header, or ``.jsonl``) with the columns ``path`` (relative to the manifest), and
optionally ``caption`` and ``id``. A clip's id is its ``id`` column or its file stem; paired metrics
(KL) match generated and reference clips by id."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sava_core.errors import SavaError
from sava_core.io import not_regular, require_file

VIDEO_SUFFIXES = (".mp4",)
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class MediaItem:
    """One clip to evaluate: ``video`` (F, 3, H, W) in [0, 1] at ``fps`` and/or ``audio`` (C, S) in
    [-1, 1] at ``sample_rate`` Hz (``None`` for a modality the file lacks), its caption and id."""

    id: str
    video: Tensor | None = None
    fps: float | None = None
    audio: Tensor | None = None
    sample_rate: int | None = None
    caption: str = ""
    source: str = ""


def read_item(path: Path, id: str, caption: str = "") -> MediaItem:
    """Decode one file: an mp4 (video and audio, :func:`sava_core.media_io.read_mp4`) or an audio file."""
    suffix = path.suffix.lower()
    require_file(path, "clip")
    if suffix in VIDEO_SUFFIXES:
        from sava_core.media_io import read_mp4

        try:
            video, audio, fps, sample_rate = read_mp4(path)
        except (IndexError, ValueError, OSError) as err:
            raise SavaError(f"cannot read {path} as an mp4 with one video and one audio stream: {err}") from None
        return MediaItem(id, video, fps, audio, sample_rate, caption, str(path))
    if suffix in AUDIO_SUFFIXES:
        import soundfile

        try:
            data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (soundfile.SoundFileError, RuntimeError) as err:
            raise SavaError(f"cannot read {path} as audio: {err}; replace or remove the file") from None
        return MediaItem(id, None, None, torch.from_numpy(data.T.copy()), int(sample_rate), caption, str(path))
    raise SavaError(f"clip {path}: unsupported file type {suffix!r}; use {', '.join(VIDEO_SUFFIXES + AUDIO_SUFFIXES)}")


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

    def __getitem__(self, index: int) -> MediaItem:  # type: ignore[override]
        e = self._entries[index]
        return read_item(e.path, e.id, e.caption)

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
