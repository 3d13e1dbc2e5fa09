"""The latent cache: reuse without re-encoding, rebuild on any key change, interrupted shards, skips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import typer
from pydantic import Field
from torch import nn
from typer.testing import CliRunner

from sava_cli.data_cmd import cache_app
from sava_core.cache import cache_clear, cache_info, encode_split, weights_hash
from sava_core.config import StrictModel
from sava_core.contracts import AudioEncoder, Clip, Dataset, VideoEncoder
from sava_core.decode import MediaError
from sava_core.errors import SavaError
from sava_core.media_io import write_mp4
from sava_core.registry import get_registries


class TinyParams(StrictModel):
    scale: float = 1.0
    seed: int = Field(0, description="seeds the Linear's weights")


class TinyVideoEncoder(VideoEncoder):
    """Frames mean-pooled over pixels, through a seeded Linear(3, 4), pairs of frames averaged:
    (B, F, 3, H, W) -> (B, F // 2, 4)."""

    Params = TinyParams

    def __init__(self, params: TinyParams, frame_rate: float = 8.0, fail_on_call: int | None = None):
        super().__init__()
        self.params, self.latent_dim, self.frame_rate = params, 4, frame_rate
        self.proj = nn.Linear(3, 4)
        g = torch.Generator().manual_seed(params.seed)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(4, 3, generator=g))
            self.proj.bias.copy_(torch.randn(4, generator=g))
        self.calls, self.fail_on_call = 0, fail_on_call

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("interrupted on purpose")
        z = self.proj(video.mean((3, 4))) * self.params.scale
        return z.unflatten(1, (-1, 2)).mean(2)


class TinyAudioEncoder(AudioEncoder):
    """Mono audio in 125 ms windows -> (mean, RMS, peak): (B, C, S) -> (B, S // 1000, 3) at 8 kHz."""

    Params = TinyParams

    def __init__(self, params: TinyParams, sample_rate: int = 8000):
        super().__init__()
        self.params, self.latent_dim, self.sample_rate = params, 3, sample_rate
        self.calls = 0

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        w = audio.mean(1).unflatten(1, (-1, 1000))
        return torch.stack([w.mean(2), w.pow(2).mean(2).sqrt(), w.abs().amax(2)], -1) * self.params.scale


