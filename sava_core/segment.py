"""Temporal segmentation of real clips, and the map-style dataset whose items are the segments.

Rule. A clip of usable duration D seconds (the shorter of its video and audio tracks) read at
``fps`` has N = ceil(D * fps) output frame instants k / fps < D. A segment of L seconds holds
F = round(L * fps) frames and S = round(F / fps * sample_rate) audio samples; consecutive segments
start ``hop`` = round((L - overlap) * fps) frames apart, at frames 0, hop, 2 hop, ... Every start is
on the output frame grid, and the audio is cut at the same instant (start / fps, to the nearest
sample), so audio and video of a segment start within one video frame of each other (the video
frame shown is the source frame nearest to that instant). A segment is kept when all its frames
lie in the clip (start + F <= N); its audio may then run past the track's end by less than one
frame period, filled with zeros. The trailing part shorter than a segment is dropped
(``tail="drop"``), or covered by one extra segment ending at the last frame (``tail="shift"``,
which overlaps the previous segment more). A clip shorter than one segment (N < F) gives no
segment and is listed as skipped.

Indices. The dataset's item i is (clip, segment) in manifest order, clip by clip. Clips are probed
(:func:`sava_core.decode.probe`) when the split is first indexed; probe results are cached per file
(keyed by path, size and modification time) under the cache root, so the same files always give
the same indices, and a file that fails its probe is skipped (or, with ``strict``, a SavaError).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from sava_core.contracts import Clip
from sava_core.decode import DecodeSpec, MediaError, MediaInfo, Skip, decode_segment, probe, record_skip, segment_sizes
from sava_core.errors import SavaError
from sava_core.io import atomic_write_json

Tail = Literal["drop", "shift"]


@dataclass(frozen=True)
class Source:
    """One manifest row: a ``video`` file (with its sound unless ``audio`` names a separate file), a
    ``caption``, a stable ``id`` and JSON-able ``meta`` (label, YouTube id, ...)."""

    video: str
    audio: str | None
    caption: str
    id: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Segmentation:
    """Segment length ``segment`` and ``overlap`` in seconds, and the ``tail`` rule."""

    segment: float = 5.0
    overlap: float = 0.0
    tail: Tail = "drop"


def segment_starts(duration: float, fps: float, seg: Segmentation) -> list[int]:
    """Start frames (on the ``fps`` grid) of the segments of a ``duration``-second clip (module rule)."""
    frames = max(1, round(seg.segment * fps))
    hop = max(1, round((seg.segment - seg.overlap) * fps))
    available = math.ceil(duration * fps - 1e-6)
    if available < frames:
        return []
    starts = list(range(0, available - frames + 1, hop))
    if seg.tail == "shift" and starts[-1] + frames < available:
        starts.append(available - frames)
    return starts


class SegmentedMedia(torch.utils.data.Dataset):
    """Map-style dataset of :class:`Clip` segments; item i = ``items[i]`` = (source index, segment
    number within that clip, start frame on the ``spec.fps`` grid).

    ``skipped`` lists the clips left out while indexing (with the reason). ``__getitem__`` raises
    :class:`MediaError` when a clip that passed its probe fails to decode (a SavaError naming the
    file under ``strict``); :func:`sava_core.cache.encode_split` skips and records such items.
    """

    def __init__(self, sources: Sequence[Source], infos: Sequence[MediaInfo | None], spec: DecodeSpec,
                 seg: Segmentation, skipped: list[Skip], strict: bool = False):
        self.sources, self.infos, self.spec, self.seg = list(sources), list(infos), spec, seg
        self.skipped, self.strict = skipped, strict
        self.frames, self.samples = segment_sizes(seg.segment, spec)
        self.items: list[tuple[int, int, int]] = []
        for i, (source, info) in enumerate(zip(self.sources, self.infos)):
            if info is None:
                continue
            starts = segment_starts(info.duration, spec.fps, seg)
            if not starts:
                reason = f"shorter than one segment ({info.duration:.2f} s < {seg.segment} s)"
                if strict:
                    raise SavaError(f"{source.video}: {reason} (strict: true)")
                record_skip(self.skipped, source.video, reason)
            self.items.extend((i, j, s) for j, s in enumerate(starts))

    def __len__(self) -> int:
        return len(self.items)

    def path(self, index: int) -> str:
        """The media file of item ``index``."""
        return self.sources[self.items[index][0]].video

    def __getitem__(self, index: int) -> Clip:
        i, j, start = self.items[index]
        source, info = self.sources[i], self.infos[i]
        assert info is not None
        meta = {**source.meta, "id": source.id, "segment": j, "index": index}
        try:
            return decode_segment(source.video, source.audio, info, start, self.frames, self.spec, source.caption, meta)
        except MediaError as exc:
            if self.strict:
                raise SavaError(f"{exc.path}: {exc.reason} (strict: true)") from None
            raise


def _stat(path: str | None) -> list[int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def probe_sources(sources: Sequence[Source], *, cache_file: Path | None = None, strict: bool = False,
                  num_workers: int = 0) -> tuple[list[MediaInfo | None], list[Skip]]:
    """Probe every source (``num_workers`` threads; 0 = one); returns one :class:`MediaInfo` per
    source (None for a skipped one) and the skips. Results are reused from, and saved to,
    ``cache_file`` (JSON) for files whose size and modification time have not changed."""
    cached: dict[str, Any] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            cached = {}

    def one(source: Source) -> dict[str, Any]:
        key = f"{source.video}|{source.audio or ''}"
        stat = [_stat(source.video), _stat(source.audio)]
        hit = cached.get(key)
        if hit is not None and hit["stat"] == stat:
            return hit
        try:
            return {"stat": stat, "info": probe(source.video, source.audio).to_json()}
        except MediaError as exc:
            return {"stat": stat, "error": [exc.path, exc.reason]}

    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        results = list(pool.map(one, sources))
    if cache_file is not None:
        atomic_write_json(cache_file, cached | {f"{s.video}|{s.audio or ''}": r for s, r in zip(sources, results)})
    infos: list[MediaInfo | None] = []
    skips: list[Skip] = []
    for result in results:
        if "error" in result:
            path, reason = result["error"]
            if strict:
                raise SavaError(f"{path}: {reason} (strict: true; set strict: false to skip bad media)")
            record_skip(skips, path, reason)
            infos.append(None)
        else:
            infos.append(MediaInfo(**result["info"]))
    return infos, skips
