"""The latent cache: frozen-encoder outputs of a dataset split, computed once, stored as safetensors
shards and reused by every epoch, variant and seed that asks for the same thing.

Key. sha256 (first 16 hex digits) of the canonical JSON of: the cache format version; the split;
the dataset (its class, and ``dataset.fingerprint(split)`` when it has one: manifest content
hashes, preprocessing, media file sizes and times; otherwise its full parameters); each encoder
(class, parameters, latent width, frame or sample rate, and the sha256 of its state_dict tensors);
and ``key_extra`` (registered names, checkpoint ids, anything else the caller wants in the key).
Any change gives a new key, hence a rebuild; the old entry stays until ``sava cache clear``.

Layout. ``<root>/<key>/key.json`` (what was hashed), ``shard-00000.safetensors`` ... (items
[j * shard_size, (j + 1) * shard_size) of the split: ``video`` (n, Tv, Dv), ``audio`` (n, Ta, Da),
``index`` (n,) int64; captions in the metadata) and ``index.json``, the list of completed shards
and of skipped items. A shard is written to a temporary file and renamed; it counts only once
``index.json`` (also replaced atomically) lists it, so an interrupted run never reads a half-written
shard and resumes at the first unlisted shard. A lock file serialises runs building the same key.

Several processes (``accelerate launch``): the main process holds the lock and decides which shards
are missing; every process encodes its share of each missing shard's batches (batch k to process
k mod n; the batches are those one process encodes, so the latents are the same), the main process
gathers them and publishes the shard as above, and every process then reads the complete entry.
The cache root must be one directory all processes see (on several nodes: a shared file system).

Time axes. Latents are stored as the encoders return them; when the audio latent's T differs from
the video latent's, :func:`encode_split` linearly interpolates the audio sequence to the video's T
(``torch.nn.functional.interpolate``, ``align_corners=False``: both sequences span the same segment).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import torch
from pydantic import BaseModel
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from sava_core.contracts import AudioEncoder, Clip, Dataset, LatentSplit, VideoEncoder
from sava_core.decode import MediaError, Skip, write_skipped
from sava_core.errors import SavaError
from sava_core.io import atomic_write_json, atomic_write_with, canonical_hash
from sava_core.progress import progress

log = logging.getLogger("sava")

CACHE_VERSION = 1


def default_cache_root() -> Path:
    """``$SAVA_CACHE/latents`` (``$SAVA_CACHE`` defaults to ``~/.cache/sava``)."""
    return Path(os.environ.get("SAVA_CACHE") or Path.home() / ".cache" / "sava").expanduser() / "latents"


def resolve_root(root: str | Path | None) -> Path:
    """``root``, or the default cache root when None."""
    return Path(root).expanduser() if root is not None else default_cache_root()


def weights_hash(module: nn.Module) -> str:
    """sha256 over the module's state_dict: each tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _params(component: Any) -> Any:
    params = getattr(component, "params", None)
    return params.model_dump(mode="json") if isinstance(params, BaseModel) else None


def encoder_fingerprint(encoder: VideoEncoder | AudioEncoder) -> dict[str, Any]:
    """What an encoder's outputs depend on: class, parameters, width, rate and weights."""
    cls = type(encoder)
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "params": _params(encoder),
        "latent_dim": encoder.latent_dim,
        "rate": getattr(encoder, "frame_rate", None) or getattr(encoder, "sample_rate", None),
        "weights_sha256": weights_hash(encoder),
    }


def dataset_fingerprint(dataset: Dataset, split: str) -> dict[str, Any]:
    """The dataset's class and either its ``fingerprint(split)`` or, lacking one, its parameters."""
    cls = type(dataset)
    fingerprint = dataset.fingerprint(split)
    return {"class": f"{cls.__module__}:{cls.__qualname__}",
            **({"fingerprint": fingerprint} if fingerprint is not None else {"params": _params(dataset)})}


