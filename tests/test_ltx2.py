"""The LTX-2 plug-in: the joint audio-video generator (diffusers' LTX2Pipeline) and its two VAEs as
encoders, on the offline ``tiny`` preset."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from conftest import assert_close_f32
from sava_core.errors import SavaError
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests

TINY_SIZES = {"num_frames": 9, "height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 16}
PROMPTS = ["a dog barks in a park", "rain falls on a window with distant thunder"]


def build(kind: str, name: str, params: dict):
    torch.manual_seed(0)
    return get_registries()[kind].build(name, params)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def generator():
    return build("joint_generator", "ltx2", {"preset": "tiny"})


@pytest.fixture(scope="module")
def video_vae():
    return build("video_encoder", "ltx2_video_vae", {"preset": "tiny"})


@pytest.fixture(scope="module")
def audio_vae():
    return build("audio_encoder", "ltx2_audio_vae", {"preset": "tiny"})


# ------------------------------------------------------------------------------ the test kit


class TestLTX2JointGenerator(ComponentTests):
    kind, name = "joint_generator", "ltx2"
    params = {"preset": "tiny"}
    expected_shape = (2, 9, 3, 32, 32)

    def inputs(self):
        return PROMPTS, seeded()


class TestLTX2VideoVAE(ComponentTests):
    kind, name = "video_encoder", "ltx2_video_vae"
    params = {"preset": "tiny"}
    expected_shape = (2, 5, 16)  # 9 frames -> 5 latent frames; 4 channels x 2 x 2 pooled cells

    def inputs(self):
        return (torch.rand(2, 9, 3, 32, 32),)


class TestLTX2AudioVAE(ComponentTests):
    kind, name = "audio_encoder", "ltx2_audio_vae"
    params = {"preset": "tiny"}
    expected_shape = (2, 10, 8)  # 6000 samples -> 38 mel frames -> 10 latent steps; 2 channels x 4 bins

    def inputs(self):
        return (torch.rand(2, 2, 6000) * 2 - 1,)


# ------------------------------------------------------------------------------ joint generator


@pytest.mark.parametrize("sizes", [{}, {"num_frames": 17, "frame_rate": 25.0, "height": 64, "width": 32}])
def test_outputs_follow_the_contract_and_last_equally_long(sizes):
    gen = build("joint_generator", "ltx2", {"preset": "tiny", **sizes})
    video, audio = gen.generate(PROMPTS, seeded())
    frames = sizes.get("num_frames", 9)
    assert video.shape == (2, frames, 3, sizes.get("height", 32), sizes.get("width", 32))
    assert video.dtype == audio.dtype == torch.float32
    assert video.min() >= 0 and video.max() <= 1
    assert audio.shape[:2] == (2, 2) and audio.abs().max() <= 1
    assert gen.fps == sizes.get("frame_rate", 24.0) and gen.sample_rate == 24000
    video_seconds, audio_seconds = frames / gen.fps, audio.shape[-1] / gen.sample_rate
    assert abs(video_seconds - audio_seconds) <= 1 / gen.sample_rate
    # the vocoder's audio fills the clip but its last 3 mel frames (30 ms): only that tail is padding
    assert audio[..., : audio.shape[-1] - round(0.03 * gen.sample_rate)].abs().amax(-1).min() > 0


def test_the_same_seed_gives_the_same_clip_and_another_seed_another(generator):
    video, audio = generator.generate(PROMPTS, seeded(3))
    again_video, again_audio = generator.generate(PROMPTS, seeded(3))
    other_video, other_audio = generator.generate(PROMPTS, seeded(4))
    # exact: the same modules, prompts and seed run the same kernels
    assert torch.equal(video, again_video) and torch.equal(audio, again_audio)
    assert not torch.allclose(video, other_video) and not torch.allclose(audio, other_audio)


def test_the_prompt_conditions_both_streams(generator):
    dog_video, dog_audio = generator.generate([PROMPTS[0]], seeded())
    rain_video, rain_audio = generator.generate([PROMPTS[1]], seeded())
    assert not torch.allclose(dog_video, rain_video)
    assert not torch.allclose(dog_audio, rain_audio)


def test_the_empty_prompt_works(generator):
    video, audio = generator.generate([""], seeded())
    assert torch.isfinite(video).all() and torch.isfinite(audio).all()


def test_it_is_one_transformer_with_cross_modal_attention(generator):
    names = [n for n, _ in generator.named_modules()]
    assert any(n.endswith("audio_to_video_attn") for n in names)
    assert any(n.endswith("video_to_audio_attn") for n in names)
    assert not any(p.requires_grad for p in generator.parameters())


def test_guidance_settings_reach_the_pipeline(generator):
    plain = build("joint_generator", "ltx2", {"preset": "tiny", "guidance_scale": 1.0, "audio_guidance_scale": 1.0,
                                              "stg_scale": 0.0, "audio_stg_scale": 0.0, "modality_scale": 1.0,
                                              "audio_modality_scale": 1.0, "guidance_rescale": 0.0,
                                              "audio_guidance_rescale": 0.0, "use_cross_timestep": False})
    video, audio = generator.generate(PROMPTS, seeded())
    plain_video, plain_audio = plain.generate(PROMPTS, seeded())
    assert not torch.allclose(video, plain_video) and not torch.allclose(audio, plain_audio)


def test_pretrained_round_trip(generator, tmp_path):
    generator.save_pretrained(tmp_path)
    loaded = build("joint_generator", "ltx2", {"pretrained": str(tmp_path), **TINY_SIZES})
    # Separately loaded copies: the same weights, but nothing pins the same kernels (memory layout), so
    # equal up to rounding. A clip: the text encoder, 2 denoising steps of the 2-layer joint
    # transformer under guidance (which scales differences by a few), the VAE decoders and the vocoder:
    # about 50 blocks (other CPU kernels move it by 1.6e-6; another prompt moves the video by 5e-2).
    for ours, theirs in zip(generator.generate(PROMPTS, seeded()), loaded.generate(PROMPTS, seeded()), strict=True):
        assert_close_f32(theirs, ours, depth=50)
    video = torch.rand(1, 9, 3, 32, 32)
    tiny_video = build("video_encoder", "ltx2_video_vae", {"preset": "tiny"})
    saved_video = build("video_encoder", "ltx2_video_vae", {"pretrained": str(tmp_path)})
    assert_close_f32(saved_video.encode(video), tiny_video.encode(video), depth=8)  # the VAE encoder: about 8 blocks
    audio = torch.rand(1, 2, 4000) * 2 - 1
    tiny_audio = build("audio_encoder", "ltx2_audio_vae", {"preset": "tiny"})
    saved_audio = build("audio_encoder", "ltx2_audio_vae", {"pretrained": str(tmp_path)})
    grid = tiny_audio.encode_grid(audio)
    assert_close_f32(saved_audio.encode_grid(audio), grid, depth=8)  # log-mel + the VAE encoder
    assert_close_f32(saved_audio.decode_grid(grid), tiny_audio.decode_grid(grid), depth=12)  # decoder + vocoder


@pytest.mark.parametrize(("kind", "name", "setting"), [
    ("joint_generator", "ltx2", "model.joint_generator.params.pretrained"),
    ("video_encoder", "ltx2_video_vae", "model.video_encoder.params.pretrained"),
    ("audio_encoder", "ltx2_audio_vae", "model.audio_encoder.params.pretrained"),
])
def test_a_wrong_local_path_names_the_setting(kind, name, setting, tmp_path):
    with pytest.raises(SavaError, match=setting.replace(".", r"\.") + ".*does not exist"):
        build(kind, name, {"pretrained": str(tmp_path / "missing")})
    with pytest.raises(SavaError, match=setting.replace(".", r"\.") + ".*model_index.json"):
        build(kind, name, {"pretrained": str(tmp_path)})
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "CogVideoXPipeline", "vae": ["diffusers", "X"]}))
    with pytest.raises(SavaError, match=setting.replace(".", r"\.") + ".*CogVideoXPipeline without"):
        build(kind, name, {"pretrained": str(tmp_path)})


def test_a_wrong_subfolder_names_the_setting(generator, tmp_path):
    generator.save_pretrained(tmp_path)
    with pytest.raises(SavaError, match=r"model\.video_encoder\.params\.subfolder"):
        build("video_encoder", "ltx2_video_vae", {"pretrained": str(tmp_path), "subfolder": "audio"})
    with pytest.raises(SavaError, match=r"model\.audio_encoder\.params\.vocoder_subfolder.*not one of"):
        build("audio_encoder", "ltx2_audio_vae", {"pretrained": str(tmp_path), "vocoder_subfolder": "vae"})


def test_settings_are_checked():
    params = get_registries()["joint_generator"].get("ltx2").load_params()
    for wrong in ({}, {"preset": "tiny", "pretrained": "Lightricks/LTX-2"}, {"preset": "tiny", "height": 48}):
        with pytest.raises(ValidationError):
            params.model_validate(wrong)
    with pytest.raises(SavaError, match=r"params\.num_frames: 10 frames.*2k \+ 1"):
        build("joint_generator", "ltx2", {"preset": "tiny", "num_frames": 10})


@pytest.mark.skipif(torch.accelerator.is_available(), reason="offloading works where there is a GPU")
def test_cpu_offload_without_a_gpu_is_a_clear_error():
    with pytest.raises(SavaError, match=r"enable_model_cpu_offload.*GPU"):
        build("joint_generator", "ltx2", {"preset": "tiny", "enable_model_cpu_offload": True})


# ------------------------------------------------------------------------------ encoders


def test_video_grid_is_what_the_pipeline_denoises(video_vae):
    from diffusers import LTX2Pipeline

    vae = video_vae.vae
    mean, std = vae.latents_mean.clone(), vae.latents_std.clone()
    try:
        vae.latents_mean.copy_(torch.randn_like(mean))
        vae.latents_std.copy_(torch.rand_like(std) + 0.5)
        video = torch.rand(2, 9, 3, 32, 64)
        grid = video_vae.encode_grid(video)
        raw = vae.encode(video.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mode()
        expected = LTX2Pipeline._normalize_latents(raw, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        assert grid.shape == (2, 4, 5, 4, 8)
        # the same VAE call and normalisation on the same input (equal in fact): the float32 defaults
        torch.testing.assert_close(grid, expected)
        decoded = video_vae.decode_grid(grid)
        assert decoded.shape == video.shape and decoded.min() >= 0 and decoded.max() <= 1
        # the grid's normalisation and its inverse round raw by an ulp; that runs through the VAE
        # decoder (about 8 blocks; 8e-7 seen)
        assert_close_f32(decoded, ((vae.decode(raw).sample + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4), depth=8)
    finally:
        vae.latents_mean.copy_(mean)
        vae.latents_std.copy_(std)


def test_video_sequence_is_time_first_and_pooled():
    whole = build("video_encoder", "ltx2_video_vae", {"preset": "tiny", "pool": 1})
    grid = torch.randn(2, 4, 5, 4, 8)
    # one mean, reduced over another layout: the float32 defaults (one op's rounding)
    torch.testing.assert_close(whole.grid_to_sequence(grid), grid.mean((3, 4)).transpose(1, 2))
    assert whole.latent_dim == 4


def test_video_of_the_wrong_size_says_which_data_settings_to_change(video_vae):
    for frames, size in ((8, 32), (9, 36)):
        with pytest.raises(SavaError, match=r"2k \+ 1 frames.*multiples of 8"):
            video_vae.encode(torch.rand(1, frames, 3, size, size))


def test_audio_grid_and_sequence_are_the_pipeline_packing(audio_vae):
    from diffusers import LTX2Pipeline

    vae = audio_vae.vae
    mean, std = vae.latents_mean.clone(), vae.latents_std.clone()
    try:
        vae.latents_mean.copy_(torch.randn_like(mean))
        vae.latents_std.copy_(torch.rand_like(std) + 0.5)
        audio = torch.rand(2, 2, 16000) * 2 - 1
        grid = audio_vae.encode_grid(audio)
        assert grid.shape == (2, 2, 26, 4)  # 1 s: 101 mel frames -> 26 latent steps (25 per second)
        raw = vae.encode(audio_vae.log_mel(audio)).latent_dist.mode()
        packed = LTX2Pipeline._normalize_audio_latents(LTX2Pipeline._pack_audio_latents(raw), vae.latents_mean,
                                                       vae.latents_std)
        # the same VAE call, then reshapes and an elementwise normalisation (equal in fact): the float32 defaults
        torch.testing.assert_close(audio_vae.grid_to_sequence(grid), packed)
        decoded = audio_vae.decode_grid(grid)
        assert decoded.shape == (2, 2, (4 * 26 - 3) * 160) and decoded.abs().max() <= 1
    finally:
        vae.latents_mean.copy_(mean)
        vae.latents_std.copy_(std)


def test_audio_front_end_is_ltx2_log_mel_and_takes_mono(audio_vae):
    mono = torch.rand(1, 1, 8000) * 2 - 1
    mel = audio_vae.log_mel(mono)
    assert mel.shape == (1, 2, 8000 // 160 + 1, 16)
    # exact: both channels hold the same samples and go through the same ops
    assert torch.equal(mel[:, 0], mel[:, 1])
    assert torch.equal(audio_vae.encode(mono), audio_vae.encode(mono.expand(-1, 2, -1)))
    quiet = audio_vae.log_mel(torch.zeros(1, 2, 8000))
    assert torch.allclose(quiet, torch.full_like(quiet, torch.log(torch.tensor(1e-5)).item()))
