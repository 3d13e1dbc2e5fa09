"""The paper's recipes on real backbones (recipes/paper/): each validates as written (real weights,
real data), and its ``tiny`` preset runs every stage on a CPU with random tiny weights, writing mp4
files with one video and one audio stream of the same duration; Stage II changes only LoRA and phi."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
import torch

from conftest import REPO, run_cli
from sava_core.conditioning import conditioned
from sava_core.encoding import encode_text
from sava_core.generators import build_generators
from sava_core.losses import DiffusionObjective
from sava_core.recipe import plan
from sava_core.registry import get_registries
from sava_core.runner import run_plan
from sava_core.training import Trainer

PAPER = sorted((REPO / "recipes" / "paper").glob("*.yaml"))
IDS = [p.stem for p in PAPER]
#: Recipes whose tiny run is part of the default suite (the others are marked slow).
FAST = {"t2av_ltx2_joint", "t2av_cogvideox_audioldm", "t2av_animatediff_audioldm2", "v2a"}


@pytest.mark.parametrize("path", PAPER, ids=IDS)
def test_validates_as_written_and_with_the_tiny_preset(path):
    assert plan(path).cells
    tiny = plan(path, ["preset=tiny"])
    assert all(c.recipe.device == "cpu" for c in tiny.cells)


def streams(path: Path) -> tuple[list[float], list[float]]:
    """Durations (s) of the video and audio streams of an mp4."""
    with av.open(str(path)) as container:
        video = [float(s.frames / s.average_rate) for s in container.streams.video]
        audio = [float(s.duration * s.time_base) for s in container.streams.audio]
    return video, audio


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=() if p.stem in FAST else pytest.mark.slow) for p in PAPER], ids=IDS
)
def test_the_tiny_preset_runs_every_stage_and_writes_clips(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SAVA_CACHE", str(tmp_path / "cache"))
    p = plan(path, ["preset=tiny", "report.plot=false"])
    run_plan(p, tmp_path / "run")
    for cell in p.cells:
        samples = tmp_path / "run" / "runs" / cell.variant / f"seed-{cell.seed}" / "samples"
        clips = sorted(samples.glob("*.mp4"))
        assert clips, f"{cell.key} wrote no clip"
        for clip in clips:
            video, audio = streams(clip)
            assert len(video) == 1 and len(audio) == 1
            fps = cell.recipe.data.params["fps"]
            assert abs(video[0] - audio[0]) <= 1 / fps + 0.03  # within a frame (+ the AAC frame padding)
            assert (clip.with_suffix(".wav")).is_file() and (clip.with_suffix(".png")).is_file()


def test_v2a_with_shifted_captions_checks_the_audio_against_the_real_video_and_the_caption(tmp_path, monkeypatch):
    """``generate.caption_shift``: clip i's real video with clip i+1's caption; on the media world the
    ground-truth checks say whether the audio followed the video (class_consistency, sync) or the
    text (audio_class_acc)."""
    import json

    from sava_core.encoding import load_media, media_dataset

    monkeypatch.setenv("SAVA_CACHE", str(tmp_path / "cache"))
    p = plan(REPO / "recipes" / "paper" / "v2a.yaml", ["preset=tiny", "report.plot=false", "generate.caption_shift=1"])
    run_plan(p, tmp_path / "run")
    cell = tmp_path / "run" / "runs" / p.cells[0].variant / "seed-0"
    recipe = p.cells[0].recipe
    captions = load_media(media_dataset(recipe, get_registries()), "test", recipe.generate.prompts).captions
    used = [row["prompt"] for row in json.loads((cell / "samples" / "prompts.json").read_text())]
    assert used == captions[1:] + captions[:1]
    metrics = json.loads((cell / "metrics.json").read_text())
    assert {"class_consistency", "audio_class_acc", "sync_error_ms"} <= set(metrics)


def test_caption_shift_outside_v2a_is_a_clear_error():
    result = run_cli("validate", str(REPO / "recipes" / "quickstart.yaml"), "generate.caption_shift=1")
    assert (
        result.returncode == 2
        and "caption_shift" in result.stdout + result.stderr
        and "v2a" in result.stdout + result.stderr
    )


STAGE2 = [p for p in PAPER if p.stem in ("t2av_cogvideox_audioldm", "t2av_animatediff_audioldm2")]


@pytest.mark.parametrize("path", STAGE2, ids=[p.stem for p in STAGE2])
@pytest.mark.parametrize("direction", ["tv2a", "ta2v"])
def test_stage2_changes_only_lora_and_phi(path, direction):
    recipe = plan(path, ["preset=tiny"]).cells[0].recipe
    gen = build_generators(recipe, get_registries(), None)
    c = conditioned(gen, direction, recipe)
    c.backbone.train()
    before = {k: v.clone() for k, v in c.backbone.state_dict().items()}
    phi_before = {k: v.clone() for k, v in c.phi.state_dict().items()}
    trainer = Trainer(DiffusionObjective(c.backbone, gen.sampler, 0.0, c.phi), recipe.finetune.train, seed=0, cpu=True)
    torch.manual_seed(0)
    grid = torch.randn(2, *c.backbone.latent_shape)
    text = encode_text(
        gen.text_encoders["audio" if direction == "tv2a" else "video"], ["a dog barks", "a red ball bounces"]
    )
    extra = torch.randn(2, 3, recipe.align.width)
    for _ in range(2):  # AudioLDM's FiLM path reaches phi only through LoRA's zero-initialised B: from step 2
        trainer.train_step(lambda idx: (grid, text.tokens, text.mask, text.null_tokens, text.null_mask, extra), 2)
    after = c.backbone.state_dict()
    lora = [k for k in before if "lora_" in k]
    assert lora, "no LoRA layer was injected"
    assert all(torch.equal(before[k], after[k]) for k in before if k not in lora), "a base weight changed"
    assert any(not torch.equal(before[k], after[k]) for k in lora), "LoRA did not train"
    assert any(not torch.equal(phi_before[k], v) for k, v in c.phi.state_dict().items()), "phi did not train"


@pytest.mark.parametrize("value, message", [
    ("/nope/sd15", "model.video_backbone.params.pretrained: local path /nope/sd15 does not exist"),
    ("someone/not-cached",
     "model.video_backbone.params.pretrained: hub id 'someone/not-cached' is not in the local hub cache"),
])
def test_a_wrong_weights_setting_is_one_clear_message(value, message, tmp_path):
    recipe = REPO / "recipes" / "paper" / "t2av_two_stream.yaml"
    result = run_cli("run", str(recipe), "preset=tiny",
                     f"model.video_backbone.params={{pretrained: {value}, motion_adapter: {value}}}",
                     "--out", str(tmp_path / "run"), env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")},
                     timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["t2av_cogvideox_audioldm", "v2a", "t2av_ltx2_joint"])
def test_the_tiny_preset_runs_on_a_gpu(name, tmp_path, monkeypatch):
    """Every stage keeps its modules and tensors on the CUDA device (a device mix-up raises)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    monkeypatch.setenv("SAVA_CACHE", str(tmp_path / "cache"))
    p = plan(REPO / "recipes" / "paper" / f"{name}.yaml", ["preset=tiny", "device=cuda", "report.plot=false"])
    run_plan(p, tmp_path / "run")
    assert all((tmp_path / "run" / "runs" / c.variant / f"seed-{c.seed}" / "metrics.json").is_file() for c in p.cells)
