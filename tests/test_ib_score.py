"""ib_score: av-benchmark's IB-score (ImageBind video vs audio cosine), on the tiny towers.

The preprocessing is checked against av-benchmark's own functions where they import without their
heavy dependencies (``av_bench/data/ib_data.py``'s SpatialCrop; ``audio_dataset.py``'s
``load_and_transform_audio_data`` with pytorchvideo's sampler re-implemented here), read from the
read-only mirror when it is present, and against FFmpeg's own ``fps=0.5`` filter (through PyAV) for
the frame times torio's decoder gives av-benchmark.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
import torchvision.transforms.v2 as v2

from conftest import run_cli
from sava_core.clips import ClipSet, MediaItem
from sava_core.errors import SavaError
from sava_core.media_io import write_mp4
from sava_core.registry import get_registries
from sava_imagebind.model import AUDIO, VISION, audio_clips
from sava_metrics.ib_score import ffmpeg_fps_frames

MIRROR = Path("/work/.mirror/hkchengrex+av-benchmark/repo")
RATE = 16000


def _reference_module(path: str, name: str, extra: dict | None = None) -> types.ModuleType:
    if not MIRROR.exists():
        pytest.skip("av-benchmark mirror not present")
    source = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{path}"], capture_output=True, text=True)
    if source.returncode:
        pytest.skip(f"cannot read {path} from the av-benchmark mirror")
    module = types.ModuleType(name)
    module.__dict__.update(extra or {})
    exec(compile(source.stdout, path, "exec"), module.__dict__)  # noqa: S102 - the reference's own code
    return module


def _clip(i: int, frames: int, fps: float, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    video = torch.rand(frames, 3, h, w, generator=g)
    video[:, :, : h // 2] *= (torch.arange(frames) / frames)[:, None, None, None]  # frames differ in content
    t = torch.arange(round(frames / fps * RATE)) / RATE
    audio = 0.4 * torch.sin(2 * math.pi * (200 + 90 * i) * t) + 0.05 * torch.randn(t.shape, generator=g)
    return video, audio[None]


def _metric(**params):
    registries = get_registries()
    return registries["metric"].build("ib_score", {"extractor_params": {"preset": "tiny"}, **params},
                                      registries=registries)


# ------------------------------------------------------------------------------------------ CLI


def test_listed_and_runs_through_sava_eval(tmp_path):
    listed = run_cli("list", "metric", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "ib_score" in {row["name"] for row in json.loads(listed.stdout)}
    folder = tmp_path / "gen"
    for i in range(3):
        video, audio = _clip(i, 32, 4.0, 48, 64)  # 8 s at 4 fps
        write_mp4(folder / f"c{i}.mp4", video, 4.0, audio, RATE)
    out = tmp_path / "scores.json"
    done = run_cli("eval", str(folder), "--metric", "ib_score extractor_params.preset=tiny", "--out", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    (score,) = json.loads(out.read_text())["scores"]
    assert -1 <= score["values"]["ib_score"] <= 1
    protocol = score["protocol"]
    assert protocol["scale"] == 1.0 and protocol["n_generated"] == 3
    vision, audio = protocol["extractor"]["vision"], protocol["extractor"]["audio"]
    assert "checkpoint_sha256" in vision and "checkpoint_sha256" in audio
    assert (vision["fps"], vision["frames"], vision["duration_seconds"]) == (0.5, 4, 8.0)
    assert "3 x 224" in vision["crops"] and "9 views" in vision["clips"]
    assert audio["tower"] == "audio" and "3 x 2 s" in audio["clips"]


# ------------------------------------------------------------------------------------------ preprocessing


def _ffmpeg_fps_filter(path: Path) -> list[torch.Tensor]:
    """Frames of FFmpeg's ``fps=0.5`` filter, as torio's StreamingMediaDecoder(frame_rate=0.5) applies it."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        src, fps, sink = graph.add_buffer(template=stream), graph.add("fps", "0.5"), graph.add("buffersink")
        src.link_to(fps)
        fps.link_to(sink)
        graph.configure()

        def drain():
            while True:
                try:
                    out.append(torch.from_numpy(graph.pull().to_ndarray(format="rgb24")).permute(2, 0, 1))
                except (av.BlockingIOError, av.EOFError):
                    return

        for frame in container.decode(stream):
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
    return out


