"""The AudioLDM plug-in: the mel VAE + vocoder (``audioldm_vae``), the AudioLDM v1 backbone with its
FiLM conditioning widened for Stage II's extra tokens (``audioldm``), the AudioLDM2 backbone
(``audioldm2``) and its packed text conditioning (``audioldm2_text``), all from tiny presets and from
directories written by ``save_pretrained``."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from conftest import assert_close_f32
from sava_audioldm.backbones import SCHEDULER_CONFIG, tiny_audioldm2_unet, tiny_audioldm_unet
from sava_audioldm.params import AudioLDMVAEParams
from sava_audioldm.text import GENERATED_TOKENS, tiny_modules
from sava_audioldm.vae import tiny_vae, tiny_vocoder
from sava_core.conditioning import add_lora
from sava_core.contracts import Condition
from sava_core.errors import SavaError
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests

SR, HOP = 16000, 160
SAMPLES = 5120  # 32 mel frames -> tiny grid (4, 16, 32): r = 2, 64 mel bins
GRID = (4, 16, 32)
CLAP_DIM = 16  # tiny clap_text's projection width (output: pooled)
PACKED_DIM = 32  # tiny audioldm2_text: max(GPT-2 24, T5 32)
PROMPTS = ["a dog barks in a park", "waves crash on the beach and birds sing", ""]


def build(kind: str, name: str, runtime: dict | None = None, **params):  # type: ignore[no-untyped-def]
    return get_registries()[kind].build(name, params, **(runtime or {}))


def audio(batch: int = 2, samples: int = SAMPLES, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, samples, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def noisy(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, *GRID, generator=g), torch.tensor([5, 400, 999][:batch])


def lora_modules(backbone: torch.nn.Module) -> set[str]:
    """Names of the modules peft adapted with the backbone's own lora_targets."""
    adapted = copy.deepcopy(backbone)
    add_lora(adapted, rank=4, alpha=4)
    return {name.removesuffix(".lora_A") for name, _ in adapted.named_modules() if name.endswith(".lora_A")}


def lora_step(backbone: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, condition: Condition) -> torch.nn.Module:
    """A copy with LoRA after one Adam step on ||eps(x, t, condition) - 1||^2."""
    adapted = copy.deepcopy(backbone)
    add_lora(adapted, rank=4, alpha=4)
    trainable = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    (adapted(x, t, condition) - 1).pow(2).mean().backward()
    optimizer.step()
    return adapted.eval()


@pytest.fixture(scope="module")
def vae():  # type: ignore[no-untyped-def]
    return build("audio_encoder", "audioldm_vae", preset="tiny")


@pytest.fixture(scope="module")
def clap():  # type: ignore[no-untyped-def]
    return build("text_encoder", "clap_text", preset="tiny", output="pooled")


@pytest.fixture(scope="module")
def v1():  # type: ignore[no-untyped-def]
    return build("backbone", "audioldm", {"latent_shape": GRID, "condition_dim": CLAP_DIM}, preset="tiny")


@pytest.fixture(scope="module")
def text2():  # type: ignore[no-untyped-def]
    return build("text_encoder", "audioldm2_text", preset="tiny")


@pytest.fixture(scope="module")
def v2():  # type: ignore[no-untyped-def]
    return build("backbone", "audioldm2", {"latent_shape": GRID, "condition_dim": PACKED_DIM}, preset="tiny")


# ------------------------------------------------------------------------------------------- contract kit


class TestAudioLDMVAE(ComponentTests):
    kind, name = "audio_encoder", "audioldm_vae"
    params = {"preset": "tiny"}
    expected_shape = (2, 16, 128)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (audio(),)


class TestAudioLDM(ComponentTests):
    kind, name = "backbone", "audioldm"
    params = {"preset": "tiny"}
    runtime = {"latent_shape": GRID, "condition_dim": CLAP_DIM}
    expected_shape = (2, *GRID)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (torch.randn(2, *GRID), torch.tensor([3, 700]), Condition(torch.randn(2, 1, CLAP_DIM)))


