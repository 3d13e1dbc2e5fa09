"""`sava eval` end to end on small clips written here, with tiny extractors: every metric, JSON with
protocols, saved reference statistics, and refusal of mismatched protocols."""

from __future__ import annotations

import json
import math

import pytest
import torch
import typer
from typer.testing import CliRunner

from conftest import EXAMPLE_PLUGIN, run_cli
from sava_cli.eval_cmd import eval_command
from sava_core.clips import ClipSet
from sava_core.errors import SavaError
from sava_core.evaluation import combine_results, evaluate, parse_metric_spec
from sava_core.media_io import write_mp4, write_wav
from sava_core.protocol import ProtocolMismatchError, protocol_id

FPS, RATE, FRAMES, SIDE, N = 8.0, 16000, 16, 32, 4
IDS = [f"clip{i}" for i in range(N)]

FVD = "fvd extractor_params.preset=tiny extractor_params.size=32"
FAD = "fad extractor_params.preset=tiny"
ALL = [
    FVD, FAD,
    "fd extractor_params.preset=tiny",
    "kl extractor_params.preset=tiny",
    "isc extractor_params.preset=tiny splits=2",
    "clap_score extractor_params.preset=tiny scale=100",
    "avhscore extractor_params.preset=tiny extractor_params.size=32",
    "cavp_sim extractor_params.preset=tiny extractor_params.size=32",
]


