"""desync: av-benchmark's DeSync (Synchformer's predicted audio-video offset) on the tiny Synchformer.

Parity with av-benchmark's own code at the released size is measured by benchmarks/parity_synchformer.py
(docs/metrics.md, "DeSync"); here: the published layout (meta device), `sava eval` with its skipped clips
and checkpoint errors, the checkpoint path, the preprocessing against torchvision's v2 pipeline and the
score against an independent segmenting of the same clips.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torchaudio
import torchvision.transforms.v2 as v2

from conftest import assert_close_f32, run_cli
from sava_core.clips import MediaItem
from sava_core.errors import SavaError
from sava_core.evaluation import evaluate
from sava_core.media_io import write_mp4
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests
from sava_metrics import desync
from sava_metrics.synchformer import PUBLISHED, TINY, Synchformer, offset_grid

RATE = 16000
KEYS = Path(desync.__file__).parent / "configs" / "synchformer_keys.json"


def _clip(i: int, seconds: float, fps: float = 25.0, h: int = 36, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    n = round(seconds * fps)
    video = torch.rand(n, 3, h, w, generator=g)
    video[:, :, : h // 2] *= (0.5 + 0.5 * torch.sin(torch.arange(n) / 3.0))[:, None, None, None]  # frames differ
    t = torch.arange(round(seconds * RATE)) / RATE
    audio = 0.4 * torch.sin(2 * math.pi * (200 + 90 * i) * t) * (torch.sin(2 * math.pi * t) > 0)
    return video, (audio + 0.05 * torch.randn(t.shape, generator=g))[None]


def _item(i: int, seconds: float, audio_seconds: float | None = None, cid: str | None = None) -> MediaItem:
    video, audio = _clip(i, seconds)
    if audio_seconds is not None:
        audio = audio[:, :round(audio_seconds * RATE)]
    return MediaItem(cid or f"c{i}", video=video, fps=25.0, audio=audio, sample_rate=RATE)


def _metric(**params):
    registries = get_registries()
    return registries["metric"].build("desync", {"extractor_params": {"preset": "tiny"}, **params},
                                      registries=registries)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two 8 s clips and one of 4 s (too short for 8 s windows), as mp4."""
    root = tmp_path_factory.mktemp("desync") / "gen"
    for i, seconds in ((0, 8.0), (1, 8.0), (2, 4.0)):
        video, audio = _clip(i, seconds)
        write_mp4(root / (f"c{i}.mp4" if seconds == 8.0 else "short.mp4"), video, 25.0, audio, RATE)
    return root


# ------------------------------------------------------------------------------------------ the kit


class TestSynchformerExtractor(ComponentTests):
    kind, name = "extractor", "synchformer"
    params = {"preset": "tiny"}
    expected_shape = (2, 32)  # one clip: the first and the last window's OFF token

    def inputs(self):
        return ((torch.rand(1, 200, 3, 32, 32), 0.1 * torch.randn(1, 8 * RATE)),)


class TestDeSyncKit(ComponentTests):
    kind, name = "metric", "desync"
    params = {"extractor_params": {"preset": "tiny"}, "duration_seconds": 5.0}

    def inputs(self):
        return ([_item(0, 5.0), _item(1, 5.0)],)


# ------------------------------------------------------------------------------------------ the published layout


def test_published_model_has_av_benchmarks_keys_and_shapes():
    expected = json.loads(KEYS.read_text())
    with torch.device("meta"):
        model = Synchformer(PUBLISHED)
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert (expected["tensors"], expected["values"]) == (513, 237_460_245)
    assert sorted(set(expected["shapes"]) ^ set(own)) == []
    assert {k: s for k, s in own.items() if s != expected["shapes"][k]} == {}
    assert PUBLISHED.head_tokens == 198 and offset_grid().tolist()[9:12] == pytest.approx([-0.2, 0.0, 0.2])


# ------------------------------------------------------------------------------------------ sava eval