class TestAudioLDM2(ComponentTests):
    kind, name = "backbone", "audioldm2"
    params = {"preset": "tiny"}
    runtime = {"latent_shape": GRID, "condition_dim": PACKED_DIM}
    expected_shape = (2, *GRID)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (
            torch.randn(2, *GRID), torch.tensor([3, 700]), Condition(torch.randn(2, GENERATED_TOKENS + 5, PACKED_DIM))
        )


class TestAudioLDM2Text(ComponentTests):
    kind, name = "text_encoder", "audioldm2_text"
    params = {"preset": "tiny"}

    def inputs(self):  # type: ignore[no-untyped-def]
        return (PROMPTS,)


# ------------------------------------------------------------------------------------------- audioldm_vae


def test_mel_front_end_is_audioldms(vae) -> None:  # type: ignore[no-untyped-def]
    """TacotronSTFT + wav_to_fbank, recomputed with transformers' librosa-equivalent numpy functions."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    wave = audio(1, 4000)
    mel = vae.log_mel(wave)[0, 0]  # padded to 4 * 160 * 2 -> 4160 samples -> 26 frames
    x = wave[0, 0].numpy().astype(np.float64)
    x = x - x.mean()
    x = x / (np.abs(x).max() + 1e-8) * 0.5
    x = np.pad(x, (0, 4160 - 4000))
    filters = mel_filter_bank(513, 64, 0.0, 8000.0, SR, norm="slaney", mel_scale="slaney")
    ref = spectrogram(x, window_function(1024, "hann"), 1024, HOP, power=1.0, center=True, pad_mode="reflect",
                      mel_filters=filters, mel_floor=1e-5, log_mel="log")[:, :-1].T
    assert mel.shape == (26, 64)
    # float32 STFT vs a float64 reference: a log-mel value's error is the relative error of its bin
    # energy, a few 1e-6 (3.5e-6 seen, on any kernel setting tried); 2e-4 leaves room for another FFT
    # library, and a wrong window, padding, mel scale or floor moves values by 1e-2 and more.
    np.testing.assert_allclose(mel.numpy(), ref, atol=2e-4)


def test_grid_layout_and_decoding(vae) -> None:  # type: ignore[no-untyped-def]
    x = audio(2, 5000)  # padded to 5120 samples: 32 frames, 16 latent rows
    with torch.no_grad():
        grid = vae.encode_grid(x)
        seq = vae.grid_to_sequence(grid)
        wave = vae.decode_grid(grid)
        mel = vae.log_mel(x).to(grid.dtype)
        expected = vae.vae.encode(mel).latent_dist.mode() * vae.vae.config.scaling_factor
    assert grid.shape == (2, *GRID) and vae.latent_dim == 128 and vae.sample_rate == SR
    # exact: the same modules on the same input and batch, so the same kernels (no rounding apart)
    assert torch.equal(grid, expected)  # exactly the latents the UNet denoises (pipeline: (B, C, T/r, mels/r))
    assert torch.equal(seq[:, 5], grid[:, :, 5].flatten(1))  # time first (a reshape: exact)
    assert wave.shape == (2, 1, 32 * HOP) and wave.abs().max() <= 1


def test_normalisation_removes_loudness(vae) -> None:  # type: ignore[no-untyped-def]
    x = audio(1) * 0.5
    with torch.no_grad():
        # x * 0.2 normalises to x up to an ulp; that rounding runs through the log-mel and the VAE
        # encoder (about 8 blocks). Without the normalisation the latents move by 0.1.
        assert_close_f32(vae.encode(x * 0.2), vae.encode(x), depth=8)
        raw = build("audio_encoder", "audioldm_vae", preset="tiny", normalize=False)
        assert not torch.allclose(raw.encode(x), raw.encode(x * 0.2), atol=1e-3)


def test_vae_round_trip_and_checks(tmp_path: Path, vae) -> None:  # type: ignore[no-untyped-def]
    tiny_vae().save_pretrained(tmp_path / "vae")
    tiny_vocoder(AudioLDMVAEParams(preset="tiny")).save_pretrained(tmp_path / "vocoder")
    loaded = build("audio_encoder", "audioldm_vae", pretrained=str(tmp_path))
    x = audio()
    with torch.no_grad():
        grid = vae.encode_grid(x)
        wave = vae.decode_grid(grid)
        # A separately loaded copy: the same weights, but nothing pins the same kernels (memory layout),
        # so equal up to rounding. Encoding: log-mel + the VAE encoder, about 8 blocks.
        assert_close_f32(loaded.encode_grid(x), grid, depth=8)
        # Decoding: VAE decoder + vocoder, about 15 blocks. The tiny vocoder's N(0, 0.01) weights make
        # the wave about 4e-4, and its rounding scales with that (1e-9 seen), not with 1.
        assert_close_f32(loaded.decode_grid(grid), wave, depth=15, scale=float(wave.abs().max()))
    with pytest.raises(SavaError, match=r"hop=256 \(vocoder: 160\)"):
        build("audio_encoder", "audioldm_vae", pretrained=str(tmp_path), hop=256)
    with pytest.raises(SavaError, match=r"audio_vae\.params\.pretrained.*does not exist"):
        build("audio_encoder", "audioldm_vae", pretrained=str(tmp_path / "nowhere"))
    (tmp_path / "bare" / "vae").mkdir(parents=True)
    with pytest.raises(SavaError, match=r"audio_vae\.params\.pretrained.*no vocoder/"):
        build("audio_encoder", "audioldm_vae", pretrained=str(tmp_path / "bare"))


# ------------------------------------------------------------------------------------------- audioldm (v1)


def test_film_widening_keeps_the_pretrained_output(v1, clap) -> None:  # type: ignore[no-untyped-def]
    """At init: identical to the unwidened upstream UNet, with or without extra tokens."""
    x, t = noisy()
    text = clap.encode(PROMPTS).tokens
    extra = torch.randn(3, 4, CLAP_DIM)
    upstream = tiny_audioldm_unet(GRID[0], CLAP_DIM).eval()
    wide = v1.unet.class_embedding
    assert wide.in_features == 2 * CLAP_DIM and torch.count_nonzero(wide.weight[:, CLAP_DIM:]) == 0
    with torch.no_grad():
        reference = upstream(x, t, encoder_hidden_states=None, class_labels=text[:, 0]).sample
        # The widened Linear sums 32 inputs (16 zero-weighted) where upstream's sums 16: another GEMM
        # shape, so equal up to rounding through the UNet (about 15 blocks). Non-zero new columns or a
        # lost bias would move the output by 1e-2 and more.
        assert_close_f32(v1(x, t, Condition(text)), reference, depth=15)
        assert_close_f32(v1(x, t, Condition(text, None, extra, torch.ones(3, 4, dtype=torch.bool))), reference,
                         depth=15)


def test_v1_lora_targets_and_extra_after_a_step(v1, clap) -> None:  # type: ignore[no-untyped-def]
    names = lora_modules(v1)
    expected = {"unet.class_embedding"} | {n for n, _ in v1.named_modules() if n.endswith("time_emb_proj")}
    assert names == expected and len(expected) == 9
    x, t = noisy()
    text = clap.encode(PROMPTS).tokens
    extra = torch.randn(3, 4, CLAP_DIM)
    on = torch.ones(3, 4, dtype=torch.bool)
    adapted = lora_step(v1, x, t, Condition(text, None, extra, on))
    assert torch.count_nonzero(adapted.unet.class_embedding.base_layer.weight[:, CLAP_DIM:]) == 0  # base stays frozen
    with torch.no_grad():
        plain = adapted(x, t, Condition(text))
        assert not torch.allclose(adapted(x, t, Condition(text, None, extra, on)), plain, atol=1e-5)
        mixed = adapted(x, t, Condition(text, None, extra, torch.tensor([[True] * 4, [False] * 4, [True, False] * 2])))
        # exact: a row without extra tokens pools to exactly 0, the zeros plain uses; same shapes, same kernels
        assert torch.equal(mixed[1], plain[1]) and not torch.allclose(mixed[0], plain[0], atol=1e-5)


def test_v1_needs_the_pooled_clap_token(v1, clap) -> None:  # type: ignore[no-untyped-def]
    x, t = noisy(1)
    with pytest.raises(SavaError, match="output: pooled"):
        v1(x, t, Condition(torch.randn(1, 5, CLAP_DIM)))


@pytest.mark.parametrize(("name", "width", "tokens"), [("audioldm", CLAP_DIM, 1), ("audioldm2", PACKED_DIM, 12)])
def test_gradient_checkpointing_gives_the_same_gradients(name: str, width: int, tokens: int) -> None:
    """AudioLDM2's own blocks mis-route the text masks when they checkpoint; ours must not."""
    mask = torch.ones(2, tokens, dtype=torch.bool)
    if tokens > 1:
        mask[1, -3:] = False  # padded T5 tokens
    grads = []
    for checkpointing in (False, True):
        backbone = build("backbone", name, {"latent_shape": GRID, "condition_dim": width}, preset="tiny",
                         gradient_checkpointing=checkpointing).train()
        g = torch.Generator().manual_seed(3)
        condition = Condition(torch.randn(2, tokens, width, generator=g), mask, torch.randn(2, 3, width, generator=g))
        backbone(torch.randn(2, *GRID, generator=g), torch.tensor([1, 500]), condition).pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in backbone.parameters()]))
    # Recomputation runs the same kernels (equal here), but autograd may sum the gradients of tensors
    # used by several blocks in another order: float32 rounding through forward and backward (about
    # 2 x 20 blocks for AudioLDM2, fewer for v1). Ignoring the T5 mask moves these gradients by 1e-2.
    assert_close_f32(grads[1], grads[0], depth=40)


