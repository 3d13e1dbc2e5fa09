"""Real-media datasets: decoding and resampling, segmentation, bad media, manifests, `sava data check`."""

from __future__ import annotations

import csv
import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from sava_cli.data_cmd import cache_app, data_app
from sava_core.decode import DecodeSpec, MediaError, decode_segment, probe, write_skipped
from sava_core.errors import SavaError
from sava_core.media_io import write_mp4, write_wav
from sava_core.registry import get_registries
from sava_core.segment import Segmentation, segment_starts
from sava_core.testing import ComponentTests

SRC_FPS, SRC_SR, SECONDS = 12, 16000, 3.0
CLICK_EVERY = 6  # source frames between clicks (0.5 s)


def source_video(frames: int) -> torch.Tensor:
    """(F, 3, 24, 32): the red channel holds 6 * frame index / 255, green is bright on click frames."""
    video = torch.zeros(frames, 3, 24, 32)
    video[:, 0] = (torch.arange(frames).float() * 6 / 255).view(-1, 1, 1)
    video[::CLICK_EVERY, 1] = 1.0
    return video


def source_audio(seconds: float, channels: int = 1) -> torch.Tensor:
    """Short clicks (10 ms at 0.8) at every click frame's instant."""
    audio = torch.zeros(channels, round(seconds * SRC_SR))
    for k in range(0, round(seconds * SRC_FPS), CLICK_EVERY):
        i = round(k / SRC_FPS * SRC_SR)
        audio[:, i:i + 160] = 0.8
    return audio


def write_clip(path: Path, seconds: float = SECONDS, channels: int = 1) -> Path:
    frames = round(seconds * SRC_FPS)
    write_mp4(path, source_video(frames), SRC_FPS, source_audio(seconds, channels), SRC_SR)
    return path


def write_video_only(path: Path, seconds: float = SECONDS, faststart: bool = False) -> Path:
    """An H.264 mp4 without an audio track, written with PyAV directly."""
    frames = (source_video(round(seconds * SRC_FPS)) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(SRC_FPS))
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for k, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = k
            container.mux(stream.encode(vf))
        container.mux(stream.encode())
    return path


def write_faststart_clip(path: Path, seconds: float) -> Path:
    """An mp4 with audio and its index (moov) in front, so a cut-off copy still opens."""
    frames = (source_video(round(seconds * SRC_FPS)) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as container:
        vs = container.add_stream("libx264", rate=Fraction(SRC_FPS))
        vs.width, vs.height, vs.pix_fmt = 32, 24, "yuv420p"
        ast = container.add_stream("aac", rate=SRC_SR)
        ast.layout = "mono"
        for k, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = k
            container.mux(vs.encode(vf))
        container.mux(vs.encode())
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(source_audio(seconds).numpy()), format="fltp",
                                        layout="mono")
        af.sample_rate, af.pts = SRC_SR, 0
        container.mux(ast.encode(af))
        container.mux(ast.encode())
    return path


