"""Parity with the upstream diffusers pipelines (docs/backbones.md, "Parity with the diffusers pipelines").

The tiny components are built once; the SAME modules (the same weights) go to the diffusers pipeline
and to sava's text-to-media path: the two-stream mode (:class:`sava_core.modes.TwoStream`, i.e.
``CascadeSampling.t2v`` / ``t2a`` with :class:`DiffusersSampler`, then ``finish``'s decoding). Both
get the same prompts, the same unconditional prompt (sava's is always the empty prompt, the
pipelines' default negative prompt), the same initial noise (sava draws it from the batch's
generator: the video grid's first, then the audio grid's; the pipelines get it as ``latents=``), the
same scheduler config, steps and guidance scale. Sampled latents and decoded media are compared in
float32 on the CPU.

Tolerances: :func:`conftest.assert_close_f32` with ``depth`` = steps x the denoiser's blocks (+ the
decoder's blocks for decoded media): the two paths differ only in kernel order (sava runs the
conditional and unconditional passes apart, the pipelines as one batch of 2B; text is encoded in
other batches and padded lengths), and DDIM re-reads the rounding of every step. Where a pipeline
differs ON PURPOSE, a test shows the difference and that switching it off gives the pipeline's output.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_f32
from sava_core.components.sampling import DiffusersSampler
from sava_core.conditioning import guidance_conditions
from sava_core.encoding import encode_text
from sava_core.generators import Generators
from sava_core.modes import Joint, TwoStream
from sava_core.pipeline import SavaPipeline
from sava_core.registry import get_registries

STEPS, GUIDANCE, SEED = 3, 3.0, 7
PROMPTS = ["a dog barks in a park", "waves crash on the beach and birds sing"]
COG_GRID = (3, 4, 4, 4)  # 9 frames of 32 x 32 through the tiny CogVideoX VAE
AD_GRID = (8, 4, 4, 4)  # 8 frames of 32 x 32 through the tiny SD VAE
AUDIO_GRID = (4, 16, 32)  # 32 mel frames (0.32 s at 16 kHz) through the tiny AudioLDM VAE
MEL_FRAMES, HOP, RATE = 32, 160, 16000
#: Blocks a difference goes through in one denoiser pass (tiny configs): the CogVideoX transformer's 2
#: layers with patch embedding and output projection; the AnimateDiff, AudioLDM and AudioLDM2 UNets'
#: resnets, attention and motion modules (AudioLDM2: three transformers per attention level).
DENOISER_DEPTH = {"cogvideox": 4, "animatediff": 16, "audioldm": 10, "audioldm2": 20}
#: Blocks of the decoders: CogVideoX's 3D VAE, SD's VAE, AudioLDM's mel VAE + HiFi-GAN.
DECODER_DEPTH = {"cogvideox": 10, "animatediff": 10, "audioldm": 12, "audioldm2": 12}

#: AudioLDM2Pipeline.encode_prompt passes `past_key_values` (deprecated in transformers 5); AudioLDMPipeline
#: is a deprecated pipeline.
pytestmark = pytest.mark.filterwarnings("ignore:.*past_key_values.*:FutureWarning", "ignore:.*deprecated.*")


def build(kind: str, name: str, runtime: dict | None = None, **params):  # type: ignore[no-untyped-def]
    return get_registries()[kind].build(name, params, **(runtime or {}))


def sampler(**params: Any) -> DiffusersSampler:
    return build("sampler", "diffusers", steps=params.pop("steps", STEPS),
                 guidance_scale=params.pop("guidance_scale", GUIDANCE), **params)


def close(actual: torch.Tensor, expected: torch.Tensor, depth: int, small: bool = False) -> float:
    """assert_close_f32 (``small``: rounding relative to the result's own magnitude, for tiny random
    waveforms of order 1e-3); returns the max abs difference (reported in docs/backbones.md)."""
    scale = float(expected.abs().max()) if small else None
    assert_close_f32(actual, expected, depth=depth, scale=scale)
    return float((actual - expected).abs().max())


# ----------------------------------------------------------------------------------- the tiny components


@pytest.fixture(scope="module")
def cog() -> SimpleNamespace:
    return SimpleNamespace(vae=build("video_encoder", "cogvideox_vae", preset="tiny"),
                           text=build("text_encoder", "t5", preset="tiny"),
                           backbone=build("backbone", "cogvideox", {"latent_shape": COG_GRID, "condition_dim": 32},
                                          preset="tiny").eval())


@pytest.fixture(scope="module")
def ad() -> SimpleNamespace:
    return SimpleNamespace(vae=build("video_encoder", "sd_vae", preset="tiny"),
                           text=build("text_encoder", "clip_text", preset="tiny"),
                           backbone=build("backbone", "animatediff", {"latent_shape": AD_GRID, "condition_dim": 32},
                                          preset="tiny").eval())


@pytest.fixture(scope="module")
def audio_vae() -> Any:
    return build("audio_encoder", "audioldm_vae", preset="tiny")


@pytest.fixture(scope="module")
def ldm(audio_vae) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    return SimpleNamespace(vae=audio_vae, text=build("text_encoder", "clap_text", preset="tiny", output="pooled"),
                           backbone=build("backbone", "audioldm", {"latent_shape": AUDIO_GRID, "condition_dim": 16},
                                          preset="tiny").eval())


@pytest.fixture(scope="module")
def ldm2(audio_vae) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    return SimpleNamespace(vae=audio_vae, text=build("text_encoder", "audioldm2_text", preset="tiny"),
                           backbone=build("backbone", "audioldm2", {"latent_shape": AUDIO_GRID, "condition_dim": 32},
                                          preset="tiny").eval())


def two_stream(video: SimpleNamespace, audio: SimpleNamespace, prompts: list[str] = PROMPTS, seed: int = SEED,
               **sampling: Any) -> dict[str, Any]:
    """sava's two-stream mode over these components (a SavaPipeline holding just the generators)."""
    gen = Generators(video.vae, audio.vae, video.vae, audio.vae, {"video": video.text, "audio": audio.text},
                     video.backbone, audio.backbone, sampler(**sampling))
    pipeline = SavaPipeline(recipe=None, registries=None, mode=TwoStream(), generators=gen)  # type: ignore[arg-type]
    return TwoStream().generate(pipeline, prompts, seed)