@pytest.mark.parametrize(("fps", "frames"), [(25.0, 200), (30.0, 250), (8.0, 80), (7.0, 35), (25.0, 175), (25.0, 174)])
def test_frame_times_are_ffmpegs_fps_filter(tmp_path, fps, frames):
    video = torch.zeros(frames, 3, 16, 16)
    video[:] = (torch.arange(frames) % 64 * 4 / 255.0)[:, None, None, None]  # frame index mod 64 as grey level
    write_mp4(tmp_path / "c.mp4", video, fps, torch.zeros(1, RATE), RATE)
    filtered = [round(f.float().mean().item() / 4) % 64 for f in _ffmpeg_fps_filter(tmp_path / "c.mp4")]
    assert [i % 64 for i in ffmpeg_fps_frames(frames, fps)] == filtered


def test_crops_are_imagebinds_spatial_crop():
    ib_data = _reference_module("av_bench/data/ib_data.py", "av_bench_ib_data")
    from sava_imagebind.model import spatial_crops

    for h, w in ((224, 398), (398, 224), (224, 224), (225, 300)):
        frames = torch.rand(4, 3, h, w)  # av-benchmark crops (T, C, H, W) clips
        ours = spatial_crops(frames, 224)
        theirs = torch.stack(ib_data.SpatialCrop(224, 3)([frames]))
        assert torch.equal(ours, theirs), (h, w)


def test_video_input_matches_av_benchmark(tmp_path):
    """The prepared views equal av-benchmark's pipeline on the same clip: FFmpeg fps=0.5 frames, v2.Resize(224
    bicubic) of uint8, CLIP Normalize, the reference SpatialCrop, encode_video_with_imagebind's pairs."""
    ib_data = _reference_module("av_bench/data/ib_data.py", "av_bench_ib_data")
    video, audio = _clip(0, 90, 10.0, 60, 100)  # 9 s, landscape
    path = tmp_path / "c.mp4"
    write_mp4(path, video, 10.0, audio, RATE)
    metric = _metric()
    (item,) = ClipSet.from_path(tmp_path).with_request(metric.extractor.reads())
    ours = metric.extractor.prepare(item)

    chunk = torch.stack(_ffmpeg_fps_filter(path))[:4]  # (T, C, H, W) uint8, as torio gives
    transform = v2.Compose([v2.Resize(224, interpolation=v2.InterpolationMode.BICUBIC), v2.ToImage(),
                            v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean=[0.48145466, 0.4578275, 0.40821073],
                                         std=[0.26862954, 0.26130258, 0.27577711])])
    x = torch.stack(ib_data.SpatialCrop(224, 3)([transform(chunk)]))[None]  # (B, crops, T, C, H, W)
    clips = torch.cat([x[:, :, i:i + 2] for i in range(x.shape[2] - 1)], dim=1)  # extract_video.py
    theirs = clips.permute(0, 1, 3, 2, 4, 5)[0]  # 'b n t c h w -> b n c t h w'
    assert ours.shape == theirs.shape == (9, 3, 2, 224, 224)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


class _ConstantClipsPerVideoSampler:
    """pytorchvideo's ConstantClipsPerVideoSampler (augs_per_clip=1), re-implemented as the copy in PaddleMIX's
    ImageBind port has it: starts k * max(D - 2, 0) / clips. (pytorchvideo's later main divides by
    max(clips - 1, 1) instead; which one av-benchmark's install gets depends on the pytorchvideo version.)"""

    def __init__(self, clip_duration, clips_per_video):
        self.clip_duration, self.clips, self.index = Fraction(clip_duration), clips_per_video, 0

    def __call__(self, last_clip_time, video_duration, annotation):
        max_start = Fraction(max(video_duration - self.clip_duration, 0))
        uniform = Fraction(max_start, self.clips)
        start, self.index = uniform * self.index, self.index + 1
        last = self.index >= self.clips or uniform * self.index > max_start
        if last:
            self.index = 0
        return start, start + self.clip_duration, self.index, 0, last