def cache_key(material: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``material`` (first 16 hex digits)."""
    return canonical_hash(material)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_index(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


class _Guarded(torch.utils.data.Dataset):
    """Wraps a media split: item i -> (i, Clip) or (i, Skip) when the media cannot be decoded."""

    def __init__(self, media: torch.utils.data.Dataset):
        self.media = media

    def __len__(self) -> int:
        return len(self.media)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, Clip | Skip]:
        try:
            return index, self.media[index]
        except MediaError as exc:
            return index, Skip(exc.path, exc.reason)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


def _encode(clips: list[Clip], video_encoder: VideoEncoder, audio_encoder: AudioEncoder) -> tuple[Tensor, Tensor]:
    """Encode clips of equal shapes as one batch (else one by one): (n, Tv, Dv), (n, Ta, Da) on the CPU."""
    if len({(tuple(c.video.shape), tuple(c.audio.shape)) for c in clips}) > 1:
        parts = [_encode([c], video_encoder, audio_encoder) for c in clips]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    outs = []
    audio = to_encoder_rate(torch.stack([c.audio for c in clips]), clips[0].sample_rate, audio_encoder)
    for encoder, tensor in ((video_encoder, torch.stack([c.video for c in clips])), (audio_encoder, audio)):
        param = next(encoder.parameters(), None)
        z = encoder.encode(tensor.to(param.device if param is not None else "cpu"))
        if z.ndim != 3 or z.shape[0] != len(clips):
            raise SavaError(f"{type(encoder).__name__}.encode returned {tuple(z.shape)}; the contract is (B, T, D)")
        outs.append(z.detach().cpu().contiguous())
    return outs[0], outs[1]


def check_rates(media: Any, video_encoder: VideoEncoder, audio_encoder: AudioEncoder | None = None) -> None:
    """The dataset must decode video at the video encoder's frame rate, and audio at the audio
    encoder's sample rate when one is given (a SavaError names both)."""
    spec = getattr(media, "spec", None)
    if spec is not None:
        fps, rate = spec.fps, spec.sample_rate
    elif len(media):
        fps, rate = media[0].fps, media[0].sample_rate
    else:
        return
    if not math.isclose(fps, video_encoder.frame_rate, rel_tol=1e-6):
        raise SavaError(f"the dataset decodes video at {fps} fps, the video encoder "
                        f"{type(video_encoder).__name__} expects {video_encoder.frame_rate} fps: set the dataset's fps")
    if audio_encoder is not None and rate != audio_encoder.sample_rate:
        raise SavaError(f"the dataset decodes audio at {rate} Hz, the audio encoder "
                        f"{type(audio_encoder).__name__} expects {audio_encoder.sample_rate} Hz: "
                        "set the dataset's sample_rate")


def to_encoder_rate(audio: Tensor, rate: int, encoder: AudioEncoder) -> Tensor:
    """Audio (B, C, S) at ``rate`` Hz resampled to ``encoder.sample_rate`` with
    :func:`torchaudio.functional.resample` (windowed sinc, its defaults); unchanged if equal."""
    if rate == encoder.sample_rate:
        return audio
    import torchaudio

    return torchaudio.functional.resample(audio, rate, encoder.sample_rate)


def encode_split(dataset: Dataset, split: str, video_encoder: VideoEncoder, audio_encoder: AudioEncoder, *,
                 cache_root: str | Path | None = None, key_extra: dict[str, Any] | None = None,
                 batch_size: int = 8, num_workers: int = 0, shard_size: int = 512,
                 run_dir: str | Path | None = None) -> LatentSplit:
    """The latents of ``dataset.media(split)`` under ``video_encoder`` / ``audio_encoder``, from the
    cache when present, else encoded (in ``num_workers`` DataLoader worker processes, batches of
    ``batch_size``), stored in shards of ``shard_size`` items, and returned.

    Returns a :class:`LatentSplit` with video (N, T, Dv) and audio (N, T, Da) (audio interpolated to
    the video's T when they differ) and captions; N counts the items that decoded. Items that fail
    to decode are skipped, logged and recorded; with ``run_dir`` every skip of the split (probe and
    decode) is written to ``run_dir/skipped.csv``. The encoders' ``frame_rate`` / ``sample_rate``
    must equal the dataset's decoding rates (a SavaError otherwise). Under several processes every
    process calls it and gets the whole split (they share the encoding out; see the module docstring).
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    media = dataset.media(split)
    check_rates(media, video_encoder)
    material = {
        "version": CACHE_VERSION,
        "resampler": "torchaudio.functional.resample",
        "split": split,
        "dataset": dataset_fingerprint(dataset, split),
        "video_encoder": encoder_fingerprint(video_encoder),
        "audio_encoder": encoder_fingerprint(audio_encoder),
        "extra": key_extra or {},
    }
    key = cache_key(material)
    directory = resolve_root(cache_root) / key
    n_items = len(media)
    state = PartialState()
    main = state.is_main_process
    index: dict[str, Any] | None = None
    with _locked(directory) if main else nullcontext():
        todo: list[int] = []
        if main:
            index, todo = _open_entry(directory, material, key, split, n_items, shard_size)
        if state.num_processes > 1:
            main_key, index, todo = broadcast_object_list([key, index, todo])
            if main_key != key:
                raise SavaError(f"latent cache: this process keys the {split} split {key}, the main process "
                                f"{main_key}; every process must see the same data and encoder weights")
        assert index is not None
        if todo:
            if main:
                log.info("latent cache %s: encoding %d of %d item(s) of %s", key,
                         sum(min(shard_size, n_items - s) for s in todo), n_items, split)
            _fill(directory, index, todo, media, video_encoder, audio_encoder, batch_size, num_workers, shard_size)
        if main:
            index["complete"] = True
            atomic_write_json(directory / "index.json", index)
    if state.num_processes > 1:
        index = broadcast_object_list([index])[0]  # the main process's, once it has published everything
        if not main and not (directory / "index.json").is_file():
            raise SavaError(f"latent cache {directory}: the main process wrote it, but this process cannot see it; "
                            "give every process the same cache root (SAVA_CACHE) on a file system they share")
    assert index is not None
    skips = list(getattr(media, "skipped", [])) + [Skip(s["path"], s["reason"]) for s in index["skipped"]]
    if skips:
        log.warning("%s: %d file(s) or segment(s) skipped%s", split, len(skips),
                    f"; listed in {Path(run_dir) / 'skipped.csv'}" if run_dir is not None else "")
    if run_dir is not None:
        write_skipped(run_dir, skips)
    return _load(directory, index)


def _open_entry(directory: Path, material: dict[str, Any], key: str, split: str, n_items: int,
                shard_size: int) -> tuple[dict[str, Any], list[int]]:
    """The entry's index (a new one when missing or made for another size) with the shards that
    are listed and intact, and the starts of the shards still to encode. Under the lock."""
    if not (directory / "key.json").is_file():
        atomic_write_json(directory / "key.json", material)
    index = _read_index(directory)
    if index is None or index.get("n_items") != n_items or index.get("shard_size") != shard_size:
        index = {"version": CACHE_VERSION, "key": key, "split": split, "n_items": n_items,
                 "shard_size": shard_size, "shards": [], "skipped": [], "complete": False,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for stray in directory.glob(".*.tmp"):  # left by a killed writer; never listed, safe to drop
        stray.unlink()
    done = {s["start"] for s in index["shards"]
            if (directory / s["file"]).is_file() and (directory / s["file"]).stat().st_size == s["bytes"]}
    index["shards"] = [s for s in index["shards"] if s["start"] in done]
    index["skipped"] = [s for s in index["skipped"] if s["index"] // shard_size * shard_size in done]
    return index, [start for start in range(0, n_items, shard_size) if start not in done]


def _fill(directory: Path, index: dict[str, Any], todo: list[int], media: Any, video_encoder: VideoEncoder,
          audio_encoder: AudioEncoder, batch_size: int, num_workers: int, shard_size: int) -> None:
    """Encode the shards starting at ``todo``, this process's share of each one's batches, and
    publish each shard (file, then index; main process) as it completes. Every process calls it."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    n_items = index["n_items"]
    mine = {s: [list(range(b, min(b + batch_size, s + shard_size, n_items)))
                for b in range(s, min(s + shard_size, n_items), batch_size)][state.process_index :: state.num_processes]
            for s in todo}
    loader = torch.utils.data.DataLoader(_Guarded(media), batch_sampler=[b for s in todo for b in mine[s]],
                                         num_workers=num_workers, collate_fn=_as_list,
                                         generator=torch.Generator())  # not the global one: a cold cache
    # would otherwise shift every seed drawn after it
    modes = [m.training for m in (video_encoder, audio_encoder)]
    video_encoder.eval(), audio_encoder.eval()
    try:
        with progress(f"encoding {index['split']}", sum(len(b) for s in todo for b in mine[s]),
                      unit="clip") as bar, torch.no_grad():
            batches = iter(loader)
            for start in todo:
                parts = []
                for batch in islice(batches, len(mine[start])):
                    parts.append(_encode_batch(batch, video_encoder, audio_encoder))
                    bar.advance(len(batch))
                parts = sorted(gather_object(parts), key=lambda p: p["first"])
                if state.is_main_process:
                    _publish(directory, index, start, parts)
    finally:
        for module, mode in zip((video_encoder, audio_encoder), modes):
            module.train(mode)


def _encode_batch(batch: list[tuple[int, Clip | Skip]], video_encoder: VideoEncoder,
                  audio_encoder: AudioEncoder) -> dict[str, Any]:
    """One loaded batch encoded: its first item, the latents and items of the clips that decoded,
    their captions, and the skipped items."""
    clips = [(i, item) for i, item in batch if not isinstance(item, Skip)]
    part: dict[str, Any] = {
        "first": batch[0][0], "index": [i for i, _ in clips], "captions": [c.caption for _, c in clips],
        "skipped": [{"index": i, "path": item.path, "reason": item.reason} for i, item in batch
                    if isinstance(item, Skip)],
    }
    if clips:
        part["video"], part["audio"] = _encode([c for _, c in clips], video_encoder, audio_encoder)
    return part


def _publish(directory: Path, index: dict[str, Any], start: int, parts: list[dict[str, Any]]) -> None:
    """Write the shard at ``start`` from its encoded batches (in item order) atomically, then list it
    and its skipped items in ``index.json``."""
    name = f"shard-{start // index['shard_size']:05d}.safetensors"
    for skip in (s for p in parts for s in p["skipped"]):
        log.warning("skipping %s: %s", skip["path"], skip["reason"])
        index["skipped"].append(skip)
    encoded = [p for p in parts if "video" in p]
    rows = [i for p in parts for i in p["index"]]
    if encoded:
        tensors = {"video": torch.cat([p["video"] for p in encoded]), "audio": torch.cat([p["audio"] for p in encoded]),
                   "index": torch.tensor(rows, dtype=torch.int64)}
    else:  # every item of the shard was skipped
        tensors = {"index": torch.zeros(0, dtype=torch.int64)}
    metadata = {"captions": json.dumps([c for p in parts for c in p["captions"]])}
    atomic_write_with(directory / name, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    index["shards"] = sorted([s for s in index["shards"] if s["start"] != start] +
                             [{"file": name, "start": start, "rows": len(rows),
                               "bytes": (directory / name).stat().st_size}], key=lambda s: s["start"])
    index["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_json(directory / "index.json", index)


def align_time(audio: Tensor, steps: int) -> Tensor:
    """Audio latents (N, Ta, Da) linearly interpolated along time to (N, ``steps``, Da)."""
    if audio.shape[1] == steps:
        return audio
    return torch.nn.functional.interpolate(audio.transpose(1, 2).float(), size=steps, mode="linear",
                                           align_corners=False).transpose(1, 2).to(audio.dtype).contiguous()


def _load(directory: Path, index: dict[str, Any]) -> LatentSplit:
    videos, audios, captions = [], [], []
    for shard in index["shards"]:
        with safe_open(str(directory / shard["file"]), framework="pt") as fh:
            if shard["rows"]:
                videos.append(fh.get_tensor("video"))
                audios.append(fh.get_tensor("audio"))
            captions.extend(json.loads(fh.metadata()["captions"]))
    if not videos:
        raise SavaError(f"split {index['split']!r}: no item could be decoded ({len(index['skipped'])} skipped "
                        f"while encoding, {index['n_items']} indexed); see skipped.csv")
    video = torch.cat(videos)
    return LatentSplit(video, align_time(torch.cat(audios), video.shape[1]), captions=captions)


# ----------------------------------------------------------------------------------- maintenance


def cache_info(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per cache entry: key, split, dataset and encoder classes, items, shards, skipped,
    completeness, size in bytes and last update."""
    rows = []
    base = resolve_root(root)
    for directory in sorted(p for p in base.glob("*") if (p / "key.json").is_file()):
        try:
            material = json.loads((directory / "key.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        index = _read_index(directory) or {}
        rows.append({
            "key": directory.name,
            "split": material.get("split"),
            "dataset": material.get("dataset", {}).get("class"),
            "video_encoder": material.get("video_encoder", {}).get("class"),
            "audio_encoder": material.get("audio_encoder", {}).get("class"),
            "items": sum(s["rows"] for s in index.get("shards", [])),
            "shards": len(index.get("shards", [])),
            "skipped": len(index.get("skipped", [])),
            "complete": bool(index.get("complete")),
            "bytes": sum(f.stat().st_size for f in directory.iterdir() if f.is_file()),
            "updated": index.get("updated") or index.get("created"),
        })
    return rows


def cache_clear(root: str | Path | None = None, key: str | None = None) -> list[str]:
    """Delete the entry whose key starts with ``key`` (it must be unique), or, without ``key``,
    every entry and the probe cache. Returns the deleted keys (and ``probes``)."""
    base = resolve_root(root)
    if not base.is_dir():
        return []
    if key is None:
        removed = [p.name for p in base.iterdir() if p.is_dir() and ((p / "key.json").is_file() or p.name == "probes")]
    else:
        removed = [
            p.name for p in base.iterdir() if p.is_dir() and p.name.startswith(key) and (p / "key.json").is_file()
        ]
        if not removed:
            raise SavaError(f"no cache entry {key!r} in {base}; `sava cache info` lists them")
        if len(removed) > 1:
            raise SavaError(f"key {key!r} is ambiguous in {base}: {', '.join(sorted(removed))}")
    for name in removed:
        shutil.rmtree(base / name)
    return sorted(removed)