def _clip(i: int, bright: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i + 100 * bright)
    base = 0.75 if bright else 0.2
    video = (base + 0.2 * torch.rand(FRAMES, 3, SIDE, SIDE, generator=g)).clamp(0, 1)
    t = torch.arange(round(FRAMES / FPS * RATE)) / RATE
    if bright:
        audio = 0.3 * (torch.rand(t.shape, generator=g) * 2 - 1)
    else:
        audio = 0.5 * torch.sin(2 * math.pi * (220 + 40 * i) * t)
    return video, audio[None]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Two folders of the same clip ids with different content (dark + tones, bright + noise)."""
    root = tmp_path_factory.mktemp("eval_sets")
    for name, bright in (("dark", False), ("bright", True)):
        folder = root / name
        for i, cid in enumerate(IDS):
            video, audio = _clip(i, bright)
            write_mp4(folder / f"{cid}.mp4", video, FPS, audio, RATE)
            (folder / f"{cid}.txt").write_text("bright noise" if bright else f"a tone of {220 + 40 * i} hertz")
    return root


def _cli(*args: str):
    app = typer.Typer()
    app.command()(eval_command)
    return CliRunner().invoke(app, list(args))


def _scores(path):
    return {s["label"]: s for s in json.loads(path.read_text())["scores"]}


def test_every_metric_end_to_end(sets, tmp_path):
    out = tmp_path / "scores.json"
    args = [str(sets / "bright"), "--reference", str(sets / "dark"), "--out", str(out)]
    for m in ALL:
        args += ["--metric", m]
    result = _cli(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    scores = _scores(out)
    assert set(scores) == {"fvd", "fad", "fd", "kl", "isc", "clap_score", "avhscore", "cavp_sim"}
    for label, s in scores.items():
        assert all(math.isfinite(v) for v in s["values"].values()), label
        assert s["protocol"]["n_generated"] == N and s["protocol_id"] == protocol_id(s["protocol"])
    fad = scores["fad"]["protocol"]
    assert fad["extractor"]["extractor"] == "vggish" and fad["extractor"]["sample_rate"] == 16000
    assert fad["extractor"]["resampler"].startswith("torchaudio") and fad["rows_generated"] == 2 * N
    assert fad["n_reference"] == N and "checkpoint_sha256" in fad["extractor"]
    fvd = scores["fvd"]["protocol"]["extractor"]
    assert fvd["frames"] == 16 and fvd["frame_stride"] == 1 and "no crop" in fvd["resize"]
    assert scores["fd"]["values"]["fd"] > 0 and scores["kl"]["values"]["kl"] > 0
    assert 1 <= scores["isc"]["values"]["isc"] <= 527
    assert -100 <= scores["clap_score"]["values"]["clap_score"] <= 100
    assert set(scores["avhscore"]["protocol"]["extractor"]) == {"vision", "audio"}
    assert "fvd" in result.output and "protocol" in result.output  # the printed table


def test_identical_sets_score_zero_and_different_sets_do_not(sets):
    same = evaluate(sets / "dark", [FAD, FVD, "kl extractor_params.preset=tiny"], reference=sets / "dark")
    values = {s["label"]: s["values"][s["metric"]] for s in same.scores}
    assert abs(values["fad"]) < 1e-6 and abs(values["fvd"]) < 1e-6 and abs(values["kl"]) < 1e-9
    other = evaluate(sets / "bright", [FAD, FVD], reference=sets / "dark")
    assert all(s["values"][s["metric"]] > 1e-3 for s in other.scores)


def test_saved_stats_give_the_same_number(sets, tmp_path):
    stats = tmp_path / "stats"
    metrics = [FAD, "fad extractor_params.preset=tiny infinity=true infinity_min=2 infinity_points=3 label=fad_inf",
               "kl extractor_params.preset=tiny"]
    first = evaluate(sets / "bright", metrics, reference=sets / "dark", save_stats=stats)
    assert (stats / "stats.json").is_file()
    out = tmp_path / "again.json"
    result = _cli(str(sets / "bright"), "--reference", str(stats), "--out", str(out),
                  *sum((["-m", m] for m in metrics), []))
    assert result.exit_code == 0, result.output + repr(result.exception)
    again = _scores(out)
    for s in first.scores:
        assert again[s["label"]]["values"] == pytest.approx(s["values"], rel=1e-12, abs=1e-12)
        assert again[s["label"]]["protocol_id"] == s["protocol_id"]
    assert "saved statistics" in again["fad"]["protocol"]["reference"]
    assert "fad_inf" in again["fad_inf"]["values"]


def test_a_protocol_mismatch_is_refused(sets, tmp_path):
    stats = tmp_path / "stats"
    evaluate(sets / "dark", [FAD], reference=sets / "dark", save_stats=stats)
    with pytest.raises(ProtocolMismatchError, match=r"extractor\.checkpoint: reference .*seed 0.*this run .*seed 1"):
        evaluate(sets / "bright", [FAD + " extractor_params.seed=1"], reference=stats)
    with pytest.raises(ProtocolMismatchError, match=r"extractor\.clip_seconds: reference None, this run 1\.0"):
        evaluate(sets / "bright", [FAD + " extractor_params.clip_seconds=1.0"], reference=stats)
    result = _cli(str(sets / "bright"), "-r", str(stats), "-m", FAD + " extractor_params.seed=1")
    assert isinstance(result.exception, SavaError)


def test_combining_results_never_mixes_protocols_silently(sets):
    a = evaluate(sets / "bright", [FAD], reference=sets / "dark").document
    b = evaluate(sets / "bright", [FAD + " extractor_params.clip_seconds=1.0"], reference=sets / "dark").document
    assert len(combine_results([a, a])) == 2
    with pytest.raises(ProtocolMismatchError, match="clip_seconds"):
        combine_results([a, b])
    rows = combine_results([a, b], allow_mixed_protocols=True)
    assert {r["metric"] for r in rows} == {"fad", f"fad@{b['scores'][0]['protocol_id']}"}


def test_manifest_and_audio_only_clips(sets, tmp_path):
    for i, cid in enumerate(IDS):
        write_wav(tmp_path / "wavs" / f"w{i}.wav", _clip(i, True)[1], RATE)
    manifest = tmp_path / "gen.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"wavs/w{i}.wav", "id": cid, "caption": "noise"}) + "\n"
                                for i, cid in enumerate(IDS)))
    clips = ClipSet.from_path(manifest)
    assert clips.ids == IDS and clips[0].video is None and clips[0].caption == "noise"
    result = evaluate(manifest, [FAD, "kl extractor_params.preset=tiny"], reference=sets / "dark")
    assert {s["label"] for s in result.scores} == {"fad", "kl"}
    with pytest.raises(SavaError, match=r"metric 'fvd' \(fvd from plug-in metrics\) needs video; clip 'clip0'"):
        evaluate(manifest, [FVD], reference=sets / "dark")


def test_what_a_metric_needs_is_checked_clip_by_clip(tmp_path):
    """A metric declares what it reads; a clip without it is left out and listed (with --strict: an
    error naming the clip) before the metric sees it."""
    for i in range(2):
        write_wav(tmp_path / "wavs" / f"w{i}.wav", _clip(i, True)[1], RATE)
    (tmp_path / "wavs" / "w0.txt").write_text("noise")
    result = evaluate(tmp_path / "wavs", ["clap_score extractor_params.preset=tiny"])
    assert result.scores[0]["protocol"]["n_generated"] == 1
    assert [(s["id"], s["reason"], s["metrics"]) for s in result.skipped] == [("w1", "no caption", ["clap_score"])]
    with pytest.raises(SavaError, match=r"needs caption; clip 'w1' \(.*w1.wav\) has none; add a <stem>.txt caption"):
        evaluate(tmp_path / "wavs", ["clap_score extractor_params.preset=tiny"], strict=True)


def test_a_third_party_metric_runs_in_sava_eval(with_example_plugin, example_site, sets, tmp_path):
    """The example plug-in's `loudness_gap` (written to the Metric contract alone) through the CLI,
    with reference statistics saved and reused."""
    out, stats = tmp_path / "scores.json", tmp_path / "stats"
    result = run_cli("eval", str(sets / "dark"), "--reference", str(sets / "bright"), "--metric", "loudness_gap",
                     "--save-stats", str(stats), "--out", str(out), extra_path=[EXAMPLE_PLUGIN, example_site])
    assert result.returncode == 0, result.stderr
    score = _scores(out)["loudness_gap"]
    # dark: 0.5-amplitude tones, -9.0 dB FS; bright: uniform noise of +-0.3, -15.2 dB FS (AAC moves both a little)
    assert score["values"]["loudness_db"] == pytest.approx(-9.03, abs=0.5)
    assert score["values"]["loudness_gap"] == pytest.approx(6.2, abs=0.7)
    again = evaluate(sets / "dark", ["loudness_gap"], reference=stats)
    assert again.scores[0]["values"] == score["values"]
    with pytest.raises(ProtocolMismatchError, match="floor_db"):
        evaluate(sets / "dark", ["loudness_gap floor_db=-60"], reference=stats)


def test_a_metric_that_breaks_its_contract_is_named(with_example_plugin, sets, monkeypatch):
    from sava_example_plugin.metric import LoudnessGap

    monkeypatch.setattr(LoudnessGap, "compute", lambda self, generated, reference=None: {"gap": 1.0})
    with pytest.raises(SavaError, match=r"loudness_gap from plug-in example\): compute\(\) returned dict"):
        evaluate(sets / "dark", ["loudness_gap"], reference=sets / "bright")


def test_user_mistakes_are_clear(sets, tmp_path):
    with pytest.raises(SavaError, match="needs --reference"):
        evaluate(sets / "dark", [FAD], save_stats=tmp_path / "s")
    with pytest.raises(SavaError, match="give --reference"):
        evaluate(sets / "dark", [FAD])
    with pytest.raises(SavaError, match="labels repeat"):
        evaluate(sets / "dark", [FAD, FAD], reference=sets / "dark")
    with pytest.raises(SavaError, match="bad parameters for metric 'fad'"):
        evaluate(sets / "dark", ["fad nonsense=1"], reference=sets / "dark")
    with pytest.raises(SavaError, match="bad extractor_params"):
        evaluate(sets / "dark", ["fad extractor_params.nonsense=1"], reference=sets / "dark")
    with pytest.raises(SavaError, match="no clips"):
        evaluate(tmp_path, [FAD])
    with pytest.raises(SavaError, match="checkpoint .* not found"):
        evaluate(sets / "dark", ["fad extractor_params.checkpoint=/no/such/vggish.pth"], reference=sets / "dark")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "clip.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(SavaError, match="cannot read .*clip.wav as audio"):
        evaluate(tmp_path / "broken", [FAD], reference=sets / "dark")
    with pytest.raises(SavaError, match="infinity=true: need 2 <= n_min"):
        evaluate(sets / "dark", [FAD + " infinity=true infinity_min=100000"], reference=sets / "dark")


def test_metric_specs_parse_yaml_values_and_dotted_keys():
    req = parse_metric_spec("fad extractor_params.clip_seconds=4 extractor_params.preset=tiny label=fad4 infinity=true")
    assert req.name == "fad" and req.label == "fad4"
    assert req.params == {"extractor_params": {"clip_seconds": 4, "preset": "tiny"}, "infinity": True}
    with pytest.raises(SavaError, match="not key=value"):
        parse_metric_spec("fad preset")


# ------------------------------------------------------------------------------------------ streaming, skipped clips


def _video_only_mp4(path, frames: int = 16, side: int = SIDE) -> None:
    """An mp4 with a video stream and no audio track."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((side, side, 3), 10 * k, np.uint8), format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _copy_set(src, dst, ids=IDS):
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for cid in ids:
        for suffix in (".mp4", ".txt"):
            shutil.copy(src / f"{cid}{suffix}", dst / f"{cid}{suffix}")
    return dst


