"""Parameters of the real-media datasets (torch-free). See docs/data.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sava_core.config import StrictModel


class MediaParams(StrictModel):
    """Decoding, segmentation and robustness settings shared by every real-media dataset."""

    manifest: str = Field(description="the dataset's manifest file (or, for audiocaps, a folder of CSVs)")
    media_root: str | None = Field(None, description="folder of the media files (default: the manifest's folder)")
    fps: float = Field(8.0, gt=0, description="output video frame rate (frames per second)")
    sample_rate: int = Field(16000, ge=1000, description="output audio sample rate (Hz)")
    height: int | None = Field(None, ge=2, description="output frame height in pixels (None: source size)")
    width: int | None = Field(None, ge=2, description="output frame width in pixels (None: source size)")
    resize: Literal["crop", "stretch"] = Field(
        "crop", description="crop: scale the shorter side to fit, cut the centre; stretch: scale to exactly HxW"
    )
    audio: Literal["mono", "stereo"] = Field("mono", description="output audio channels")
    segment: float = Field(5.0, ge=1, le=10, description="segment length in seconds (paper: 5)")
    overlap: float = Field(0.0, ge=0, description="overlap of consecutive segments in seconds (< segment)")
    tail: Literal["drop", "shift"] = Field(
        "drop",
        description="a trailing part shorter than a segment: drop it, or add a last segment ending at the clip's end",
    )
    strict: bool = Field(False, description="bad media is an error naming the file instead of a logged, listed skip")
    num_workers: int = Field(0, ge=0, description="probe threads and DataLoader worker processes (0: in-process)")
    cache_root: str | None = Field(
        None, description="where probe results are cached "
        "(default: $SAVA_CACHE/latents; SAVA_CACHE defaults to ~/.cache/sava)")

    @model_validator(mode="after")
    def _consistent(self) -> MediaParams:
        if self.overlap >= self.segment:
            raise ValueError(f"overlap {self.overlap} s must be shorter than segment {self.segment} s")
        if (self.height is None) != (self.width is None):
            raise ValueError("give both height and width, or neither (source size)")
        return self


class FolderParams(MediaParams):
    """Any folder of clips listed in a CSV (with a header) or JSONL manifest with fields ``video``
    (required), ``audio`` (a separate sound file), ``caption``, ``split`` and ``id``; other fields
    go to each clip's meta. Paths are relative to ``media_root`` (default: the manifest's folder)."""

    default_split: str = Field("train", description="split of rows without a split value")


class VGGSoundParams(MediaParams):
    """The official VGGSound CSV (no header: YouTube id, start second, label, split) and a local
    folder of the downloaded clips."""

    filename: str = Field(
        "{ytid}_{start:06d}.mp4", description="media file name pattern; fields: ytid, start (int s), label, split"
    )
    captions: str | None = Field(
        None, description="CSV (id,caption) or JSONL ({id, caption}) keyed by media file stem; default caption = label"
    )
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="fraction of train clips moved to a val split (by a stable hash of the YouTube id)"
    )


class AudioCapsParams(MediaParams):
    """The official AudioCaps CSVs (header audiocap_id,youtube_id,start_time,caption), one per split
    (``manifest``: a folder holding train.csv / val.csv / test.csv, or one such CSV), and a local
    folder of the downloaded clips."""

    filename: str = Field(
        "{ytid}_{start:06d}.mp4", description="media file name pattern; fields: ytid, start (int s), audiocap_id"
    )