def test_listed_and_runs_through_sava_eval_leaving_out_the_short_clip(folder, tmp_path):
    listed = run_cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {(row["kind"], row["name"]) for row in json.loads(listed.stdout)}
    assert {("metric", "desync"), ("extractor", "synchformer")} <= names
    out = tmp_path / "scores.json"
    done = run_cli("eval", str(folder), "--metric", "desync extractor_params.preset=tiny", "--out", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    document = json.loads(out.read_text())
    (score,) = document["scores"]
    values, protocol = score["values"], score["protocol"]
    assert set(values) == {"desync", "desync_first", "desync_last", "desync_signed"}
    assert 0 <= values["desync"] <= 2 and -2 <= values["desync_signed"] <= 2
    assert values["desync"] == pytest.approx((values["desync_first"] + values["desync_last"]) / 2)
    extractor = protocol["extractor"]
    assert protocol["protocol"] == extractor["protocol"] == "av-benchmark" and protocol["n_generated"] == 2
    assert (extractor["fps"], extractor["frames"], extractor["samples"], extractor["duration_seconds"]) == (
        25.0, 200, 128000, 8.0)
    assert "first 14 and the last 14" in protocol["windows"] and "checkpoint_sha256" in extractor
    (skipped,) = document["skipped"]
    assert skipped["id"] == "short" and skipped["metrics"] == ["desync"]
    assert skipped["reason"].startswith("too short: 100 frame(s)") and "needs 200" in skipped["reason"]


def test_checkpoint_errors_are_one_line_and_exit_2(folder, tmp_path):
    missing = run_cli("eval", str(folder), "--metric",
                      f"desync extractor_params.checkpoint={tmp_path / 'synchformer_state_dict.pth'}")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "not found" in missing.stderr and "never downloaded" not in missing.stderr
    wrong = tmp_path / "synchformer_state_dict.pth"
    wrong.write_bytes(b"not the weights")
    refused = run_cli("eval", str(folder), "--metric",
                      f"desync extractor_params.checkpoint={wrong} extractor_params.sha256={'ab' * 32}")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f"has sha256 {hashlib.sha256(wrong.read_bytes()).hexdigest()}" in refused.stderr


def test_a_checkpoint_file_is_verified_loaded_and_named(folder, tmp_path, monkeypatch):
    tiny = _metric(extractor_params={"preset": "tiny", "seed": 3})
    path = tmp_path / "synchformer_state_dict.pth"
    torch.save(tiny.extractor.model.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(desync, "PUBLISHED", TINY)  # the published loading code, at tiny sizes
    spec = f"desync extractor_params.checkpoint={path} extractor_params.sha256={digest}"
    (loaded,) = evaluate(folder, [spec]).scores
    assert loaded["protocol"]["extractor"]["checkpoint"] == "synchformer_state_dict.pth"
    assert loaded["protocol"]["extractor"]["checkpoint_sha256"] == digest
    (random,) = evaluate(folder, ["desync extractor_params.preset=tiny extractor_params.seed=3"]).scores
    # the same weights through the same code: the loaded copy gives exactly the tiny preset's offsets
    assert loaded["values"] == random["values"]


# ------------------------------------------------------------------------------------------ preprocessing, score


@pytest.mark.parametrize(("h", "w"), [(36, 48), (48, 36), (45, 81), (32, 32)])
def test_frames_are_av_benchmarks_resize_and_centre_crop(h, w):
    frames = torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8)
    theirs = v2.Compose([v2.Resize(32, interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(32),
                         v2.ToDtype(torch.float32, scale=True)])(frames)
    ours = _metric().extractor.transform_frames(frames.float() / 255)
    assert ours.shape == (3, 3, 32, 32)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)  # the same uint8 resize, then / 255


def test_score_is_the_mean_abs_offset_of_the_first_and_last_14_segments():
    metric = _metric()
    items = [_item(i, 8.0 + 0.4 * i) for i in range(3)]  # 8 s are read of each
    score = metric.compute(items)
    model, grid = metric.extractor.model, offset_grid().double()
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=RATE, win_length=400, hop_length=160, n_fft=1024,
                                               n_mels=128)
    offsets = []
    for item in items:
        frames = metric.extractor.transform_frames(item.video[:200])
        segments = torch.stack([frames[i * 8:i * 8 + 16] for i in range(24)])[None]  # as encode_video_with_sync
        wave = item.audio[0, :128000]
        spec = mel(torch.stack([wave[i * 5120:i * 5120 + 10240] for i in range(24)])[None])
        spec = torch.nn.functional.pad(torch.log(spec + 1e-6), (0, 1))
        vis = model.extract_vfeats((segments - 0.5) / 0.5)
        aud = model.extract_afeats(((spec + 4.2677393) / (2 * 4.5689974)).unsqueeze(2))
        logits = torch.cat([model.compare_v_a(vis[:, w], aud[:, w])[1] for w in (slice(None, 14), slice(-14, None))])
        (_, features), = metric.extractor.features([item], 1)
        # segments in one pass here, eight per pass in the extractor: two towers and the head deep
        assert_close_f32(features.logits, logits, depth=8)
        offsets.append(grid[features.logits.argmax(-1)])
    offsets = torch.stack(offsets)
    assert score.values["desync"] == pytest.approx(offsets.abs().mean().item())
    assert score.values["desync_signed"] == pytest.approx(offsets.mean().item())
    assert score.values["desync_last"] == pytest.approx(offsets[:, 1].abs().mean().item())


def test_short_clips_are_refused_naming_the_clip_and_setting():
    with pytest.raises(SavaError, match=r"clip short-one \(in memory\) is too short: 100 frames at 25 fps; "
                                        r"duration_seconds=8 needs 200"):
        _metric().compute([_item(0, 4.0, cid="short-one")])
    with pytest.raises(SavaError, match=r"clip quiet .*too short: 7.000 s of audio; duration_seconds=8 needs 128000"):
        _metric().compute([_item(0, 8.0, audio_seconds=7.0, cid="quiet")])
    with pytest.raises(SavaError, match="a window needs 14"):
        get_registries()["extractor"].build("synchformer", {"preset": "tiny"}, duration_seconds=4.0)