def test_scheduler_is_audioldms(v1, v2) -> None:  # type: ignore[no-untyped-def]
    for backbone in (v1, v2):
        scheduler = DDIMScheduler.from_config(backbone.scheduler_config)
        assert backbone.prediction_type == "epsilon" and scheduler.config.beta_schedule == "scaled_linear"
        torch.testing.assert_close(scheduler.betas[[0, -1]], torch.tensor([0.0015, 0.0195]))


def test_v1_round_trip_and_checks(tmp_path: Path, v1, clap) -> None:  # type: ignore[no-untyped-def]
    tiny_audioldm_unet(GRID[0], CLAP_DIM).save_pretrained(tmp_path / "unet")
    DDIMScheduler(**{**SCHEDULER_CONFIG, "beta_end": 0.02}).save_pretrained(tmp_path / "scheduler")
    tiny_vae().save_pretrained(tmp_path / "vae")
    tiny_vocoder(AudioLDMVAEParams(preset="tiny")).save_pretrained(tmp_path / "vocoder")
    runtime = {"latent_shape": GRID, "condition_dim": CLAP_DIM}
    loaded = build("backbone", "audioldm", runtime, pretrained=str(tmp_path))
    x, t = noisy()
    condition = Condition(clap.encode(PROMPTS).tokens)
    with torch.no_grad():
        # a separately loaded copy: equal up to rounding through the UNet (about 15 blocks)
        assert_close_f32(loaded(x, t, condition), v1(x, t, condition), depth=15)
    assert loaded.scheduler_config["beta_end"] == 0.02  # the pipeline's own schedule
    with pytest.raises(SavaError, match=r"audio_text_encoder.*16-d CLAP.*24-d.*output: pooled"):
        build("backbone", "audioldm", {"latent_shape": GRID, "condition_dim": 24}, pretrained=str(tmp_path))
    with pytest.raises(SavaError, match=r"audio_vae.*C=4"):
        build(
            "backbone", "audioldm", {"latent_shape": (8, 16, 32), "condition_dim": CLAP_DIM}, pretrained=str(tmp_path)
        )
    with pytest.raises(SavaError, match=r"grid width 16 != 32"):
        build(
            "backbone", "audioldm", {"latent_shape": (4, 16, 16), "condition_dim": CLAP_DIM}, pretrained=str(tmp_path)
        )
    with pytest.raises(SavaError, match=r"audio_backbone\.params\.pretrained.*has no unet"):
        build("backbone", "audioldm", runtime, pretrained=str(tmp_path / "vae"))


