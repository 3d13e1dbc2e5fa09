"""`sava validate --build`: released-size builds on the meta device from the configs the plug-ins ship
(no weights, no downloads), one step of each stage, parameter counts and memory estimates."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, run_cli

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nonexistent-sava-hf-home"}

#: Released parameter counts confirmed from public sources (docs/backbones.md, "Released-size builds").
RELEASED = {
    "video_text_encoder": 4_762_310_656,  # T5-v1.1-XXL encoder (T5EncoderModel), 4.76B
    "video_backbone": 5_570_000_000,  # CogVideoX-5B transformer, "5.57B" (rounded)
}


def counts(output: str) -> dict[str, int]:
    """slot -> parameter count from the --build table."""
    rows = {}
    for line in output.splitlines():
        m = re.match(r"(\w+)\s+\S+\s+(float32|float16|bfloat16)\s+([\d,]+)\s", line)
        if m:
            rows[m.group(1)] = int(m.group(3).replace(",", ""))
    return rows


@pytest.fixture(scope="module")
def main_recipe() -> str:
    proc = run_cli("validate", "--build", str(REPO / "recipes/paper/t2av_cogvideox_audioldm.yaml"), env=OFFLINE)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def test_build_prints_shapes_counts_and_memory(main_recipe):
    assert "video_grid (1, 21, 16, 60, 90)" in main_recipe  # 81 frames at 480x720 -> CogVideoX1.5 latents
    assert "audio_grid (1, 8, 127, 16)" in main_recipe
    rows = counts(main_recipe)
    for slot in ("video_encoder", "audio_encoder", "audio_vae", "video_text_encoder", "audio_text_encoder",
                 "video_backbone", "audio_backbone", "projector"):
        assert rows[slot] > 0, slot
    assert "activations not included" in main_recipe


def test_counts_match_the_released_models_within_one_percent(main_recipe):
    rows = counts(main_recipe)
    for slot, released in RELEASED.items():
        assert abs(rows[slot] - released) / released < 0.01, (slot, rows[slot], released)


#: SD 1.5's released counts: CLIP ViT-L/14 text 123.06M, VAE 83.65M, UNet 859.52M (+ the motion modules).
SD15 = {"video_text_encoder": 123_060_480, "video_encoder": 83_653_863}


@pytest.mark.parametrize("recipe", [pytest.param("ablation_mask", marks=pytest.mark.slow),  # the same components
                                    pytest.param("v2a", marks=pytest.mark.slow), "t2av_two_stream"])
def test_other_paper_recipes_build(recipe):
    proc = run_cli("validate", "--build", str(REPO / f"recipes/paper/{recipe}.yaml"), env=OFFLINE)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = counts(proc.stdout)
    assert rows
    if recipe == "t2av_two_stream":
        for slot, released in SD15.items():
            assert abs(rows[slot] - released) / released < 0.01, (slot, rows[slot], released)
        assert rows["video_backbone"] > 859_520_964  # the SD 1.5 UNet merged with the motion modules


@pytest.mark.parametrize("recipe, setting", [("t2av_animatediff_audioldm2", "model.audio_vae"),
                                             ("t2av_ltx2_joint", "model.joint_generator")])
def test_recipes_without_shipped_configs_name_the_setting(recipe, setting):
    proc = run_cli("validate", "--build", str(REPO / f"recipes/paper/{recipe}.yaml"), env=OFFLINE)
    assert proc.returncode == 2
    assert setting in proc.stderr and "no released configuration" in proc.stderr


def test_a_wrong_shape_setting_is_a_one_line_error_naming_it():
    proc = run_cli("validate", "--build", str(REPO / "recipes/paper/t2av_cogvideox_audioldm.yaml"),
                   "data.params.height=488", env=OFFLINE)
    assert proc.returncode == 2, proc.stdout
    error = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(error) == 1 and "height" in error[0], proc.stderr
