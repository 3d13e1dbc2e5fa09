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
    """A metric declares what it reads; a clip without it is named before the metric runs."""
    for i in range(2):
        write_wav(tmp_path / "wavs" / f"w{i}.wav", _clip(i, True)[1], RATE)
    (tmp_path / "wavs" / "w0.txt").write_text("noise")
    with pytest.raises(SavaError, match=r"needs caption; clip 'w1' \(.*w1.wav\) has none; add a <stem>.txt caption"):
        evaluate(tmp_path / "wavs", ["clap_score extractor_params.preset=tiny"])


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
