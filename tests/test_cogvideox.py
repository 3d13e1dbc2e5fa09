"""The CogVideoX plug-in: the 3D VAE (``cogvideox_vae``), the T5 text encoder (``t5``) and the
transformer backbone (``cogvideox``) with Stage II's extra tokens in the text padding, from tiny
presets and from directories written by ``save_pretrained``."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel, DDIMScheduler
from pydantic import ValidationError

from conftest import assert_close_f32
from sava_cogvideox.models import LORA_TARGETS, SCHEDULER_CONFIG, TINY_TEXT_LENGTH, tiny_t5, tiny_transformer, tiny_vae
from sava_cogvideox.shared import pool_latent_frames
from sava_core.conditioning import Phi, add_lora
from sava_core.contracts import Condition
from sava_core.errors import SavaError
from sava_core.losses import DiffusionObjective
from sava_core.pretrained import tiny_tokenizer
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests

VIDEO = (2, 9, 3, 32, 32)  # 9 frames of 32x32 -> grid (3, 4, 4, 4)
GRID = (3, 4, 4, 4)
TEXT_DIM = 32
PROMPTS = ["a dog barks in a park", ""]


def build(kind: str, name: str, runtime: dict | None = None, **params):  # type: ignore[no-untyped-def]
    return get_registries()[kind].build(name, params, **(runtime or {}))


def video(shape: tuple[int, ...] = VIDEO) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def noisy(batch: int = 2, grid: tuple[int, ...] = GRID) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, *grid, generator=torch.Generator().manual_seed(1)), torch.tensor([5, 700, 999][:batch])


@pytest.fixture(scope="module")
def vae():  # type: ignore[no-untyped-def]
    return build("video_encoder", "cogvideox_vae", preset="tiny")


@pytest.fixture(scope="module")
def t5():  # type: ignore[no-untyped-def]
    return build("text_encoder", "t5", preset="tiny")


@pytest.fixture(scope="module")
def text(t5):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return t5.encode(PROMPTS)


@pytest.fixture(scope="module")
def backbone():  # type: ignore[no-untyped-def]
    return build("backbone", "cogvideox", {"latent_shape": GRID, "condition_dim": TEXT_DIM}, preset="tiny").eval()


# ----------------------------------------------------------------------------------- contracts


class TestCogVideoXVAE(ComponentTests):
    kind, name = "video_encoder", "cogvideox_vae"
    params = {"preset": "tiny"}
    expected_shape = (2, 3, 16)  # (B, F_lat, C * 2 * 2)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (video(),)


class TestT5(ComponentTests):
    kind, name = "text_encoder", "t5"
    params = {"preset": "tiny"}
    expected_shape = (2, TINY_TEXT_LENGTH, TEXT_DIM)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (PROMPTS,)


class TestCogVideoX(ComponentTests):
    kind, name = "backbone", "cogvideox"
    params = {"preset": "tiny"}
    runtime = {"latent_shape": GRID, "condition_dim": TEXT_DIM}
    expected_shape = (2, *GRID)

    def inputs(self):  # type: ignore[no-untyped-def]
        text = torch.randn(2, TINY_TEXT_LENGTH, TEXT_DIM)
        mask = torch.arange(TINY_TEXT_LENGTH) < 5
        return (
            *noisy(),
            Condition(text, mask.expand(2, -1), torch.randn(2, 3, TEXT_DIM), torch.ones(2, 3, dtype=torch.bool)),
        )


# ----------------------------------------------------------------------------------- VAE


def test_grid_is_the_transformer_layout_scaled(vae) -> None:  # type: ignore[no-untyped-def]
    x = video()
    with torch.no_grad():
        grid = vae.encode_grid(x)
        direct = vae.vae.encode(x.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mean.permute(0, 2, 1, 3, 4)
        frames = vae.decode_grid(grid)
    assert grid.shape == (2, *GRID) and grid.dtype == torch.float32
    assert vae.scaling_factor == pytest.approx(1.15258426)
    # the same VAE call on the same input (equal in fact): torch.testing's float32 defaults
    torch.testing.assert_close(grid, direct * vae.scaling_factor)
    assert frames.shape == VIDEO and frames.min() >= 0 and frames.max() <= 1
    assert vae.frame_rate == 8.0 and vae.latent_dim == 16


def test_sequence_pools_each_latent_frame() -> None:
    grid = torch.arange(2 * 3 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4, 4)
    seq = pool_latent_frames(grid, 2)
    assert seq.shape == (2, 3, 16)
    # channel 1 of latent frame 2, bottom-left 2x2 cell
    assert seq[1, 2, 1 * 4 + 2] == grid[1, 2, 1, 2:, :2].mean()
    torch.testing.assert_close(pool_latent_frames(grid, 1), grid.mean((-2, -1)))


def test_sequence_pool_sets_the_width() -> None:
    encoder = build("video_encoder", "cogvideox_vae", preset="tiny", sequence_pool=1)
    with torch.no_grad():
        assert encoder.encode(video()).shape == (2, 3, 4)
    assert encoder.latent_dim == 4


@pytest.mark.parametrize(("shape", "words"), [((1, 8, 3, 32, 32), "8k + 1"), ((1, 9, 3, 24, 32), "multiples of 16"),
                                              ((1, 9, 32, 32), "(B, F, 3, H, W)")])
def test_video_the_vae_cannot_take_is_a_clear_error(vae, shape, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SavaError, match=re.escape(words)):
        vae.encode_grid(torch.rand(shape))


def test_vae_round_trip_and_wrong_paths(tmp_path: Path, vae) -> None:  # type: ignore[no-untyped-def]
    tiny_vae().save_pretrained(tmp_path / "vae")
    loaded = build("video_encoder", "cogvideox_vae", pretrained=str(tmp_path))
    sliced = build("video_encoder", "cogvideox_vae", pretrained=str(tmp_path), enable_slicing=True, enable_tiling=True)
    assert isinstance(loaded.vae, AutoencoderKLCogVideoX) and not loaded.vae.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert sliced.vae.use_slicing and sliced.vae.use_tiling
    x = video()
    with torch.no_grad():
        # A separately loaded copy, and one that encodes a clip at a time (slicing; these clips are
        # smaller than a tile): other kernels, so equal up to rounding through the VAE encoder (about
        # 10 blocks); 1.7e-6 seen for the sliced one.
        assert_close_f32(loaded.encode_grid(x), vae.encode_grid(x), depth=10)
        assert_close_f32(sliced.encode_grid(x), vae.encode_grid(x), depth=10)
    with pytest.raises(SavaError, match=r"video_encoder\)?\.params\.pretrained.*does not exist"):
        build("video_encoder", "cogvideox_vae", pretrained=str(tmp_path / "missing"))
    with pytest.raises(SavaError, match="has no vae/ folder"):
        build("video_encoder", "cogvideox_vae", pretrained=str(tmp_path / "vae"))


def test_exactly_one_weight_source() -> None:
    params = get_registries()["video_encoder"].get("cogvideox_vae").load_params()
    with pytest.raises(ValidationError, match="exactly one"):
        params.model_validate({})
    with pytest.raises(ValidationError, match="exactly one"):
        params.model_validate({"preset": "tiny", "pretrained": "THUDM/CogVideoX-2b"})


# ----------------------------------------------------------------------------------- T5


def test_t5_pads_to_max_length_without_a_padding_mask(t5, text) -> None:  # type: ignore[no-untyped-def]
    ids = t5.tokenizer(PROMPTS, padding="max_length", max_length=TINY_TEXT_LENGTH, return_tensors="pt").input_ids
    with torch.no_grad():
        direct = t5.model(input_ids=ids).last_hidden_state
    assert text.tokens.shape == (2, TINY_TEXT_LENGTH, TEXT_DIM)
    # the encoder runs this same model on these same ids (equal in fact): the float32 defaults
    torch.testing.assert_close(text.tokens, direct)
    assert text.mask[1].sum() == 1  # "" is just </s>
    assert text.mask[0].sum() == (ids[0] != t5.tokenizer.pad_token_id).sum()
    weights = text.mask[0].float()
    # one masked mean, reduced over another layout: the float32 defaults (one op's rounding)
    torch.testing.assert_close(text.pooled[0], (text.tokens[0] * weights[:, None]).sum(0) / weights.sum())


def test_t5_padding_mask_is_an_option(text) -> None:  # type: ignore[no-untyped-def]
    masked = build("text_encoder", "t5", preset="tiny", mask_padding=True)
    with torch.no_grad():
        out = masked.encode(PROMPTS)
    assert not torch.allclose(out.tokens[0, :3], text.tokens[0, :3])


def test_t5_round_trip(tmp_path: Path, text) -> None:  # type: ignore[no-untyped-def]
    tiny_t5().save_pretrained(tmp_path / "text_encoder")
    tiny_tokenizer("t5").save_pretrained(tmp_path / "tokenizer")
    loaded = build("text_encoder", "t5", pretrained=str(tmp_path), max_length=TINY_TEXT_LENGTH)
    with torch.no_grad():
        out = loaded.encode(PROMPTS)
    # a separately loaded copy: equal up to rounding through the 2-layer T5 (about 6 blocks); the mask is exact
    assert_close_f32(out.tokens, text.tokens, depth=6)
    assert torch.equal(out.mask, text.mask)
    assert build("text_encoder", "t5", pretrained=str(tmp_path)).max_length == 226
    with pytest.raises(SavaError, match="has no text_encoder/ folder"):
        build("text_encoder", "t5", pretrained=str(tmp_path / "text_encoder"))


# ----------------------------------------------------------------------------------- backbone


def test_extra_tokens_replace_the_last_padding_positions(backbone, text) -> None:  # type: ignore[no-untyped-def]
    extra = torch.randn(2, 3, TEXT_DIM)
    keep = torch.tensor([[True, False, True], [False, False, False]])
    merged = backbone.text_tokens(Condition(text.tokens, text.mask, extra, keep))
    assert merged.shape == text.tokens.shape
    # exact: merging only copies tokens
    assert torch.equal(merged[:, :-3], text.tokens[:, :-3])
    assert torch.equal(merged[0, -3], extra[0, 0]) and torch.equal(merged[0, -1], extra[0, 2])
    assert torch.equal(merged[0, -2], text.tokens[0, -2])  # dropped: the padding token stays
    assert torch.equal(merged[1], text.tokens[1])


def test_rows_without_extra_match_no_extra_exactly(backbone, text) -> None:  # type: ignore[no-untyped-def]
    x, t = noisy()
    extra = torch.randn(2, 3, TEXT_DIM)
    keep = torch.tensor([[True] * 3, [False] * 3])
    with torch.no_grad():
        plain = backbone(x, t, Condition(text.tokens, text.mask))
        mixed = backbone(x, t, Condition(text.tokens, text.mask, extra, keep))
    # exact: extra tokens replace padding in a sequence of fixed length, so row 1's input is plain's
    # bit for bit (see above) and both calls run the same shapes through the same kernels
    assert torch.equal(mixed[1], plain[1])
    assert not torch.allclose(mixed[0], plain[0])


def test_extra_tokens_need_room_and_text_needs_its_length(backbone, text) -> None:  # type: ignore[no-untyped-def]
    x, t = noisy()
    full = torch.ones(2, TINY_TEXT_LENGTH, dtype=torch.bool)
    extra = torch.randn(2, 3, TEXT_DIM)
    with pytest.raises(SavaError, match="shorten captions"):
        backbone(x, t, Condition(text.tokens, full, extra, torch.ones(2, 3, dtype=torch.bool)))
    with torch.no_grad():  # no kept extra token: no room needed
        backbone(x, t, Condition(text.tokens, full, extra, torch.zeros(2, 3, dtype=torch.bool)))
    with pytest.raises(SavaError, match="do not fit"):
        too_many = TINY_TEXT_LENGTH + 4
        backbone(x, t, Condition(text.tokens, text.mask, torch.randn(2, too_many, TEXT_DIM),
                                 torch.zeros(2, too_many, dtype=torch.bool)))
    with pytest.raises(SavaError, match=f"max_length: {TINY_TEXT_LENGTH}"):
        backbone(x, t, Condition(text.tokens[:, :8], text.mask[:, :8]))


def test_lora_targets_are_the_joint_attention_projections(backbone) -> None:  # type: ignore[no-untyped-def]
    pattern = re.compile("|".join(backbone.lora_targets))
    matched = {name for name, _ in backbone.named_modules() if pattern.fullmatch(name)}
    layers = backbone.transformer.config.num_layers
    expected = {f"transformer.transformer_blocks.{i}.attn1.{p}" for i in range(layers)
                for p in ("to_q", "to_k", "to_v", "to_out.0")}
    assert matched == expected
    assert backbone.lora_targets == LORA_TARGETS


def test_schedule_is_cogvideox(backbone) -> None:  # type: ignore[no-untyped-def]
    config = backbone.scheduler_config
    assert backbone.prediction_type == "v_prediction"
    assert config["rescale_betas_zero_snr"] and config["timestep_spacing"] == "trailing"
    assert config["beta_schedule"] == "scaled_linear"
    scheduler = DDIMScheduler.from_config(config)
    assert scheduler.alphas_cumprod[-1] < 1e-6  # zero terminal SNR


def test_one_lora_step_changes_only_lora(backbone, t5) -> None:  # type: ignore[no-untyped-def]
    trained = copy.deepcopy(backbone).train()
    add_lora(trained, rank=4, alpha=4)
    trained.transformer.enable_gradient_checkpointing()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    sampler = build("sampler", "diffusers")
    phi = Phi(8, TEXT_DIM)
    objective = DiffusionObjective(trained, sampler, dropout=0.0, phi=phi)
    with torch.no_grad():
        emb, null = t5.encode(PROMPTS), t5.encode([""])
    optimizer = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    x0 = torch.randn(2, *GRID)
    objective(x0, emb.tokens, emb.mask, null.tokens, null.mask, torch.randn(2, 3, 8))["loss"].backward()
    optimizer.step()
    after = trained.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert not any(p.requires_grad for n, p in trained.named_parameters() if "lora_" not in n)


def test_samples_with_the_core_sampler(backbone, text) -> None:  # type: ignore[no-untyped-def]
    sampler = build("sampler", "diffusers", steps=2, guidance_scale=2.0)
    null = Condition(text.tokens[1:].expand(2, -1, -1), text.mask[1:].expand(2, -1))
    out = sampler.sample(backbone, Condition(text.tokens, text.mask), null, 2, torch.Generator().manual_seed(0))
    assert out.shape == (2, *GRID) and torch.isfinite(out).all()


def _save_pipeline(folder: Path, transformer: CogVideoXTransformer3DModel) -> None:
    transformer.save_pretrained(folder / "transformer")
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG))


def test_backbone_round_trip_and_checks(tmp_path: Path, backbone, text) -> None:  # type: ignore[no-untyped-def]
    _save_pipeline(tmp_path, tiny_transformer(GRID, TEXT_DIM))
    runtime = {"latent_shape": GRID, "condition_dim": TEXT_DIM}
    loaded = build("backbone", "cogvideox", runtime, pretrained=str(tmp_path)).eval()
    x, t = noisy()
    with torch.no_grad():
        # a separately loaded copy: equal up to rounding through the 2-layer transformer (about 8 blocks)
        assert_close_f32(
            loaded(x, t, Condition(text.tokens, text.mask)), backbone(x, t, Condition(text.tokens, text.mask)), depth=8
        )
    assert loaded.scheduler_config["_class_name"] == "CogVideoXDDIMScheduler"
    with pytest.raises(SavaError, match="text encoder"):
        build("backbone", "cogvideox", {**runtime, "condition_dim": 64}, pretrained=str(tmp_path))
    with pytest.raises(SavaError, match="latent channels"):
        build("backbone", "cogvideox", {**runtime, "latent_shape": (3, 8, 4, 4)}, pretrained=str(tmp_path))
    with pytest.raises(SavaError, match=r"video_backbone\.params\.pretrained.*does not exist"):
        build("backbone", "cogvideox", runtime, pretrained=str(tmp_path / "missing"))


@pytest.mark.parametrize("variant", ["sincos", "v1.5"])
def test_other_position_schemes_take_the_runtime_shape(tmp_path: Path, text, variant: str) -> None:  # type: ignore[no-untyped-def]
    """CogVideoX-2b (sin-cos positions, recomputed for another frame size) and CogVideoX 1.5 (two latent
    frames per patch, rotary 'slice' grid: an odd F_lat is padded with the first frame)."""
    config = {k: v for k, v in tiny_transformer(GRID, TEXT_DIM).config.items() if not k.startswith("_")}
    if variant == "sincos":
        config.update(use_rotary_positional_embeddings=False, sample_height=8, sample_width=8)
    else:
        config.update(patch_size_t=2)
    _save_pipeline(tmp_path, CogVideoXTransformer3DModel.from_config(config))
    assert (
        json.loads((tmp_path / "transformer" / "config.json").read_text())["patch_size_t"] == 2
    ) == (variant == "v1.5")
    model = build("backbone", "cogvideox", {"latent_shape": GRID, "condition_dim": TEXT_DIM}, pretrained=str(tmp_path))
    x, t = noisy()
    with torch.no_grad():
        out = model(x, t, Condition(text.tokens, text.mask))
    assert out.shape == x.shape and torch.isfinite(out).all()
    if variant == "v1.5":
        with pytest.raises(SavaError, match="position table"):
            build("backbone", "cogvideox", {"latent_shape": (3, 4, 8, 8), "condition_dim": TEXT_DIM},
                  pretrained=str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("sentencepiece") is not None, reason="sentencepiece is installed")
def test_sentencepiece_tokenizer_without_the_package_is_a_clear_error(tmp_path: Path) -> None:
    tiny_t5().save_pretrained(tmp_path / "text_encoder")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "spiece.model").write_bytes(b"")  # CogVideoX ships spiece.model, no tokenizer.json
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    with pytest.raises(SavaError, match="pip install sentencepiece"):
        build("text_encoder", "t5", pretrained=str(tmp_path))