def encoders(**params) -> tuple[TinyVideoEncoder, TinyAudioEncoder]:
    return TinyVideoEncoder(TinyParams(**params)), TinyAudioEncoder(TinyParams(**params))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 2-second clips (different colours and tones) and one zero-byte file."""
    root = tmp_path_factory.mktemp("cache_media")
    rows = []
    for i in range(3):
        video = torch.full((24, 3, 16, 16), 0.2 + 0.3 * i)
        t = torch.arange(32000) / 16000
        audio = (0.3 * torch.sin(2 * torch.pi * (220 * (i + 1)) * t)).unsqueeze(0)
        write_mp4(root / f"clip{i}.mp4", video, 12, audio, 16000)
        rows.append({"video": f"clip{i}.mp4", "caption": f"clip {i}"})
    (root / "broken.mp4").write_bytes(b"")
    rows.append({"video": "broken.mp4", "caption": "zero bytes"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


def folder(manifest: Path, tmp_path: Path, **params):
    base = {"manifest": str(manifest), "fps": 8, "sample_rate": 8000, "segment": 1.0,
            "cache_root": str(tmp_path / "probes")}
    return get_registries()["dataset"].build("folder", {**base, **params})


def test_a_second_pass_reads_the_cache_and_does_not_encode(manifest, tmp_path):
    root = tmp_path / "cache"
    v, a = encoders()
    first = encode_split(folder(manifest, tmp_path), "train", v, a, cache_root=root, batch_size=2, shard_size=4,
                         num_workers=2, run_dir=tmp_path / "run")
    assert first.video.shape == (6, 4, 4)  # 3 clips x 2 one-second segments; T = 8 frames / 2
    assert first.audio.shape == (6, 4, 3)  # 8 windows interpolated to the video's 4 steps
    assert first.captions == ["clip 0", "clip 0", "clip 1", "clip 1", "clip 2", "clip 2"]
    assert v.calls == a.calls == 3
    with open(tmp_path / "run" / "skipped.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(Path(r["path"]).name, r["reason"]) for r in rows] == [("broken.mp4", "empty file (0 bytes)")]

    v2, a2 = encoders()
    again = encode_split(folder(manifest, tmp_path, num_workers=1, strict=False), "train", v2, a2,
                         cache_root=root, batch_size=3, shard_size=4)
    assert v2.calls == a2.calls == 0
    assert torch.equal(again.video, first.video) and torch.equal(again.audio, first.audio)
    assert again.captions == first.captions
    (row,) = cache_info(root)
    assert row["items"] == 6 and row["shards"] == 2 and row["complete"] and row["split"] == "train"
    assert row["video_encoder"].endswith("TinyVideoEncoder")


def test_any_change_of_the_key_rebuilds(manifest, tmp_path):
    root = tmp_path / "cache"
    ds = folder(manifest, tmp_path)
    encode_split(ds, "train", *encoders(), cache_root=root)
    changes = {
        "encoder params": (ds, encoders(scale=2.0), None),
        "encoder weights": (ds, encoders(seed=1), None),
        "preprocessing": (folder(manifest, tmp_path, segment=2.0), encoders(), None),
        "key_extra": (ds, encoders(), {"pretrained": "other"}),
    }
    for what, (dataset, (v, a), extra) in changes.items():
        encode_split(dataset, "train", v, a, cache_root=root, key_extra=extra)
        assert v.calls > 0 and a.calls > 0, what
    assert len(cache_info(root)) == 5
    v, a = encoders(scale=2.0)
    encode_split(ds, "train", v, a, cache_root=root)
    assert v.calls == 0
    assert weights_hash(encoders()[0]) == weights_hash(encoders()[0]) != weights_hash(encoders(seed=1)[0])


def test_an_interrupted_shard_is_never_read(manifest, tmp_path):
    root = tmp_path / "cache"
    ds = folder(manifest, tmp_path)
    v, a = TinyVideoEncoder(TinyParams(), fail_on_call=2), TinyAudioEncoder(TinyParams())
    with pytest.raises(KeyboardInterrupt):
        encode_split(ds, "train", v, a, cache_root=root, batch_size=2, shard_size=2)
    (entry,) = [p for p in root.iterdir() if p.name != "probes"]
    index = json.loads((entry / "index.json").read_text())
    assert [s["file"] for s in index["shards"]] == ["shard-00000.safetensors"] and not index["complete"]
    (entry / "shard-00001.safetensors").write_bytes(b"half a shard")  # renamed, index never updated
    (entry / ".shard-00002.safetensors.x1.tmp").write_bytes(b"killed mid-write")
    assert not cache_info(root)[0]["complete"]

    v, a = encoders()
    resumed = encode_split(ds, "train", v, a, cache_root=root, batch_size=2, shard_size=2)
    assert v.calls == 2  # shards 1 and 2 only
    assert not list(entry.glob(".*.tmp"))
    fresh = encode_split(ds, "train", *encoders(), cache_root=tmp_path / "fresh", batch_size=2, shard_size=2)
    assert torch.equal(resumed.video, fresh.video) and torch.equal(resumed.audio, fresh.audio)


class FlakyMedia(torch.utils.data.Dataset):
    """Four constant clips at 8 fps / 8 kHz; item 1 fails to decode."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> Clip:
        if index == 1:
            raise MediaError("/data/flaky.mp4", "video decode error: invalid NAL unit")
        return Clip(torch.full((8, 3, 4, 4), index / 4), torch.zeros(1, 8000), 8.0, 8000, f"clip {index}")


class Flaky(Dataset):
    Params = TinyParams

    def __init__(self, params: TinyParams):
        self.params = params

    def media(self, split: str) -> FlakyMedia:
        return FlakyMedia()