def truncate(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of good and broken clips with a CSV manifest (paths relative to it)."""
    root = tmp_path_factory.mktemp("media")
    (root / "clips").mkdir()
    write_clip(root / "clips" / "good.mp4")
    write_clip(root / "clips" / "stereo.mp4", seconds=2.0, channels=2)
    write_video_only(root / "clips" / "silent.mp4", seconds=2.0)
    write_wav(root / "clips" / "silent.wav", source_audio(2.5), SRC_SR)
    truncate(root / "clips" / "good.mp4", root / "clips" / "truncated.mp4", 0.6)
    truncate(write_faststart_clip(root / "long.mp4", 4.0), root / "clips" / "cutoff.mp4", 0.5)
    (root / "clips" / "empty.mp4").write_bytes(b"")
    (root / "clips" / "text.mp4").write_text("this is not a video\n" * 20)
    write_clip(root / "clips" / "short.mp4", seconds=0.5)
    rows = [
        {"video": "clips/good.mp4", "audio": "", "caption": "a good clip", "split": "train"},
        {"video": "clips/stereo.mp4", "audio": "", "caption": "stereo", "split": "train"},
        {"video": "clips/silent.mp4", "audio": "clips/silent.wav", "caption": "separate audio", "split": "test"},
        {"video": "clips/silent.mp4", "audio": "", "caption": "no audio track", "split": "train"},
        {"video": "clips/truncated.mp4", "audio": "", "caption": "truncated", "split": "train"},
        {"video": "clips/cutoff.mp4", "audio": "", "caption": "cut off", "split": "train"},
        {"video": "clips/empty.mp4", "audio": "", "caption": "zero bytes", "split": "train"},
        {"video": "clips/text.mp4", "audio": "", "caption": "text", "split": "train"},
        {"video": "clips/missing.mp4", "audio": "", "caption": "missing", "split": "train"},
        {"video": "clips/short.mp4", "audio": "", "caption": "too short", "split": "train"},
    ]
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(root / "good.jsonl", "w") as fh:
        for row in rows[:3]:
            fh.write(json.dumps({k: v for k, v in row.items() if v}) + "\n")
    return root


EXPECTED_SKIPS = {
    "silent.mp4": "no audio track",
    "truncated.mp4": "not readable media",
    "cutoff.mp4": "truncated: video data ends",
    "empty.mp4": "empty file (0 bytes)",
    "text.mp4": "not readable media",
    "missing.mp4": "missing file",
    "short.mp4": "shorter than one segment",
}


def build(kind: str, **params):
    return get_registries()["dataset"].build(kind, params)


def frame_indices(video: torch.Tensor) -> list[int]:
    """Source frame index shown by each decoded frame (from the red channel)."""
    return (video[:, 0].mean((1, 2)) * 255 / 6).round().long().tolist()


def click_onsets(audio: torch.Tensor, sample_rate: int) -> list[float]:
    """Times (s) where the click envelope rises through 0.4."""
    loud = audio.abs().mean(0) > 0.4
    rises = torch.nonzero(loud[1:] & ~loud[:-1])[:, 0] + 1
    starts = ([0] if loud[0] else []) + rises.tolist()
    return [i / sample_rate for i in starts]


# ----------------------------------------------------------------------------------- decoding


def test_decoding_converts_frame_rate_sample_rate_size_and_channels(media):
    path = media / "clips" / "good.mp4"
    info = probe(path)
    assert (info.source_fps, info.source_rate, info.width, info.height) == (12, 16000, 32, 24)
    assert info.duration == pytest.approx(3.0, abs=1e-3)

    spec = DecodeSpec(fps=8, sample_rate=8000, height=16, width=16, resize="crop", channels=2)
    clip = decode_segment(path, None, info, 0, 24, spec)
    assert clip.video.shape == (24, 3, 16, 16) and clip.audio.shape == (2, 24000)
    assert (clip.fps, clip.sample_rate) == (8, 8000)
    # output frame k shows k / 8 s: the nearest 12 fps frame (ties to the earlier), 0 1 3 4 6 ...
    assert frame_indices(clip.video) == [int(np.floor(k * 1.5)) for k in range(24)]
    assert torch.equal(clip.audio[0], clip.audio[1])  # a mono source duplicated into stereo
    assert click_onsets(clip.audio, 8000) == pytest.approx([0.5 * m for m in range(6)], abs=2e-3)

    stretched = decode_segment(path, None, info, 0, 4, DecodeSpec(fps=8, sample_rate=8000, height=10, width=20,
                                                                 resize="stretch"))
    assert stretched.video.shape == (4, 3, 10, 20) and stretched.audio.shape == (1, 4000)
    native = decode_segment(path, None, info, 0, 36, DecodeSpec(fps=12, sample_rate=16000))
    assert native.video.shape == (36, 3, 24, 32) and frame_indices(native.video) == list(range(36))


def test_separate_audio_file_and_stereo_mixdown(media):
    info = probe(media / "clips" / "silent.mp4", media / "clips" / "silent.wav")
    assert info.duration == pytest.approx(2.0, abs=1e-3)  # the shorter of video (2 s) and wav (2.5 s)
    clip = decode_segment(media / "clips" / "silent.mp4", media / "clips" / "silent.wav", info, 4, 8,
                          DecodeSpec(fps=8, sample_rate=8000))
    assert clip.audio.shape == (1, 8000) and clip.meta["audio_source"].endswith("silent.wav")
    assert click_onsets(clip.audio, 8000) == pytest.approx([0.0, 0.5], abs=2e-3)  # starts at 0.5 s

    info = probe(media / "clips" / "stereo.mp4")
    assert info.source_channels == 2
    mono = decode_segment(media / "clips" / "stereo.mp4", None, info, 0, 8, DecodeSpec(fps=8, sample_rate=8000))
    assert mono.audio.shape == (1, 8000)


def test_unreadable_media_raise_media_error_with_the_reason(media):
    for name, reason in EXPECTED_SKIPS.items():
        if name == "short.mp4":
            continue
        with pytest.raises(MediaError) as err:
            probe(media / "clips" / name)
        assert reason in err.value.reason and err.value.path.endswith(name)


# ----------------------------------------------------------------------------------- segmentation


def test_segment_rule():
    one = Segmentation(segment=1.0, overlap=0.0)
    assert segment_starts(3.0, 8, one) == [0, 8, 16]
    assert segment_starts(2.9, 8, one) == [0, 8, 16]  # 24 frame instants < 2.9 s: the last segment fits
    assert segment_starts(2.8, 8, one) == [0, 8]  # the trailing 0.8 s is dropped
    assert segment_starts(2.8, 8, Segmentation(1.0, 0.0, "shift")) == [0, 8, 15]
    assert segment_starts(3.0, 8, Segmentation(1.0, 0.5)) == [0, 4, 8, 12, 16]
    assert segment_starts(0.9, 8, one) == [0]  # frame 7 shows 0.875 s < 0.9 s; its audio is padded
    assert segment_starts(0.85, 8, one) == []


def test_segments_keep_audio_and_video_aligned_within_one_frame(media, tmp_path):
    ds = build("folder", manifest=str(media / "good.jsonl"), fps=8, sample_rate=8000, segment=1.0, overlap=0.25,
               cache_root=str(tmp_path))
    train = ds.media("train")
    # good.mp4 (3 s, 24 frames at 8 fps): starts every 6 frames while 8 frames fit; stereo.mp4 (2 s): 2
    assert train.items == [(0, 0, 0), (0, 1, 6), (0, 2, 12), (1, 0, 0), (1, 1, 6)]
    for index in range(len(train)):
        clip = train[index]
        start = clip.meta["start"]
        assert clip.video.shape == (8, 3, 24, 32) and clip.audio.shape == (1, 8000)
        assert clip.meta["index"] == index and clip.caption in ("a good clip", "stereo")
        shown = [f / SRC_FPS for f in frame_indices(clip.video)]
        wanted = [start + k / 8 for k in range(8)]
        assert max(abs(a - b) for a, b in zip(shown, wanted)) <= 0.5 / SRC_FPS + 1e-6
        clicks = [t for t in np.arange(0, 3.01, 0.5) if start <= t < start + 1 - 0.01]
        assert click_onsets(clip.audio, 8000) == pytest.approx([t - start for t in clicks], abs=2e-3)
        # the first flash frame (green) lies within one video frame of the first click
        flashes = (clip.video[:, 1].mean((1, 2)) > 0.5).nonzero()[:, 0].tolist()
        if flashes and clicks:
            assert abs(flashes[0] / 8 - (clicks[0] - start)) < 1 / 8
    test = ds.media("test")
    assert len(test) == 2 and test[1].meta["audio_source"].endswith("silent.wav")


# ----------------------------------------------------------------------------------- bad media


def test_bad_media_is_skipped_logged_and_listed(media, tmp_path, caplog):
    ds = build("folder", manifest=str(media / "manifest.csv"), fps=8, sample_rate=8000, segment=1.0,
               cache_root=str(tmp_path), num_workers=2)
    with caplog.at_level(logging.WARNING, logger="sava"):
        train = ds.media("train")
    assert {Path(train.sources[i].video).name for i, _, _ in train.items} == {"good.mp4", "stereo.mp4"}
    assert len(train) == 3 + 2
    reasons = {Path(s.path).name: s.reason for s in train.skipped}
    assert set(reasons) == set(EXPECTED_SKIPS)
    for name, reason in EXPECTED_SKIPS.items():
        assert reason in reasons[name], (name, reasons[name])
        assert any(name in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

    path = write_skipped(tmp_path / "run", train.skipped)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {Path(r["path"]).name: r["reason"] for r in rows} == reasons

    # indices are stable: a second dataset reuses the cached probes and gives the same items
    again = build("folder", manifest=str(media / "manifest.csv"), fps=8, sample_rate=8000, segment=1.0,
                  cache_root=str(tmp_path))
    assert again.media("train").items == train.items
    assert (tmp_path / "probes").is_dir()


def test_strict_makes_bad_media_an_error_naming_the_file(media, tmp_path):
    ds = build("folder", manifest=str(media / "manifest.csv"), strict=True, segment=1.0, cache_root=str(tmp_path))
    with pytest.raises(SavaError, match=r"silent\.mp4: no audio track"):
        ds.media("train")
    assert len(ds.media("test")) == 2  # the test split has only good media


# ----------------------------------------------------------------------------------- manifests


def test_folder_manifest_problems_are_reported_at_once(tmp_path):
    (tmp_path / "m.csv").write_text("path,caption\na.mp4,x\nb.mp4,y\n")
    with pytest.raises(SavaError, match=r"2 problem\(s\)[\s\S]*row 1: no 'video' field[\s\S]*row 2"):
        build("folder", manifest=str(tmp_path / "m.csv"))
    (tmp_path / "m.txt").write_text("")
    with pytest.raises(SavaError, match="csv"):
        build("folder", manifest=str(tmp_path / "m.txt"))
    with pytest.raises(SavaError, match="manifest not found"):
        build("folder", manifest=str(tmp_path / "nope.csv"))


def test_vggsound_csv(media, tmp_path):
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text(
        "good,0,dog barking,train\n"
        'abc-_1,30,"people eating, crunching",train\n'
        "xyz,12,playing drums,test\n"
    )
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "xyz_000012.mp4", seconds=2.0)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"id": "xyz_000012", "caption": "someone plays drums"}) + "\n")
    ds = build("vggsound", manifest=str(csv_path), media_root=str(tmp_path / "clips"),
               captions=str(tmp_path / "captions.jsonl"), segment=1.0, cache_root=str(tmp_path / "cache"))
    assert ds.splits == ("train", "val", "test")
    train = ds.sources("train")
    assert [Path(s.video).name for s in train] == ["good_000000.mp4", "abc-_1_000030.mp4"]
    assert train[1].caption == "people eating, crunching"  # default caption = label
    assert train[1].meta == {"ytid": "abc-_1", "start_time": 30, "label": "people eating, crunching"}
    test = ds.media("test")
    assert test[0].caption == "someone plays drums" and len(test) == 2
    assert ds.sources("val") == [] and len(ds.media("val")) == 0

    pattern = build("vggsound", manifest=str(csv_path), media_root=str(tmp_path), filename="{split}/{ytid}.mkv")
    assert pattern.sources("test")[0].video == str(tmp_path / "test" / "xyz.mkv")
    moved = build("vggsound", manifest=str(csv_path), media_root=str(tmp_path), val_fraction=0.999)
    assert len(moved.sources("val")) == 2 and len(moved.sources("train")) == 0

    csv_path.write_text("good,0,dog barking\nbad,zero,cat,train\n")
    with pytest.raises(SavaError, match=r"line 1: 3 fields[\s\S]*line 2: start 'zero'"):
        build("vggsound", manifest=str(csv_path), media_root=str(tmp_path))


def test_audiocaps_csvs(tmp_path):
    folder = tmp_path / "audiocaps"
    folder.mkdir()
    header = "audiocap_id,youtube_id,start_time,caption\n"
    (folder / "train.csv").write_text(header + "91139,r1nicOVtvkQ,130,A woman talks nearby\n")
    (folder / "test.csv").write_text(header + "".join(f"{i},lo7pt1kESmA,30,caption {i}\n" for i in range(5))
                                     + "9,Zs0jHH8dVls,0,\"Wind, then a dog\"\n")
    ds = build("audiocaps", manifest=str(folder), media_root=str(tmp_path))
    test = ds.sources("test")
    assert len(test) == 2 and test[0].caption == "caption 0"
    assert (test[0].meta["captions"] == [f"caption {i}" for i in range(5)]
            and test[0].meta["audiocap_ids"] == list("01234"))
    assert Path(test[0].video).name == "lo7pt1kESmA_000030.mp4" and test[1].caption == "Wind, then a dog"
    assert ds.sources("val") == [] and len(ds.sources("train")) == 1

    one = build("audiocaps", manifest=str(folder / "train.csv"), media_root=str(tmp_path))
    assert one.sources("train")[0].id == "r1nicOVtvkQ_000130" and one.sources("test") == []
    (folder / "extra.csv").write_text(header)
    with pytest.raises(SavaError, match="named after its split"):
        build("audiocaps", manifest=str(folder / "extra.csv"), media_root=str(tmp_path))


def test_params_are_validated():
    model = get_registries()["dataset"].get("folder").load_params()
    with pytest.raises(ValueError, match="overlap"):
        model.model_validate({"manifest": "m.csv", "segment": 2, "overlap": 2})
    with pytest.raises(ValueError, match="height and width"):
        model.model_validate({"manifest": "m.csv", "height": 16})
    with pytest.raises(ValueError):
        model.model_validate({"manifest": "m.csv", "segment": 12})


# ----------------------------------------------------------------------------------- the plug-in kit and the CLI


class TestFolderDataset(ComponentTests):
    kind, name = "dataset", "folder"
    expected_shape = (8, 3, 16, 16)

    @pytest.fixture(autouse=True)
    def _params(self, media, tmp_path):
        self.params = {"manifest": str(media / "good.jsonl"), "fps": 8, "sample_rate": 8000, "height": 16,
                       "width": 16, "segment": 1.0, "cache_root": str(tmp_path)}

    def inputs(self):
        return ("test",)


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(data_app, name="data")
    app.add_typer(cache_app, name="cache")
    return app


def test_data_check_reports_every_problem_and_exits_2(media):
    from conftest import run_cli

    assert run_cli("data", "check", str(media / "manifest.csv")).returncode == 2  # through the real `sava` entry point
    result = CliRunner().invoke(cli(), ["data", "check", str(media / "manifest.csv")])
    assert result.exit_code == 2, result.output
    for name, reason in EXPECTED_SKIPS.items():
        if name != "short.mp4":  # a short clip is usable media; segmentation skips it
            assert any(name in line and reason in line for line in result.output.splitlines()), name
    assert "10 clip(s) checked: 4 usable, 6 with problems" in result.output

    result = CliRunner().invoke(cli(), ["data", "check", str(media / "good.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["clips"] == 3 and report["problems"] == []


def test_data_check_manifest_errors_are_sava_errors(tmp_path):
    result = CliRunner().invoke(cli(), ["data", "check", str(tmp_path / "none.csv"), "--kind", "vggsound"])
    assert isinstance(result.exception, SavaError) and "manifest not found" in str(result.exception)
    result = CliRunner().invoke(cli(), ["data", "check", "x.csv", "--kind", "kinetics"])
    assert isinstance(result.exception, SavaError) and "--kind" in str(result.exception)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("video,caption\nclip.mp4,un caf\u00e9\n".encode("latin-1"))
    result = CliRunner().invoke(cli(), ["data", "check", str(latin1)])
    assert isinstance(result.exception, SavaError) and "not UTF-8 text" in str(result.exception)