def test_clips_are_decoded_as_the_extractor_asks(tmp_path):
    """Each extractor states the frames and size it reads; the reader decodes only those (resized as
    decoded, no audio for a video tower) and the result equals preparing the whole clip in memory."""
    from conftest import assert_close_f32
    from sava_core.clips import read_clip, with_request
    from sava_core.media_io import read_mp4
    from sava_core.registry import get_registries

    g = torch.Generator().manual_seed(0)
    write_mp4(tmp_path / "c.mp4", torch.rand(37, 3, 40, 56, generator=g), 7.5,
              0.3 * torch.rand(1, round(37 / 7.5 * RATE), generator=g), RATE)
    video, audio, fps, rate = read_mp4(tmp_path / "c.mp4")
    whole = read_clip(tmp_path / "c.mp4", "c")
    assert torch.equal(whole.video, video) and torch.equal(whole.audio, audio) and whole.request is None
    clips = ClipSet.from_path(tmp_path)
    extractors = get_registries()["extractor"]
    for name, params, frames in [
        ("i3d", {"frames": 8}, 8), ("i3d", {"frames": 5, "frame_stride": 3}, 5), ("i3d", {"frames": 4, "fps": 2.0}, 4),
        ("i3d", {"frames": 9, "fps": 20.0, "frame_stride": 2}, 9), ("i3d", {"frames": 37}, 37),
        ("cavp", {}, 19), ("cavp", {"clip_seconds": 2.0}, 8), ("imagebind", {}, 37),
    ]:
        extractor = extractors.build(name, {"preset": "tiny", "size": 24, **params})
        item = with_request(clips, extractor.reads())[0]
        assert item.audio is None and item.streams == {"video", "audio"}, name
        assert tuple(item.video.shape) == (frames, 3, 24, 24), (name, params)
        from_disk = extractor.prepare(item)
        in_memory = extractor.prepare(type(item)("c", video, fps, audio, rate))
        assert_close_f32(from_disk, in_memory, msg=f"{name} {params}")  # the same resize, frame by frame
    fad = extractors.build("vggish", {"preset": "tiny"})
    item = with_request(clips, fad.reads())[0]
    assert item.video is None and torch.equal(item.audio, audio)