@pytest.mark.parametrize("seconds", [8.0, 5.0, 3.3, 1.5])
def test_audio_clips_match_av_benchmarks_loader(seconds):
    stub = types.ModuleType("pytorchvideo.data.clip_sampling")
    stub.ConstantClipsPerVideoSampler = _ConstantClipsPerVideoSampler  # type: ignore[attr-defined]
    names = ("pytorchvideo", "pytorchvideo.data", "pytorchvideo.data.clip_sampling")
    saved = {n: sys.modules.get(n) for n in names}
    sys.modules.update({n: types.ModuleType(n) for n in names[:2]} | {names[2]: stub})
    try:
        ref = _reference_module("av_bench/data/audio_dataset.py", "av_bench_audio_dataset")
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    g = torch.Generator().manual_seed(1)
    wave = 0.3 * torch.randn(1, round(seconds * RATE), generator=g) + 0.1
    import torchaudio

    ref.torchaudio = types.SimpleNamespace(load=lambda _: (wave.clone(), RATE), compliance=torchaudio.compliance,
                                           functional=torchaudio.functional)
    theirs = ref.ImageBindAudioDataset([]).load_and_transform_audio_data("x.wav")[0]  # (3, 1, 128, 204)
    torch.testing.assert_close(audio_clips(wave[0]), theirs, atol=1e-4, rtol=1e-5)


# ------------------------------------------------------------------------------------------ the score


def test_score_is_the_mean_cosine_of_the_tiny_towers():
    metric = _metric(duration_seconds=6)
    items = []
    for i in range(3):
        video, audio = _clip(i, 30, 5.0, 40, 56)
        items.append(MediaItem(f"c{i}", video=video, fps=5.0, audio=audio, sample_rate=RATE))
    score = metric.compute(items)
    vt, at = metric.extractor.towers, metric.partner.towers
    cosines = []
    for item in items:
        views = metric.extractor.prepare(item)  # (2 * 3, 3, 2, 224, 224): 3 frames at 0.5 fps
        assert views.shape[0] == 6
        v = torch.nn.functional.normalize(vt.head_output(VISION, views), dim=-1).mean(0)
        a = torch.nn.functional.normalize(at.head_output(AUDIO, audio_clips(item.audio[0])), dim=-1).mean(0)
        cosines.append(torch.nn.functional.cosine_similarity(v.double(), a.double(), dim=0).item())
    assert score.values["ib_score"] == pytest.approx(sum(cosines) / 3, abs=1e-5)
    assert _metric(duration_seconds=6, scale=100).compute(items).values["ib_score"] == pytest.approx(
        100 * sum(cosines) / 3, abs=1e-3)
    assert score.protocol["extractor"]["vision"]["frames"] == 3
    assert score.protocol["extractor"]["vision"]["checkpoint_sha256"] is None  # tiny: no file


def test_short_clip_is_refused_naming_clip_and_setting():
    video, audio = _clip(0, 30, 5.0, 40, 56)  # 6 s: 3 frames at 0.5 fps, 8 s needs 4
    item = MediaItem("short-one", video=video, fps=5.0, audio=audio, sample_rate=RATE)
    with pytest.raises(SavaError, match=r"clip short-one .*too short.*duration_seconds=8 needs 4"):
        _metric().compute([item])
    with pytest.raises(SavaError, match="at least 2"):
        _metric(duration_seconds=3)


def test_existing_imagebind_extractor_still_embeds_single_frames():
    ext = get_registries()["extractor"].build("imagebind", {"preset": "tiny", "size": 32})
    frames = torch.rand(1, 2, 3, 32, 32)
    rows = ext.extract(frames).embeddings
    assert rows.shape == (2, 16)
    # a single frame repeated to two (PadIm2Video) is the same as a two-frame clip of that frame twice
    from sava_imagebind.model import normalize_frames

    pair = normalize_frames(frames[0]).unsqueeze(2).repeat(1, 1, 2, 1, 1)  # (2, 3, 2, 32, 32)
    again = ext.towers.embed_views(VISION, pair[None])
    torch.testing.assert_close(again[0], rows.mean(0), atol=1e-5, rtol=0)