def test_v1_samples_with_the_core_sampler(v1, clap) -> None:  # type: ignore[no-untyped-def]
    sampler = get_registries()["sampler"].build("diffusers", {"steps": 2, "guidance_scale": 3.0})
    cond, null = clap.encode(PROMPTS[:2]), clap.encode(["", ""])
    out = sampler.sample(v1, Condition(cond.tokens, cond.mask), Condition(null.tokens, null.mask), 2,
                         torch.Generator().manual_seed(0))
    assert out.shape == (2, *GRID) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------- audioldm2


PIPELINE_WARNING = "ignore:.*past_key_values.*:FutureWarning"  # AudioLDM2Pipeline.encode_prompt under transformers 5


@pytest.mark.filterwarnings(PIPELINE_WARNING)
def test_text2_packing(text2) -> None:  # type: ignore[no-untyped-def]
    emb = text2.encode(PROMPTS)
    t5, t5_mask, generated = text2.pipeline.encode_prompt(PROMPTS, torch.device("cpu"), 1, False,
                                                          max_new_tokens=GENERATED_TOKENS)
    n = GENERATED_TOKENS
    assert (text2.dim, text2.language_model_dim, text2.t5_dim) == (32, 24, 32)
    assert emb.tokens.shape == (3, n + t5.shape[1], 32) and emb.pooled.shape == (3, 32)
    # exact: the same modules run twice on the same prompts, and packing only copies
    assert torch.equal(emb.tokens[:, :n, :24], generated) and not emb.tokens[:, :n, 24:].any()
    assert torch.equal(emb.tokens[:, n:], t5) and torch.equal(emb.mask[:, n:], t5_mask.bool()) and emb.mask[:, :n].all()
    assert emb.mask[2, n:].sum() == 1  # the empty prompt is T5's </s> alone


