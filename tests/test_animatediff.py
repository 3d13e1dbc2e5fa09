"""The AnimateDiff plug-in: SD's VAE per frame (``sd_vae``), SD's CLIP text encoder (``clip_text``) and
the UNet + motion adapter backbone (``animatediff``) with Stage II's extra tokens in its spatial
cross-attention, from tiny presets and from directories written by ``save_pretrained``."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, UNetMotionModel
from pydantic import ValidationError

from conftest import assert_close_f32
from sava_animatediff.models import (
    SCHEDULER_CONFIG,
    TINY_TEXT_LENGTH,
    tiny_clip_text,
    tiny_motion_adapter,
    tiny_sd_vae,
    tiny_unet,
)
from sava_core.conditioning import Phi, add_lora
from sava_core.contracts import Condition
from sava_core.errors import SavaError
from sava_core.losses import DiffusionObjective
from sava_core.pretrained import tiny_tokenizer
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests

VIDEO = (2, 6, 3, 32, 32)  # 6 frames of 32x32 -> grid (6, 4, 4, 4)
GRID = (6, 4, 4, 4)
TEXT_DIM = 32
PROMPTS = ["a dog barks in a park", ""]


def build(kind: str, name: str, runtime: dict | None = None, **params):  # type: ignore[no-untyped-def]
    return get_registries()[kind].build(name, params, **(runtime or {}))


def video(shape: tuple[int, ...] = VIDEO) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def noisy(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, *GRID, generator=torch.Generator().manual_seed(1)), torch.tensor([5, 700, 999][:batch])


@pytest.fixture(scope="module")
def vae():  # type: ignore[no-untyped-def]
    return build("video_encoder", "sd_vae", preset="tiny")


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return build("text_encoder", "clip_text", preset="tiny")


@pytest.fixture(scope="module")
def text(clip):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return clip.encode(PROMPTS)


@pytest.fixture(scope="module")
def backbone():  # type: ignore[no-untyped-def]
    return build("backbone", "animatediff", {"latent_shape": GRID, "condition_dim": TEXT_DIM}, preset="tiny").eval()


# ----------------------------------------------------------------------------------- contracts


class TestSDVAE(ComponentTests):
    kind, name = "video_encoder", "sd_vae"
    params = {"preset": "tiny"}
    expected_shape = (2, 6, 16)  # (B, F, 4 * 2 * 2)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (video(),)


class TestCLIPText(ComponentTests):
    kind, name = "text_encoder", "clip_text"
    params = {"preset": "tiny"}
    expected_shape = (2, TINY_TEXT_LENGTH, TEXT_DIM)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (PROMPTS,)


class TestAnimateDiff(ComponentTests):
    kind, name = "backbone", "animatediff"
    params = {"preset": "tiny"}
    runtime = {"latent_shape": GRID, "condition_dim": TEXT_DIM}
    expected_shape = (2, *GRID)

    def inputs(self):  # type: ignore[no-untyped-def]
        text = torch.randn(2, TINY_TEXT_LENGTH, TEXT_DIM)
        extra = torch.randn(2, 3, TEXT_DIM)
        return (*noisy(), Condition(text, torch.ones(2, TINY_TEXT_LENGTH, dtype=torch.bool), extra,
                                    torch.ones(2, 3, dtype=torch.bool)))


# ----------------------------------------------------------------------------------- VAE and text


def test_grid_is_per_frame_sd_latents_scaled(vae) -> None:  # type: ignore[no-untyped-def]
    x = video()
    with torch.no_grad():
        grid = vae.encode_grid(x)
        frame = vae.vae.encode(x[1, 4:5] * 2 - 1).latent_dist.mean
        frames = vae.decode_grid(grid)
        seq = vae.encode(x)
    assert grid.shape == (2, *GRID) and vae.scaling_factor == pytest.approx(0.18215)
    # one frame alone vs 18 in a batch: other conv kernels, equal up to rounding through the VAE
    # encoder (about 10 blocks); a wrong scale or frame moves it by 1e-2 and more
    assert_close_f32(grid[1, 4], frame[0] * 0.18215, depth=10)
    assert frames.shape == VIDEO and frames.min() >= 0 and frames.max() <= 1
    # one mean in another order: torch.testing's float32 defaults (one op's rounding)
    torch.testing.assert_close(seq[0, 2, 0::4], grid[0, 2, :, :2, :2].mean((-2, -1)))  # top-left cell per channel
    with pytest.raises(SavaError, match="multiples of 8"):
        vae.encode_grid(torch.rand(1, 2, 3, 20, 32))


def test_vae_round_trip(tmp_path: Path, vae) -> None:  # type: ignore[no-untyped-def]
    tiny_sd_vae().save_pretrained(tmp_path / "vae")
    loaded = build("video_encoder", "sd_vae", pretrained=str(tmp_path))
    x = video()
    with torch.no_grad():
        # a separately loaded copy: the same weights, but nothing pins the same kernels (memory
        # layout), so equal up to rounding through the VAE encoder (about 10 blocks)
        assert_close_f32(loaded.encode_grid(x), vae.encode_grid(x), depth=10)
    with pytest.raises(SavaError, match=r"video_encoder\)?\.params\.pretrained.*does not exist"):
        build("video_encoder", "sd_vae", pretrained=str(tmp_path / "missing"))


def test_clip_text_is_sds(clip, text) -> None:  # type: ignore[no-untyped-def]
    assert len(clip.tokenizer) == 49408 and clip.model.config.vocab_size == 49408
    ids = clip.tokenizer(PROMPTS, padding="max_length", max_length=TINY_TEXT_LENGTH, return_tensors="pt").input_ids
    with torch.no_grad():
        out = clip.model(input_ids=ids)
    # the encoder runs this same model on these same ids (equal in fact): the float32 defaults
    torch.testing.assert_close(text.tokens, out.last_hidden_state)
    torch.testing.assert_close(text.pooled, out.pooler_output)
    assert text.mask[1].sum() == 2  # "" is start + end
    assert text.mask[0].sum() == (ids[0] != clip.tokenizer.pad_token_id).sum() + 1  # + the end token


def test_clip_text_round_trip_and_length_check(tmp_path: Path, text) -> None:  # type: ignore[no-untyped-def]
    tiny_clip_text().save_pretrained(tmp_path / "text_encoder")
    tiny_tokenizer("clip", model_max_length=TINY_TEXT_LENGTH).save_pretrained(tmp_path / "tokenizer")
    loaded = build("text_encoder", "clip_text", pretrained=str(tmp_path))
    with torch.no_grad():
        # a separately loaded copy: equal up to rounding through the 2-layer text model (about 6 blocks)
        assert_close_f32(loaded.encode(PROMPTS).tokens, text.tokens, depth=6)
    with pytest.raises(SavaError, match="max_length <= 16"):
        build("text_encoder", "clip_text", preset="tiny", max_length=77)


# ----------------------------------------------------------------------------------- backbone


def test_text_is_repeated_per_frame(backbone, text) -> None:  # type: ignore[no-untyped-def]
    """Each clip sees its own prompt in every frame: a batch of two gives each row its solo output."""
    x, t = noisy()
    with torch.no_grad():
        both = backbone(x, t, Condition(text.tokens, text.mask))
        first = backbone(x[:1], t[:1], Condition(text.tokens[:1], text.mask[:1]))
        other = backbone(x[:1], t[:1], Condition(text.tokens[1:], text.mask[1:]))
    # batch of two vs one: other kernels, equal up to rounding through the motion UNet (about 20
    # blocks); another prompt moves the output by 0.1
    assert_close_f32(both[:1], first, depth=20)
    assert not torch.allclose(first, other, atol=1e-4)


def test_masked_extra_tokens_are_ignored(backbone, text) -> None:  # type: ignore[no-untyped-def]
    x, t = noisy()
    extra = torch.randn(2, 3, TEXT_DIM)
    keep = torch.tensor([[True, False, True], [False, False, False]])
    with torch.no_grad():
        plain = backbone(x, t, Condition(text.tokens, text.mask))
        mixed = backbone(x, t, Condition(text.tokens, text.mask, extra, keep))
        kept = backbone(x[:1], t[:1], Condition(text.tokens[:1], text.mask[:1], extra[:1, [0, 2]]))
    # The masked extra tokens lengthen the keys, and kept runs a batch of one with two extra tokens:
    # other attention shapes, so equal up to rounding through the motion UNet (about 20 blocks); the
    # kept tokens move the output by 6e-2.
    assert_close_f32(mixed[1], plain[1], depth=20)
    assert_close_f32(mixed[:1], kept, depth=20)
    assert not torch.allclose(mixed[0], plain[0], atol=1e-4)


def test_lora_targets_spatial_cross_attention_only(backbone) -> None:  # type: ignore[no-untyped-def]
    pattern = re.compile("|".join(backbone.lora_targets))
    names = [name for name, _ in backbone.named_modules()]
    matched = {n for n in names if pattern.fullmatch(n)}
    expected = {n for n in names if re.search(r"\.attn2\.(to_q|to_k|to_v|to_out\.0)$", n) and "motion_modules" not in n}
    assert any(re.search(r"motion_modules.*\.attn2\.to_k$", n) for n in names)  # the exclusion matters
    assert matched == expected and len(matched) == 4 * 4  # tiny: 3 spatial transformers + mid block


def test_schedule_is_animatediffs(backbone) -> None:  # type: ignore[no-untyped-def]
    config = backbone.scheduler_config
    assert backbone.prediction_type == "epsilon"
    assert (config["beta_schedule"], config["beta_start"], config["beta_end"]) == ("linear", 0.00085, 0.012)
    assert config["clip_sample"] is False and config["timestep_spacing"] == "linspace"
    DDIMScheduler.from_config(config)


def test_one_lora_step_changes_only_lora(backbone, clip) -> None:  # type: ignore[no-untyped-def]
    trained = copy.deepcopy(backbone).train()
    add_lora(trained, rank=4, alpha=4)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    objective = DiffusionObjective(trained, build("sampler", "diffusers"), dropout=0.0, phi=Phi(8, TEXT_DIM))
    optimizer = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=1e-2)
    with torch.no_grad():
        emb, null = clip.encode(PROMPTS), clip.encode([""])
    torch.manual_seed(0)
    objective(
        torch.randn(2, *GRID), emb.tokens, emb.mask, null.tokens, null.mask, torch.randn(2, 6, 8)
    )["loss"].backward()
    optimizer.step()
    after = trained.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert not any("motion_modules" in k for k in changed)


def test_gradient_checkpointing_gives_the_same_gradients(text) -> None:  # type: ignore[no-untyped-def]
    grads = []
    for checkpointing in (False, True):
        model = build("backbone", "animatediff", {"latent_shape": GRID, "condition_dim": TEXT_DIM}, preset="tiny",
                      gradient_checkpointing=checkpointing).train()
        assert model.unet.is_gradient_checkpointing == checkpointing
        add_lora(model, rank=2, alpha=2)
        extra = torch.randn(2, 2, TEXT_DIM, generator=torch.Generator().manual_seed(3))
        model(
            *noisy(), Condition(text.tokens, text.mask, extra, torch.tensor([[True, False], [True, True]]))
        ).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "lora_B" in n]))
    # Recomputation runs the same kernels (equal here), but autograd may sum the gradients of tensors
    # used by several blocks in another order: rounding through forward and backward of the motion
    # UNet (about 2 x 20 blocks). Ignoring the extra-token mask moves these gradients by 0.3.
    assert_close_f32(grads[0], grads[1], depth=40)


def test_backbone_round_trip_and_checks(tmp_path: Path, backbone, text) -> None:  # type: ignore[no-untyped-def]
    tiny_unet(4, TEXT_DIM).save_pretrained(tmp_path / "sd" / "unet")
    tiny_motion_adapter().save_pretrained(tmp_path / "adapter")
    (tmp_path / "sd" / "scheduler").mkdir()
    (tmp_path / "sd" / "scheduler" / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "scaled_linear",
                                                                                     "prediction_type": "epsilon"}))
    runtime = {"latent_shape": GRID, "condition_dim": TEXT_DIM}
    params = {"pretrained": str(tmp_path / "sd"), "motion_adapter": str(tmp_path / "adapter")}
    loaded = build("backbone", "animatediff", runtime, **params).eval()
    assert isinstance(loaded.unet, UNetMotionModel)
    assert loaded.scheduler_config == SCHEDULER_CONFIG  # AnimateDiff's linear betas win over the SD pipeline's
    x, t = noisy()
    with torch.no_grad():
        # a UNetMotionModel assembled from the saved UNet and adapter: equal up to rounding (about 20 blocks)
        assert_close_f32(
            loaded(x, t, Condition(text.tokens, text.mask)), backbone(x, t, Condition(text.tokens, text.mask)), depth=20
        )
    with pytest.raises(SavaError, match="text encoder|clip_text"):
        build("backbone", "animatediff", {**runtime, "condition_dim": 16}, **params)
    with pytest.raises(SavaError, match="at most 32"):
        build("backbone", "animatediff", {**runtime, "latent_shape": (40, 4, 4, 4)}, **params)
    with pytest.raises(SavaError, match="multiples of 16"):
        build("backbone", "animatediff", {**runtime, "latent_shape": (6, 4, 3, 4)}, **params)
    with pytest.raises(SavaError, match=r"motion_adapter.*does not exist"):
        build("backbone", "animatediff", runtime, **{**params, "motion_adapter": str(tmp_path / "missing")})
    with pytest.raises(SavaError, match="has no unet/ folder"):
        build("backbone", "animatediff", runtime, **{**params, "pretrained": str(tmp_path)})
    with pytest.raises(ValidationError, match="motion_adapter"):
        get_registries()["backbone"].get("animatediff").load_params().model_validate({"pretrained": str(tmp_path)})
