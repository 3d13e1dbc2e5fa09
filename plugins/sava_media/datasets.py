"""Real audio-visual datasets: any folder of clips, VGGSound and AudioCaps (see docs/data.md).

Each parses its manifest when built (a SavaError lists every malformed row), probes a split's
files the first time :meth:`MediaDataset.media` asks for it (results cached per file), and serves
the split's segments as a :class:`~sava_core.segment.SegmentedMedia`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from abc import abstractmethod
from pathlib import Path
from typing import Any

from sava_core.contracts import Dataset
from sava_core.decode import DecodeSpec, Skip, check_media
from sava_core.errors import SavaError
from sava_core.io import file_sha256, require_file
from sava_core.segment import Segmentation, SegmentedMedia, Source, probe_sources
from sava_media.params import AudioCapsParams, FolderParams, MediaParams, VGGSoundParams

STANDARD_SPLITS = ("train", "val", "test")
_MAX_LISTED = 20


def _raise_problems(source: Path, problems: list[str]) -> None:
    if problems:
        listed = problems[:_MAX_LISTED] + (
            [f"... and {len(problems) - _MAX_LISTED} more"] if len(problems) > _MAX_LISTED else [])
        raise SavaError(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in listed))


def _text(path: Path, what: str = "manifest") -> io.StringIO:
    """A manifest or caption file's text (UTF-8), or a SavaError naming the file and the bad byte;
    anything but a regular file (a device, a pipe, a folder) is refused before it is read."""
    try:
        return io.StringIO(require_file(path, what).read_bytes().decode("utf-8"), newline="")
    except UnicodeDecodeError as err:
        raise SavaError(f"{path}: not UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r}); "
                        "save it as UTF-8") from None


def _read_csv(path: Path, what: str = "manifest") -> list[dict[str, str]]:
    return list(csv.DictReader(_text(path, what)))


def _read_jsonl(path: Path, what: str = "manifest") -> list[dict[str, Any]]:
    rows, problems = [], []
    with _text(path, what) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {n}: not JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {n}: not a JSON object")
                continue
            rows.append(row)
    _raise_problems(path, problems)
    return rows


class MediaDataset(Dataset):
    """Base of the real-media datasets: a manifest of :class:`Source` rows per split, decoded and
    segmented per :class:`~sava_media.params.MediaParams`."""

    Params = MediaParams
    params: MediaParams

    def __init__(self, params: MediaParams):
        self.params = params
        self.manifest = Path(params.manifest)
        if not self.manifest.exists():
            raise SavaError(f"manifest not found: {self.manifest}")
        self.media_root = Path(params.media_root) if params.media_root else (
            self.manifest if self.manifest.is_dir() else self.manifest.parent)
        if not self.media_root.is_dir():
            raise SavaError(f"media_root is not a folder: {self.media_root}")
        self._sources = self.read_manifest()
        self.splits = tuple(dict.fromkeys([*STANDARD_SPLITS, *self._sources]))
        self._media: dict[str, SegmentedMedia] = {}

    @abstractmethod
    def read_manifest(self) -> dict[str, list[Source]]:
        """Parse the manifest into sources by split; a SavaError lists every malformed row."""

    @abstractmethod
    def manifest_files(self) -> list[Path]:
        """The files whose content defines the dataset (hashed into the latent cache key)."""

    @property
    def spec(self) -> DecodeSpec:
        p = self.params
        return DecodeSpec(p.fps, p.sample_rate, p.height, p.width, p.resize, 1 if p.audio == "mono" else 2)

    @property
    def segmentation(self) -> Segmentation:
        return Segmentation(self.params.segment, self.params.overlap, self.params.tail)

    def resolve(self, name: str) -> str:
        """A manifest path, relative to the media root unless absolute."""
        path = Path(name).expanduser()
        return str(path if path.is_absolute() else self.media_root / path)

    def sources(self, split: str) -> list[Source]:
        """The manifest rows of ``split`` (before probing)."""
        if split not in self.splits:
            raise SavaError(f"{type(self).__name__}: no split {split!r}; splits are {', '.join(self.splits)}")
        return self._sources.get(split, [])

    def _probe_cache(self) -> Path:
        from sava_core.cache import default_cache_root

        root = Path(self.params.cache_root).expanduser() if self.params.cache_root else default_cache_root()
        name = hashlib.sha256(f"{type(self).__name__}|{self.manifest.resolve()}".encode()).hexdigest()[:16]
        return root / "probes" / f"{name}.json"

    def media(self, split: str) -> SegmentedMedia:
        """The segments of ``split``; its clips are probed on the first call (see docs/data.md)."""
        if split not in self._media:
            sources = self.sources(split)
            infos, skipped = probe_sources(sources, cache_file=self._probe_cache(), strict=self.params.strict,
                                           num_workers=self.params.num_workers)
            self._media[split] = SegmentedMedia(sources, infos, self.spec, self.segmentation, skipped,
                                                strict=self.params.strict)
        return self._media[split]

    def fingerprint(self, split: str) -> dict[str, Any]:
        """What the split's latents depend on: manifest content hashes, the preprocessing, and each
        media file's path, size and modification time."""
        media = self.media(split)
        files = hashlib.sha256()
        for s in media.sources:
            for path in (s.video, s.audio):
                if path is not None:
                    st = Path(path).stat() if Path(path).exists() else None
                    files.update(f"{path}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
        return {
            "manifest_sha256": {str(p): file_sha256(p) for p in self.manifest_files()},
            "preprocessing": {**vars(self.spec), **vars(self.segmentation)},
            "files_sha256": files.hexdigest(),
        }

    def check(self) -> list[Skip]:
        """Every problem of every clip in every split (full decode, no cache), for ``sava data check``;
        a clip with a separate audio file is named "video + audio"."""
        problems: list[Skip] = []
        seen: set[tuple[str, str | None]] = set()
        for split in self.splits:
            for source in self.sources(split):
                if (source.video, source.audio) in seen:
                    continue
                seen.add((source.video, source.audio))
                name = source.video if source.audio is None else f"{source.video} + {source.audio}"
                problems.extend(Skip(name, reason) for reason in check_media(source.video, source.audio))
        return problems


class FolderDataset(MediaDataset):
    """Any folder of clips listed in a CSV or JSONL manifest (fields: video, audio, caption, split, id)."""

    Params = FolderParams
    params: FolderParams

    def manifest_files(self) -> list[Path]:
        return [self.manifest]

    def read_manifest(self) -> dict[str, list[Source]]:
        suffix = self.manifest.suffix.lower()
        if suffix == ".csv":
            rows: list[dict[str, Any]] = _read_csv(self.manifest)
        elif suffix in (".jsonl", ".json"):
            rows = _read_jsonl(self.manifest)
        else:
            raise SavaError(f"{self.manifest}: a folder manifest is .csv (with a header) or .jsonl, not {suffix!r}")
        out: dict[str, list[Source]] = {}
        problems = []
        for n, row in enumerate(rows, 1):
            video = row.get("video")
            if not video:
                problems.append(f"row {n}: no 'video' field (fields: {', '.join(row) or 'none'})")
                continue
            audio = row.get("audio") or None
            known = {"video", "audio", "caption", "split", "id"}
            source = Source(self.resolve(str(video)), self.resolve(str(audio)) if audio else None,
                            str(row.get("caption") or ""), str(row.get("id") or video),
                            {k: v for k, v in row.items() if k not in known})
            out.setdefault(str(row.get("split") or self.params.default_split), []).append(source)
        _raise_problems(self.manifest, problems)
        return out


def _read_captions(path: Path) -> dict[str, str]:
    """id -> caption from a CSV with columns id,caption or a JSONL of {"id", "caption"} objects."""
    what = "captions file"
    rows = _read_jsonl(path, what) if path.suffix.lower() in (".jsonl", ".json") else _read_csv(path, what)
    if rows and not {"id", "caption"} <= set(rows[0]):
        raise SavaError(f"{path}: captions need the fields 'id' and 'caption', found {', '.join(rows[0])}")
    return {str(r["id"]): str(r["caption"]) for r in rows}


def _filename(pattern: str, manifest: Path, **fields: Any) -> str:
    try:
        return pattern.format(**fields)
    except (KeyError, ValueError, IndexError) as exc:
        raise SavaError(f"{manifest}: bad filename pattern {pattern!r} ({exc}); "
                        f"fields are {', '.join(fields)}") from None


class VGGSound(MediaDataset):
    """VGGSound: the official CSV (ytid, start second, label, split; no header) and local clips."""

    Params = VGGSoundParams
    params: VGGSoundParams

    def manifest_files(self) -> list[Path]:
        return [self.manifest] + ([Path(self.params.captions)] if self.params.captions else [])

    def read_manifest(self) -> dict[str, list[Source]]:
        captions = _read_captions(Path(self.params.captions)) if self.params.captions else {}
        out: dict[str, list[Source]] = {}
        problems = []
        with _text(self.manifest) as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row:
                    continue
                if len(row) != 4:
                    problems.append(f"line {n}: {len(row)} fields, expected 4 (ytid, start, label, split)")
                    continue
                ytid, start_text, label, split = (x.strip() for x in row)
                try:
                    start = int(float(start_text))
                except ValueError:
                    problems.append(f"line {n}: start {start_text!r} is not a number of seconds")
                    continue
                if split == "train" and self.params.val_fraction:
                    h = int.from_bytes(hashlib.blake2b(ytid.encode(), digest_size=8).digest(), "little") / 2**64
                    split = "val" if h < self.params.val_fraction else split
                name = _filename(self.params.filename, self.manifest, ytid=ytid, start=start, label=label, split=split)
                stem = Path(name).stem
                out.setdefault(split, []).append(Source(self.resolve(name), None, captions.get(stem, label), stem,
                                                        {"ytid": ytid, "start_time": start, "label": label}))
        _raise_problems(self.manifest, problems)
        return out


class AudioCaps(MediaDataset):
    """AudioCaps: the official per-split CSVs (audiocap_id, youtube_id, start_time, caption) and local
    clips. Rows of the same clip (val and test have five captions each) make one source: the first
    caption is its caption, all of them are in ``meta["captions"]``."""

    Params = AudioCapsParams
    params: AudioCapsParams

    def manifest_files(self) -> list[Path]:
        if self.manifest.is_dir():
            return [self.manifest / f"{s}.csv" for s in STANDARD_SPLITS if (self.manifest / f"{s}.csv").exists()]
        return [self.manifest]

    def read_manifest(self) -> dict[str, list[Source]]:
        files = self.manifest_files()
        if not files:
            raise SavaError(f"{self.manifest}: no train.csv, val.csv or test.csv in this folder")
        out: dict[str, list[Source]] = {}
        for path in files:
            if path.stem not in STANDARD_SPLITS:
                raise SavaError(f"{path}: an AudioCaps CSV is named after its split (train.csv, val.csv, test.csv)")
            rows = _read_csv(path)
            needed = {"audiocap_id", "youtube_id", "start_time", "caption"}
            if rows and not needed <= set(rows[0]):
                raise SavaError(f"{path}: missing column(s) {', '.join(sorted(needed - set(rows[0])))}")
            clips: dict[tuple[str, int], dict[str, Any]] = {}
            problems = []
            for n, row in enumerate(rows, 2):
                try:
                    start = int(float(row["start_time"]))
                except (TypeError, ValueError):
                    problems.append(f"line {n}: start_time {row['start_time']!r} is not a number of seconds")
                    continue
                clip = clips.setdefault((row["youtube_id"], start), {"ids": [], "captions": [], "first": row})
                clip["ids"].append(row["audiocap_id"])
                clip["captions"].append(row["caption"])
            _raise_problems(path, problems)
            sources = []
            for (ytid, start), clip in clips.items():
                name = _filename(self.params.filename, path, ytid=ytid, start=start,
                                 audiocap_id=clip["first"]["audiocap_id"])
                sources.append(Source(self.resolve(name), None, clip["captions"][0], Path(name).stem,
                                      {"ytid": ytid, "start_time": start, "audiocap_ids": clip["ids"],
                                       "captions": clip["captions"]}))
            out[path.stem] = sources
        return out