@pytest.mark.filterwarnings(PIPELINE_WARNING)
def test_v2_streams_match_the_pipeline_call(v2, text2) -> None:  # type: ignore[no-untyped-def]
    """The backbone feeds its UNet exactly what AudioLDM2Pipeline.__call__ does."""
    x, t = noisy()
    emb = text2.encode(PROMPTS)
    t5, t5_mask, generated = text2.pipeline.encode_prompt(PROMPTS, torch.device("cpu"), 1, False,
                                                          max_new_tokens=GENERATED_TOKENS)
    upstream = tiny_audioldm2_unet(GRID[0]).eval()
    with torch.no_grad():
        expected = upstream(x, t, encoder_hidden_states=generated, encoder_hidden_states_1=t5,
                            encoder_attention_mask_1=t5_mask).sample
        # a separately built UNet fed by our unpacking: equal up to rounding through the AudioLDM2 UNet
        # (about 20 blocks: three transformers per attention level)
        assert_close_f32(v2(x, t, Condition(emb.tokens, emb.mask)), expected, depth=20)


def test_v2_extra_tokens_join_the_gpt2_stream(v2, text2) -> None:  # type: ignore[no-untyped-def]
    x, t = noisy()
    emb = text2.encode(PROMPTS)
    extra = torch.randn(3, 4, PACKED_DIM)
    with torch.no_grad():
        plain = v2(x, t, Condition(emb.tokens, emb.mask))
        mixed = v2(
            x, t, Condition(emb.tokens, emb.mask, extra, torch.tensor([[True] * 4, [False] * 4, [True, False] * 2]))
        )
        shifted = extra.clone()
        shifted[..., 24:] += 5.0  # channels above the GPT-2 width are not read
        same = v2(x, t, Condition(emb.tokens, emb.mask, shifted, torch.ones(3, 4, dtype=torch.bool)))
        full = v2(x, t, Condition(emb.tokens, emb.mask, extra, torch.ones(3, 4, dtype=torch.bool)))
    # Row 1's masked extra tokens lengthen the GPT-2 stream's keys (another attention shape), so its
    # output equals plain's up to rounding through the UNet (about 20 blocks); 1.1e-6 was seen, and a
    # leaked extra token moves it by 0.1.
    assert_close_f32(mixed[1], plain[1], depth=20)
    # exact: channels above 24 are sliced off before any maths, so same and full run identical kernels
    assert not torch.allclose(mixed[0], plain[0], atol=1e-4) and torch.equal(same, full)


