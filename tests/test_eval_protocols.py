"""`sava eval --protocol`: av-benchmark's and JavisBench's column sets with the settings they pin, the
weights folder and its SHA256SUMS, replacing a column, and the record naming the protocol; the
JavisBench forms of FVD's frame preparation and of AV-Align."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from conftest import REPO, run_cli
from sava_core.clips import MediaItem
from sava_core.errors import SavaError
from sava_core.evaluation import parse_metric_spec
from sava_core.media_io import write_mp4
from sava_core.registry import get_registries
from sava_metrics.avalign import javisbench_peak_iou, peak_iou
from sava_metrics.i3d import I3D, letterbox
from sava_metrics.params import I3DParams

PROTOCOLS = ("av-benchmark", "javisbench")


def _weights(tmp_path, name):
    """A folder holding (empty) files under every weight name ``name`` reads."""
    preset = get_registries()["eval_protocol"].build(name)
    folder = tmp_path / name
    for file in preset.weights.values():
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        if "clap" in file:  # a model folder
            (folder / file).mkdir()
            (folder / file / "model.safetensors").write_bytes(b"clap")
        else:
            (folder / file).write_bytes(file.encode())
    return preset, folder


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_column_is_a_valid_metric_request(name, tmp_path):
    preset, folder = _weights(tmp_path, name)
    metrics = get_registries()["metric"]
    specs = preset.metric_specs(name, folder)
    assert list(specs) == [c.label for c in preset.columns]
    for label, spec in specs.items():
        request = parse_metric_spec(spec)
        assert request.label == label
        metrics.get(request.name).load_params().model_validate(request.params)  # every pinned key exists


def test_the_settings_each_benchmark_pins(tmp_path):
    _, folder = _weights(tmp_path, "av-benchmark")
    av = {k: parse_metric_spec(s).params for k, s in get_registries()["eval_protocol"].build("av-benchmark")
          .metric_specs("av-benchmark", folder).items()}
    assert all(av[c]["extractor_params"]["clip_seconds"] == 8 for c in ("FD-VGG", "FD-PANN", "FD-PASST", "KL-PASST"))
    assert av["FD-PASST"]["extractor"] == "passt" and av["ISC-PANNS"]["seed"] == 2020
    assert av["IB-Score"]["duration_seconds"] == 8 and av["DeSync"]["duration_seconds"] == 8
    _, folder = _weights(tmp_path, "javisbench")
    jb = {k: parse_metric_spec(s).params for k, s in get_registries()["eval_protocol"].build("javisbench")
          .metric_specs("javisbench", folder).items()}
    assert jb["fvd"]["extractor_params"] | {"checkpoint": None} == {
        "checkpoint": None, "frames": 16, "size": 224, "preprocessing": "javisbench"}
    assert jb["av_align"] == {"implementation": "javisbench"}
    # the extractors the columns build record those settings (tiny weights stand in for the released ones)
    fvd = get_registries()["metric"].build("fvd", {**jb["fvd"], "extractor_params": {
        **jb["fvd"]["extractor_params"], "preset": "tiny", "checkpoint": None}}, registries=get_registries())
    record = fvd.extractor.protocol()
    assert record["frames"] == 16 and "224" in record["resize"] and "javisbench" in record["preprocessing"]


def test_missing_weights_are_listed_at_once_and_sha256sums_pin_the_hashes(tmp_path):
    preset, folder = _weights(tmp_path, "javisbench")
    (folder / "i3d_pretrained_400.pt").unlink()
    (folder / "cavp_epoch66.safetensors").unlink()
    with pytest.raises(SavaError, match="i3d_pretrained_400.pt \\(fvd\\), cavp_epoch66.safetensors"):
        preset.metric_specs("javisbench", folder)
    preset, folder = _weights(tmp_path / "again", "javisbench")
    digest = hashlib.sha256(b"imagebind_huge.pth").hexdigest()
    clap = hashlib.sha256(b"clap").hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  imagebind_huge.pth\n{clap} *clap-htsat-unfused/model.safetensors\n")
    specs = {k: parse_metric_spec(s).params for k, s in preset.metric_specs("javisbench", folder).items()}
    assert specs["avh_score"]["extractor_params"]["sha256"] == digest
    assert specs["clap_score"]["extractor_params"]["sha256"] == clap
    assert "sha256" not in specs["fvd"]["extractor_params"]
    (folder / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(SavaError, match="SHA256SUMS:1: not a sha256sum line"):
        preset.metric_specs("javisbench", folder)


def _clips(folder, n=3):
    """Small clips with a flash and a click at a different time in each."""
    for i in range(n):
        video = torch.full((16, 3, 24, 40), 0.1)
        video[4 + 3 * i] = 0.9
        audio = torch.zeros(1, 16000)
        audio[0, (4 + 3 * i) * 1000:(4 + 3 * i) * 1000 + 400] = 0.8
        write_mp4(folder / f"clip{i}.mp4", video, 16.0, audio, 16000)
        (folder / f"clip{i}.txt").write_text(f"a click at frame {4 + 3 * i}")


def test_sava_eval_protocol_runs_replaces_columns_and_records_the_protocol(tmp_path):
    _clips(tmp_path / "gen")
    weights = tmp_path / "w"
    weights.mkdir()
    tiny = {"fvd": "fvd extractor_params.preset=tiny extractor_params.size=32 extractor_params.frames=8 "
                   "extractor_params.preprocessing=javisbench",
            "clap_score": "clap_score extractor_params.preset=tiny",
            "cavp_score": "cavp_sim extractor_params.preset=tiny extractor_params.size=32",
            "avh_score": "avhscore extractor_params.preset=tiny extractor_params.size=32"}
    out = tmp_path / "scores.json"
    args = ["eval", str(tmp_path / "gen"), "--reference", str(tmp_path / "gen"), "--protocol", "javisbench",
            "--weights", str(weights), "--out", str(out)]
    for label, spec in tiny.items():
        args += ["--metric", f"{spec} label={label}"]
    done = run_cli(*args, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "columns sava does not compute" in done.stdout and "kvd" in done.stdout
    document = json.loads(out.read_text())
    assert document["eval_protocol"]["name"] == "javisbench" and "6af1a7a" in document["eval_protocol"]["source"]
    assert [s["label"] for s in document["scores"]] == ["fvd", "clap_score", "cavp_score", "avh_score", "av_align"]
    assert {s["eval_protocol"] for s in document["scores"]} == {"javisbench"}
    by_label = {s["label"]: s for s in document["scores"]}
    assert by_label["av_align"]["protocol"]["implementation"] == "javisbench"
    assert by_label["fvd"]["protocol"]["extractor"]["preprocessing"].startswith("javisbench")
    assert "checkpoint_sha256" in by_label["fvd"]["protocol"]["extractor"]  # the weights' hash (None: tiny)
    # an empty weights folder without the replacements: one message listing every missing file, exit 2
    missing = run_cli("eval", str(tmp_path / "gen"), "--protocol", "javisbench", "--weights", str(weights), cwd=REPO)
    assert missing.returncode == 2 and "i3d_pretrained_400.pt" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run_cli("eval", str(tmp_path / "gen"), "--protocol", "javisbenc", cwd=REPO)
    assert unknown.returncode == 2 and "javisbench" in unknown.stderr


def test_javisbench_av_align_counts_every_onset_near_any_peak():
    assert javisbench_peak_iou([0.5, 0.52], [0.5], fps=8) == pytest.approx(2.0, rel=1e-5)  # above 1, as upstream
    assert peak_iou([0.5, 0.52], [0.5], fps=8) == pytest.approx(0.5)
    assert javisbench_peak_iou([], [], fps=8) == 0.0


def test_letterbox_centres_the_resized_frame_on_black():
    frames = torch.ones(2, 3, 90, 160)
    boxed = letterbox(frames, 224)
    assert boxed.shape == (2, 3, 224, 224)
    rows = boxed[0, 0].mean(1)
    assert torch.equal(rows[:49], torch.zeros(49)) and torch.equal(rows[49 + 126:], torch.zeros(49))  # 126 = 224*90/160
    assert torch.allclose(rows[49:49 + 126], torch.ones(126))


def test_javisbench_fvd_frames_spread_over_the_clip_in_its_value_range():
    extractor = I3D(I3DParams(preset="tiny", frames=4, size=16, preprocessing="javisbench"))
    video = torch.arange(10).float().div(10).view(10, 1, 1, 1).expand(10, 3, 8, 8).clone()
    prepared = extractor.prepare(MediaItem(id="a", video=video, fps=10.0))
    picked = torch.linspace(0, 9, 4).round().long()  # frames 0, 3, 6, 9
    expected = ((video[picked, :, 0, 0] + 1) * 127.5).to(torch.uint8).float() / 255
    assert torch.equal(prepared[:, :, 8, 8], expected)  # exact: the same uint8 arithmetic
    with pytest.raises(SavaError, match="leave fps and frame_stride unset"):
        I3D(I3DParams(preset="tiny", preprocessing="javisbench", fps=8))


def test_protocols_are_listed():
    listed = json.loads(run_cli("list", "eval_protocol", "--json").stdout)
    assert {row["name"] for row in listed} >= set(PROTOCOLS)