def test_media_failing_to_decode_is_skipped_and_listed(tmp_path, caplog):
    root = tmp_path / "cache"
    v, a = encoders()
    with caplog.at_level("WARNING", logger="sava"):
        out = encode_split(Flaky(TinyParams()), "train", v, a, cache_root=root, run_dir=tmp_path / "run")
    assert len(out) == 3 and out.captions == ["clip 0", "clip 2", "clip 3"]
    assert "flaky.mp4" in caplog.text
    for run in ("run", "again"):
        if run == "again":
            v, a = encoders()
            encode_split(Flaky(TinyParams()), "train", v, a, cache_root=root, run_dir=tmp_path / run)
            assert v.calls == 0
        lines = (tmp_path / run / "skipped.csv").read_text().splitlines()
        assert lines == ["path,reason", "/data/flaky.mp4,video decode error: invalid NAL unit"]
    assert cache_info(root)[0]["skipped"] == 1


def test_video_must_match_the_frame_rate_and_audio_is_resampled_to_the_encoders_rate(manifest, tmp_path):
    ds = folder(manifest, tmp_path)
    with pytest.raises(SavaError, match="4.0 fps"):
        encode_split(ds, "train", TinyVideoEncoder(TinyParams(), frame_rate=4.0), TinyAudioEncoder(TinyParams()),
                     cache_root=tmp_path)
    at_8k = encode_split(ds, "train", TinyVideoEncoder(TinyParams()), TinyAudioEncoder(TinyParams()),
                         cache_root=tmp_path)
    at_16k = encode_split(ds, "train", TinyVideoEncoder(TinyParams()),
                          TinyAudioEncoder(TinyParams(), sample_rate=16000), cache_root=tmp_path)
    # 1 s segments: 8 windows of 1000 samples at 8 kHz, 16 at 16 kHz, interpolated to the video's 8 steps
    assert at_8k.audio.shape == at_16k.audio.shape
    rms_8k, rms_16k = at_8k.audio[..., 1], at_16k.audio[..., 1]
    assert torch.allclose(rms_8k, rms_16k, atol=0.05)  # the same tones, resampled: the same loudness


def test_cache_info_and_clear_from_the_command_line(tmp_path):
    root = tmp_path / "cache"
    for scale in (1.0, 2.0):
        encode_split(Flaky(TinyParams()), "train", *encoders(scale=scale), cache_root=root)
    keys = [r["key"] for r in cache_info(root)]
    app = typer.Typer()
    app.add_typer(cache_app, name="cache")
    runner = CliRunner()

    result = runner.invoke(app, ["cache", "info", "--root", str(root)])
    assert result.exit_code == 0 and all(k in result.output for k in keys)
    result = runner.invoke(app, ["cache", "info", "--root", str(root), "--json"])
    assert [r["items"] for r in json.loads(result.output)] == [3, 3]

    result = runner.invoke(app, ["cache", "clear", "--root", str(root), "--key", keys[0][:6], "--yes"])
    assert result.exit_code == 0 and f"deleted 1 entry: {keys[0]}" in result.output
    assert [r["key"] for r in cache_info(root)] == keys[1:]
    result = runner.invoke(app, ["cache", "clear", "--root", str(root)], input="n\n")
    assert result.exit_code == 1 and len(cache_info(root)) == 1
    result = runner.invoke(app, ["cache", "clear", "--root", str(root)], input="y\n")
    assert result.exit_code == 0 and cache_info(root) == []
    with pytest.raises(SavaError, match="no cache entry"):
        cache_clear(root, "ffff")


def test_the_cache_key_of_a_dataset_without_a_fingerprint_holds_its_parameters():
    """Two media worlds that differ in one parameter never share cached latents; a dataset that gives
    a fingerprint (a manifest's content) is keyed by it instead."""
    from sava_core.cache import dataset_fingerprint

    registries = get_registries()
    world = registries["dataset"].build("media_world", {"n_train": 8})
    other = registries["dataset"].build("media_world", {"n_train": 9})
    assert dataset_fingerprint(world, "train") == dataset_fingerprint(
        registries["dataset"].build("media_world", {"n_train": 8}), "train")
    assert dataset_fingerprint(world, "train") != dataset_fingerprint(other, "train")
    assert dataset_fingerprint(world, "train")["params"]["n_train"] == 8

    class Manifest(Dataset):
        def fingerprint(self, split: str) -> dict[str, str]:
            return {"manifest_sha256": "ab" * 32, "split": split}

    assert dataset_fingerprint(Manifest(), "val")["fingerprint"] == {"manifest_sha256": "ab" * 32, "split": "val"}