def test_v2_lora_targets_are_the_cross_attentions(v2, text2) -> None:  # type: ignore[no-untyped-def]
    from diffusers.models.attention_processor import Attention

    names = lora_modules(v2)
    projections = ("to_q", "to_k", "to_v", "to_out.0")
    cross = {f"{n}.{p}" for n, m in v2.named_modules() if isinstance(m, Attention) and n.endswith("attn2")
             and m.is_cross_attention for p in projections}
    self_attn2 = {n for n, m in v2.named_modules() if n.endswith("attn2") and not m.is_cross_attention}
    assert names == cross and len(cross) == 8 * 4 and len(self_attn2) == 4  # GPT-2 and T5 streams, no self-attention
    x, t = noisy()
    emb = text2.encode(PROMPTS)
    extra, on = torch.randn(3, 4, PACKED_DIM), torch.ones(3, 4, dtype=torch.bool)
    adapted = lora_step(v2, x, t, Condition(emb.tokens, emb.mask, extra, on))
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        plain = adapted(x, t, Condition(emb.tokens, emb.mask))
        off = adapted(x, t, Condition(emb.tokens, emb.mask, extra, ~on))
    # Masked-out extra tokens change the attention's padded length, so the float32 sums run in
    # another order: differences of a few ulps (1.2e-6 seen at |values| ~ 1.6 with one set of CPU
    # kernels, 0 with another) are rounding through the UNet (about 20 blocks), not leakage; one
    # leaked token moves the output by 6e-2.
    assert_close_f32(off, plain, depth=20)


def test_v2_round_trip_and_checks(tmp_path: Path, v2, text2) -> None:  # type: ignore[no-untyped-def]
    modules = tiny_modules()
    for name, module in modules.items():  # cvssp/audioldm2 saved its language model as a GPT2Model
        (module.transformer if name == "language_model" else module).save_pretrained(tmp_path / name)
    tiny_audioldm2_unet(GRID[0]).save_pretrained(tmp_path / "unet")
    text = build("text_encoder", "audioldm2_text", pretrained=str(tmp_path))
    backbone = build(
        "backbone", "audioldm2", {"latent_shape": GRID, "condition_dim": PACKED_DIM}, pretrained=str(tmp_path)
    )
    x, t = noisy()
    with torch.no_grad():
        a, b = text.encode(PROMPTS), text2.encode(PROMPTS)
        # Separately loaded copies: equal up to rounding. The text: CLAP, T5, the projection and 8
        # autoregressive GPT-2 steps (about 25 blocks); the UNet adds about 20.
        assert_close_f32(a.tokens, b.tokens, depth=25)
        assert_close_f32(backbone(x, t, Condition(a.tokens, a.mask)), v2(x, t, Condition(b.tokens, b.mask)), depth=45)
    with pytest.raises(SavaError, match=r"packed tokens of width 32 \(GPT-2 24, T5 32\), got 16"):
        build("backbone", "audioldm2", {"latent_shape": GRID, "condition_dim": 16}, pretrained=str(tmp_path))
    with pytest.raises(SavaError, match=r"needs 8 GPT-2 tokens followed by T5 tokens"):
        v2(x, t, Condition(torch.randn(3, GENERATED_TOKENS, PACKED_DIM)))
    (tmp_path / "half" / "text_encoder_2").mkdir(parents=True)
    with pytest.raises(
        SavaError, match=r"audio_text_encoder\.params\.pretrained.*has no text_encoder, projection_model"
    ):
        build("text_encoder", "audioldm2_text", pretrained=str(tmp_path / "half"))