def initial_noise(seed: int = SEED, n: int = len(PROMPTS), video: tuple[int, ...] = COG_GRID,
                  audio: tuple[int, ...] = AUDIO_GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise the two-stream mode starts from: the batch generator's first draw (the video grid),
    then its second (the audio grid); DDIM steps draw nothing."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *video, generator=g), torch.randn(n, *audio, generator=g)


# ----------------------------------------------------------------------------------- the diffusers pipelines


class LastLatents:
    """Catches the pipeline's latents after its last step (``callback_on_step_end`` or the older ``callback``)."""

    def __init__(self) -> None:
        self.latents: torch.Tensor | None = None

    def on_step_end(self, pipe: Any, step: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.latents = kwargs["latents"].clone()
        return kwargs

    def callback(self, step: int, t: Any, latents: torch.Tensor) -> None:
        self.latents = latents.clone()


def cogvideox_pipeline(c: SimpleNamespace, transformer: Any = None) -> Any:
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline

    pipe = CogVideoXPipeline(tokenizer=c.text.tokenizer, text_encoder=c.text.model, vae=c.vae.vae,
                             transformer=transformer or c.backbone.transformer,
                             scheduler=CogVideoXDDIMScheduler.from_config(c.backbone.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_cogvideox(c: SimpleNamespace, latents: torch.Tensor, prompts: list[str] = PROMPTS, steps: int = STEPS,
                  guidance_scale: float = GUIDANCE, transformer: Any = None,
                  **call: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(final latents (B, F_lat, C, h, w), frames (B, F, 3, H, W) in [0, 1]) of CogVideoXPipeline."""
    caught = LastLatents()
    frames = cogvideox_pipeline(c, transformer)(
        prompt=prompts, height=32, width=32, num_frames=9, num_inference_steps=steps, guidance_scale=guidance_scale,
        latents=latents.clone(), max_sequence_length=c.text.max_length, output_type="pt",
        callback_on_step_end=caught.on_step_end, **call).frames
    assert caught.latents is not None
    return caught.latents, frames


def run_animatediff(c: SimpleNamespace, latents: torch.Tensor, unet: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(final latents in sava's layout (B, F, C, h, w), frames (B, F, 3, H, W)) of AnimateDiffPipeline,
    which denoises (B, C, F, h, w)."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler

    pipe = AnimateDiffPipeline(vae=c.vae.vae, text_encoder=c.text.model, tokenizer=c.text.tokenizer,
                               unet=unet or c.backbone.unet, motion_adapter=None,
                               scheduler=DDIMScheduler.from_config(c.backbone.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    caught = LastLatents()
    frames = pipe(prompt=PROMPTS, height=32, width=32, num_frames=AD_GRID[0], num_inference_steps=STEPS,
                  guidance_scale=GUIDANCE, latents=latents.permute(0, 2, 1, 3, 4).clone(), output_type="pt",
                  callback_on_step_end=caught.on_step_end).frames
    assert caught.latents is not None
    return caught.latents.permute(0, 2, 1, 3, 4), frames


def pipeline_unet(backbone: Any) -> Any:
    """AudioLDM's UNet as the pipeline holds it: sava widens the class-embedding projection with zero
    input columns for Stage II's extra condition (docs/backbones.md); the pipeline feeds the CLAP
    vector alone, so it gets the same weights without those columns."""
    unet = copy.deepcopy(backbone.unet)
    wide = unet.class_embedding
    narrow = torch.nn.Linear(backbone.condition_dim, wide.out_features)
    with torch.no_grad():
        narrow.weight.copy_(wide.weight[:, : backbone.condition_dim])
        narrow.bias.copy_(wide.bias)
    unet.class_embedding = narrow
    return unet


def run_audioldm(c: SimpleNamespace, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(final latents (B, C, t, m), waveform (B, S)) of AudioLDMPipeline."""
    from diffusers import AudioLDMPipeline, DDIMScheduler

    pipe = AudioLDMPipeline(vae=c.vae.vae, text_encoder=c.text.model, tokenizer=c.text.tokenizer,
                            unet=pipeline_unet(c.backbone), vocoder=c.vae.vocoder,
                            scheduler=DDIMScheduler.from_config(c.backbone.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    caught = LastLatents()
    audio = pipe(prompt=PROMPTS, audio_length_in_s=MEL_FRAMES * HOP / RATE, num_inference_steps=STEPS,
                 guidance_scale=GUIDANCE, latents=latents.clone(), output_type="pt", callback=caught.callback).audios
    assert caught.latents is not None
    return caught.latents, audio


def audioldm2_pipeline(c: SimpleNamespace) -> Any:
    from diffusers import AudioLDM2Pipeline, DDIMScheduler

    text = c.text.pipeline  # the AudioLDM2Pipeline holding audioldm2_text's modules
    pipe = AudioLDM2Pipeline(vae=c.vae.vae, text_encoder=text.text_encoder, text_encoder_2=text.text_encoder_2,
                             projection_model=text.projection_model, language_model=text.language_model,
                             tokenizer=text.tokenizer, tokenizer_2=text.tokenizer_2, feature_extractor=None,
                             unet=c.backbone.unet, vocoder=c.vae.vocoder,
                             scheduler=DDIMScheduler.from_config(c.backbone.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def empty_prompt_alone(c: SimpleNamespace, prompts: list[str]) -> dict[str, torch.Tensor]:
    """AudioLDM2's negative conditioning as sava makes it: the empty prompt encoded on its own (by the
    pipeline's own ``encode_prompt``), its T5 tokens zero-padded (and masked) to the prompts' length."""
    pipe = c.text.pipeline
    cond, _, _ = pipe.encode_prompt(prompts, torch.device("cpu"), 1, False, max_new_tokens=8)
    t5, mask, generated = pipe.encode_prompt([""] * len(prompts), torch.device("cpu"), 1, False, max_new_tokens=8)
    pad = cond.shape[1] - t5.shape[1]
    return {"negative_prompt_embeds": F.pad(t5, (0, 0, 0, pad)), "negative_attention_mask": F.pad(mask, (0, pad)),
            "negative_generated_prompt_embeds": generated}


def run_audioldm2(c: SimpleNamespace, latents: torch.Tensor, **call: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(final latents (B, C, t, m), waveform (B, S)) of AudioLDM2Pipeline."""
    caught = LastLatents()
    audio = audioldm2_pipeline(c)(
        prompt=PROMPTS, audio_length_in_s=MEL_FRAMES * HOP / RATE, num_inference_steps=STEPS,
        guidance_scale=GUIDANCE, latents=latents.clone(), output_type="pt", max_new_tokens=8,
        callback=caught.callback, **call).audios
    assert caught.latents is not None
    return caught.latents, audio


# ----------------------------------------------------------------------------------- the sampler's noise


def test_given_noise_is_what_the_sampler_draws_by_default(cog) -> None:  # type: ignore[no-untyped-def]
    """``noise=`` (the pipelines' ``latents=``) starts from the given tensor; the default draws exactly it
    from the generator: the same sampling, bit for bit."""
    s, text = sampler(steps=2), encode_text(cog.text, PROMPTS)
    drawn = s.sample(cog.backbone, *guidance_conditions(text), 2, torch.Generator().manual_seed(SEED))
    noise = torch.randn(2, *COG_GRID, generator=torch.Generator().manual_seed(SEED))
    given = s.sample(cog.backbone, *guidance_conditions(text), 2, torch.Generator().manual_seed(123), noise=noise)
    assert torch.equal(drawn, given)  # the same kernels on the same inputs
    with pytest.raises(ValueError, match="latent_shape"):
        s.sample(cog.backbone, *guidance_conditions(text), 2, torch.Generator(), noise=noise[:1])


# ----------------------------------------------------------------------------------- two-stream vs the pipelines


def test_cogvideox_and_audioldm_two_stream_match_their_pipelines(cog, ldm) -> None:  # type: ignore[no-untyped-def]
    """The paper's main pairing: T2V = CogVideoX (T5), T2A = AudioLDM (pooled CLAP)."""
    ours = two_stream(cog, ldm)
    video_noise, audio_noise = initial_noise()
    latents, frames = run_cogvideox(cog, video_noise)
    depth = STEPS * DENOISER_DEPTH["cogvideox"]
    close(ours["video_grid"], latents, depth)
    close(ours["video"], frames, depth + DECODER_DEPTH["cogvideox"])
    latents, audio = run_audioldm(ldm, audio_noise)
    depth = STEPS * DENOISER_DEPTH["audioldm"]
    close(ours["audio_grid"], latents, depth)
    assert ours["audio"].shape == (2, 1, audio.shape[1])  # the pipeline cuts to audio_length_in_s: the same
    close(ours["audio"][:, 0], audio, depth + DECODER_DEPTH["audioldm"], small=True)


def test_animatediff_and_audioldm2_two_stream_match_their_pipelines(ad, ldm2) -> None:  # type: ignore[no-untyped-def]
    """Table 1's pairing: T2V = AnimateDiff (CLIP), T2A = AudioLDM2 (GPT-2 + T5), AudioLDM2's negative
    conditioning made as sava makes it (the next test shows the pipeline's own)."""
    ours = two_stream(ad, ldm2)
    video_noise, audio_noise = initial_noise(video=AD_GRID)
    latents, frames = run_animatediff(ad, video_noise)
    depth = STEPS * DENOISER_DEPTH["animatediff"]
    close(ours["video_grid"], latents, depth)
    close(ours["video"], frames, depth + DECODER_DEPTH["animatediff"])
    # sava's spatial attention processor (KeyMaskProcessor, for Stage II's masked extra tokens) is
    # diffusers' AttnProcessor2_0 when there are none: the UNet with the upstream processors agrees
    from diffusers.models.attention_processor import AttnProcessor2_0

    upstream = copy.deepcopy(ad.backbone.unet)
    upstream.set_attn_processor(AttnProcessor2_0())
    close(ours["video_grid"], run_animatediff(ad, video_noise, unet=upstream)[0], depth)

    latents, audio = run_audioldm2(ldm2, audio_noise, **empty_prompt_alone(ldm2, PROMPTS))
    depth = STEPS * DENOISER_DEPTH["audioldm2"]
    close(ours["audio_grid"], latents, depth)
    close(ours["audio"][:, 0], audio, depth + DECODER_DEPTH["audioldm2"], small=True)


def test_audioldm2_pipeline_pads_its_negative_prompt_to_the_batch(ldm2) -> None:  # type: ignore[no-untyped-def]
    """Intentional: AudioLDM2Pipeline pads the negative prompt's T5 tokens to the batch's longest prompt,
    which moves GPT-2's positions for the 8 tokens it generates, so its unconditional depends on the
    other prompts of the batch; sava's is the empty prompt encoded alone, the same in every batch.
    Given that negative conditioning (previous test), the pipeline gives sava's output."""
    ours = sampler().sample(ldm2.backbone, *guidance_conditions(encode_text(ldm2.text, PROMPTS)), 2,
                            torch.Generator(), noise=initial_noise()[1])
    latents, _ = run_audioldm2(ldm2, initial_noise()[1])
    assert (ours - latents).abs().max() > 1e-2 * latents.abs().max()  # 4.1 at |latents| <= 29 measured
    pipe = ldm2.text.pipeline
    alone = pipe.encode_prompt([""], torch.device("cpu"), 1, False, max_new_tokens=8)[2]
    padded = pipe.encode_prompt(["", PROMPTS[1]], torch.device("cpu"), 1, False, max_new_tokens=8)[2][:1]
    assert not torch.allclose(alone, padded, atol=1e-2)  # the same "" in another batch: other GPT-2 tokens


# ----------------------------------------------------------------------------------- guidance, CogVideoX 1.5


def test_guidance_below_one(cog) -> None:  # type: ignore[no-untyped-def]
    """Intentional: the pipelines switch guidance off for guidance_scale <= 1 (conditional alone); sava
    applies eps_u + s (eps_c - eps_u) for any s != 1 (s = 0: unconditional). At s = 1 both sample the
    conditional alone."""
    noise = initial_noise()[0]
    text = encode_text(cog.text, PROMPTS)
    conditional = run_cogvideox(cog, noise, guidance_scale=1.0)[0]
    assert torch.equal(run_cogvideox(cog, noise, guidance_scale=0.5)[0], conditional)
    depth = STEPS * DENOISER_DEPTH["cogvideox"]
    for scale in (1.0, 0.5):
        ours = sampler(guidance_scale=scale).sample(cog.backbone, *guidance_conditions(text), 2, torch.Generator(),
                                                    noise=noise)
        if scale == 1.0:
            close(ours, conditional, depth)
        else:
            assert (ours - conditional).abs().max() > 1e-3


def test_cogvideox15_extra_frame(cog) -> None:  # type: ignore[no-untyped-def]
    """Intentional (docs/backbones.md): with CogVideoX 1.5's two latent frames per patch, an odd F_lat
    (always, for 8k + 1 frames) gets one more frame in front. The pipeline samples it as a frame of its
    own and drops it; sava's grid keeps F_lat frames and re-copies the first noisy frame at every step.
    From the same start (the pipeline's extra frame = the first frame's noise) one step agrees; after
    that the pipeline's extra frame follows its own prediction."""
    from diffusers import CogVideoXTransformer3DModel

    config = {k: v for k, v in cog.backbone.transformer.config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel.from_config({**config, "patch_size_t": 2}).eval()
    backbone = copy.deepcopy(cog.backbone)  # the same weights otherwise, with the 1.5 transformer
    backbone.transformer = transformer
    noise = initial_noise()[0]
    text = encode_text(cog.text, PROMPTS)
    start = torch.cat([noise[:, :1], noise], dim=1)
    for steps in (1, 3):
        ours = sampler(steps=steps).sample(backbone, *guidance_conditions(text), 2, torch.Generator(), noise=noise)
        latents, frames = run_cogvideox(cog, start, steps=steps, transformer=transformer)
        if steps == 1:
            close(ours, latents[:, 1:], DENOISER_DEPTH["cogvideox"])
            close(cog.vae.decode_grid(ours), frames, DENOISER_DEPTH["cogvideox"] + DECODER_DEPTH["cogvideox"])
        else:
            assert (ours - latents[:, 1:]).abs().max() > 1e-3


# ----------------------------------------------------------------------------------- AnimateDiff's schedule


def test_animatediff_schedule_is_diffusers_animatediff_ddim(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Intentional: from a SD 1.5 directory sava samples with the DDIM schedule diffusers documents for
    AnimateDiff (``DDIMScheduler.from_pretrained(sd, subfolder="scheduler", clip_sample=False,
    timestep_spacing="linspace", beta_schedule="linear", steps_offset=1)``), not the folder's scheduler
    as it is (what ``AnimateDiffPipeline.from_pretrained`` would load)."""
    import inspect
    import json

    from diffusers import DDIMScheduler

    from sava_animatediff.models import _scheduler_config

    sd = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
          "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
          "steps_offset": 1, "trained_betas": None}  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    (tmp_path / "scheduler_config.json").write_text(json.dumps(sd))
    documented = DDIMScheduler.from_config(sd, clip_sample=False, timestep_spacing="linspace", beta_schedule="linear",
                                           steps_offset=1)
    ours = DDIMScheduler.from_config(_scheduler_config(tmp_path / "scheduler_config.json"))
    read = set(inspect.signature(DDIMScheduler.__init__).parameters) - {"self"}
    assert {k: ours.config[k] for k in read} == {k: documented.config[k] for k in read}


# ----------------------------------------------------------------------------------- LTX-2


@pytest.fixture(scope="module")
def ltx2() -> Any:
    return build("joint_generator", "ltx2", preset="tiny")


def test_ltx2_joint_generator_is_the_pipeline_call(ltx2) -> None:  # type: ignore[no-untyped-def]
    """sava's joint generator calls LTX2Pipeline itself (no sava sampler): the same modules and the same
    generator give the same clip bit for bit. Intentional: the audio is clamped to [-1, 1] and cut or
    zero-padded to the video's duration, F / fps (the pipeline's is shorter); the joint mode then
    downmixes and resamples to the dataset's format (none when it is the model's)."""
    from diffusers import LTX2Pipeline

    video, audio = ltx2.generate(PROMPTS, torch.Generator().manual_seed(SEED))
    pipe = LTX2Pipeline(**ltx2.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=PROMPTS, frame_rate=ltx2.fps, generator=torch.Generator().manual_seed(SEED), output_type="pt",
               **ltx2.call_sizes)
    assert torch.equal(video, out.frames)
    n = out.audio.shape[-1]
    assert audio.shape[-1] == round(ltx2.num_frames / ltx2.fps * ltx2.sample_rate) > n  # 9000 > 7920 samples
    assert torch.equal(audio[..., :n], out.audio.clamp(-1, 1)) and not audio[..., n:].any()

    pipeline = SavaPipeline(recipe=None, registries=None, mode=Joint(), joint_generator=ltx2)  # type: ignore[arg-type]
    for rate, channels in ((ltx2.sample_rate, 2), (RATE, 1)):
        pipeline.test_clip = lambda: SimpleNamespace(fps=ltx2.fps, sample_rate=rate,  # type: ignore[method-assign]
                                                     audio=torch.zeros(channels, 1))
        clip = pipeline.joint(PROMPTS, SEED)
        assert torch.equal(clip["video"], video)
        if rate == ltx2.sample_rate:
            assert torch.equal(clip["audio"], audio)
        else:
            import torchaudio

            expected = torchaudio.functional.resample(audio.mean(1, keepdim=True), ltx2.sample_rate, rate)
            assert torch.equal(clip["audio"], expected.clamp(-1, 1))