def test_bad_clips_are_listed_and_skipped(sets, tmp_path):
    gen = _copy_set(sets / "bright", tmp_path / "gen")
    (gen / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (gen / "empty.mp4").write_bytes(b"")
    _video_only_mp4(gen / "silent.mp4")
    _video_only_mp4(gen / "short.mp4", frames=8)
    out = tmp_path / "scores.json"
    result = evaluate(gen, [FVD, FAD], reference=sets / "dark", out=out)
    n = {s["label"]: s["protocol"]["n_generated"] for s in result.scores}
    assert n == {"fvd": N + 1, "fad": N}  # the silent clip counts for FVD only
    reasons = {(s["id"], tuple(s["metrics"])): s["reason"] for s in result.skipped}
    assert reasons.keys() == {("broken", ("fvd", "fad")), ("empty", ("fvd", "fad")), ("silent", ("fad",)),
                              ("short", ("fvd",)), ("short", ("fad",))}
    assert reasons["broken", ("fvd", "fad")].startswith("not readable media")
    assert reasons["empty", ("fvd", "fad")] == "empty file (0 bytes)"
    assert reasons["silent", ("fad",)] == "no audio"
    assert reasons["short", ("fvd",)].startswith("too short: 8 frame(s) after sampling")
    assert all(s["set"] == "generated" and s["path"].startswith(str(gen)) for s in result.skipped)
    assert json.loads(out.read_text())["skipped"] == result.skipped
    # FAD on the rest equals FAD on a folder of the good clips alone
    clean = evaluate(_copy_set(sets / "bright", tmp_path / "clean"), [FAD], reference=sets / "dark")
    assert clean.scores[0]["values"] == result.scores[1]["values"]

    printed = _cli(str(gen), "--reference", str(sets / "dark"), "--metric", FAD)
    assert printed.exit_code == 0, printed.output + repr(printed.exception)
    assert "skipped" in printed.output and f"{gen / 'empty.mp4'}: empty file (0 bytes) [fad]" in printed.output
    strict = run_cli("eval", str(gen), "--reference", str(sets / "dark"), "--metric", FAD, "--strict")
    assert strict.returncode == 2 and "broken.mp4" in strict.stderr and "not readable media" in strict.stderr
    mixed = _copy_set(sets / "bright", tmp_path / "mixed", IDS[:2])
    _video_only_mp4(mixed / "silent.mp4")
    with pytest.raises(SavaError, match=r"metric 'fad' .* needs audio; clip 'silent' \(.*silent.mp4\) has none"):
        evaluate(mixed, [FAD], reference=sets / "dark", strict=True)


def test_a_paired_metric_leaves_out_the_pairs_of_skipped_reference_clips(sets, tmp_path):
    ref = _copy_set(sets / "dark", tmp_path / "ref")
    (ref / "clip1.mp4").write_bytes(b"not an mp4 at all")
    result = evaluate(sets / "bright", ["kl extractor_params.preset=tiny"], reference=ref)
    protocol = result.scores[0]["protocol"]
    assert protocol["n_generated"] == protocol["pairs"] == N - 1 and protocol["n_reference"] == N - 1
    assert [(s["set"], s["id"]) for s in result.skipped] == [("generated", "clip1"), ("reference", "clip1")]
    assert result.skipped[0]["reason"].startswith(f"its reference clip {ref / 'clip1.mp4'} was skipped")


def test_a_clip_one_pass_cannot_read_is_left_out_of_every_pass(sets, tmp_path, monkeypatch):
    """AVHScore reads video and audio in two passes; a clip whose audio fails after its video was
    used is left out of both (the metric runs again), so the pairs stay aligned."""
    import sava_core.media_io as media_io

    read_audio = media_io.read_mp4_audio

    def failing(path):
        if "clip2" in str(path):
            raise ValueError("corrupt audio packet")
        return read_audio(path)

    metric = "avhscore extractor_params.preset=tiny extractor_params.size=32"
    monkeypatch.setattr(media_io, "read_mp4_audio", failing)
    result = evaluate(sets / "dark", [metric])
    assert [(s["id"], s["reason"]) for s in result.skipped] == [("clip2", "audio decode error: corrupt audio packet")]
    monkeypatch.setattr(media_io, "read_mp4_audio", read_audio)
    without = evaluate(_copy_set(sets / "dark", tmp_path / "three", ["clip0", "clip1", "clip3"]), [metric])
    assert result.scores[0]["protocol"]["n_generated"] == 3
    assert result.scores[0]["values"] == pytest.approx(without.scores[0]["values"], rel=1e-6)


def test_a_set_without_any_usable_clip_is_an_error(sets, tmp_path):
    (tmp_path / "bad").mkdir()
    for i in range(2):
        (tmp_path / "bad" / f"b{i}.mp4").write_bytes(b"garbage")
    with pytest.raises(SavaError, match=r"metric 'fad' .*no usable clip in .*bad: cannot read .*b0.mp4 as an mp4: "
                                        r"not readable media .*\(and 1 more clip\(s\) skipped\)"):
        evaluate(tmp_path / "bad", [FAD], reference=sets / "dark")


# ------------------------------------------------------------------------------------------ TorchScript I3D


def _scripted_i3d(path, net, shape):
    """A TorchScript I3D as StyleGAN-V's file is called (rescale / resize / return_features), built
    from ``net`` traced (its forward loops over named blocks, which scripting cannot) inside a
    scripted wrapper."""
    import warnings

    import torch.nn.functional as F
    from torch import nn

    class Detector(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.detector = inner

        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            if rescale:
                x = x / 127.5 - 1
            if resize:
                x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
            return self.detector(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent padding
        torch.jit.script(Detector(torch.jit.trace(net, torch.zeros(shape)))).save(str(path))


def test_a_torchscript_i3d_converts_to_a_state_dict_the_extractor_loads(tmp_path):
    from sava_metrics.common import build_model, load_into, load_state_dict_file
    from sava_metrics.i3d import InceptionI3d, convert_torchscript

    shape = (1, 3, 16, 64, 64)
    source = build_model("tiny", 3, lambda: InceptionI3d(400, divisor=16))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _scripted_i3d(tmp_path / "i3d_torchscript.pt", source, shape)
    assert next(iter(torch.jit.load(str(tmp_path / "i3d_torchscript.pt")).state_dict())).startswith("detector.")
    with pytest.raises(SavaError, match="weights_only=True"):
        load_state_dict_file(tmp_path / "i3d_torchscript.pt")  # why the conversion exists
    out = convert_torchscript(tmp_path / "i3d_torchscript.pt", tmp_path / "i3d.safetensors",
                              InceptionI3d(400, divisor=16), shape)
    net = InceptionI3d(400, divisor=16).eval()
    load_into(net, load_state_dict_file(out), "i3d", out, "tiny I3D")
    assert torch.equal(net(x), source(x))

    # another port's names (BatchNorm as `batch3d`): placed by order and shape, then checked by running both
    renamed = _batch3d_names(build_model("tiny", 4, lambda: InceptionI3d(400, divisor=16)))
    _scripted_i3d(tmp_path / "renamed.pt", renamed, shape)
    assert any(".batch3d." in k for k in torch.jit.load(str(tmp_path / "renamed.pt")).state_dict())
    out = convert_torchscript(tmp_path / "renamed.pt", tmp_path / "renamed.safetensors",
                              InceptionI3d(400, divisor=16), shape)
    load_into(net, load_state_dict_file(out), "i3d", out, "tiny I3D")
    assert torch.equal(net(x), renamed(x))

    with pytest.raises(SavaError, match="tensors do not match Inception-I3D's"):
        convert_torchscript(tmp_path / "i3d_torchscript.pt", tmp_path / "x.safetensors",
                            InceptionI3d(400, divisor=8), shape)
    _scripted_i3d(tmp_path / "other.pt", _Doubled(source), shape)
    with pytest.raises(SavaError, match=r"outputs differ .*max abs difference"):  # same tensors, another function
        convert_torchscript(tmp_path / "other.pt", tmp_path / "x.safetensors", InceptionI3d(400, divisor=16), shape)
    assert not (tmp_path / "x.safetensors").exists()


class _Batch3dUnit(torch.nn.Module):
    """A Unit3D under another port's names (its BatchNorm called ``batch3d``), computing the same."""

    def __init__(self, unit):
        super().__init__()
        self.conv3d, self.batch3d, self.kernel, self.stride = unit.conv3d, unit.bn, unit.kernel, unit.stride

    def forward(self, x):
        from sava_metrics.i3d import _pad3d

        return torch.relu(self.batch3d(self.conv3d(_pad3d(x, self.kernel, self.stride))))


def _batch3d_names(net):
    from sava_metrics.i3d import Unit3D

    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Unit3D) and not child.is_logits:
                setattr(parent, name, _Batch3dUnit(child))
    return net


class _Doubled(torch.nn.Module):
    """The same tensors computing something else (inputs doubled)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(2 * x)
