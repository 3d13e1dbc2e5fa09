"""The paper's backbones at their released sizes with random weights, on the device this machine has:
seconds per clip and peak GPU memory of sava's sampling against the diffusers pipeline on the same
modules (the ratio from the same run), and one Stage II step with and without the memory options.

Families (each at the shapes of its paper recipe, ``recipes/paper/*.yaml``): ``cogvideox``
(CogVideoX1.5-5B, ``CogVideoXPipeline``; t2av_cogvideox_audioldm: 81 frames of 480 x 720),
``animatediff`` (SD 1.5 + motion adapter, ``AnimateDiffPipeline``; t2av_animatediff_audioldm2: 16
frames of 512 x 512), ``audioldm`` (``AudioLDMPipeline``; t2av_cogvideox_audioldm: 5.0625 s at 16 kHz),
``audioldm2`` (``AudioLDM2Pipeline``; t2av_animatediff_audioldm2: 2 s) and ``ltx2`` (``LTX2Pipeline``,
the joint generator, which sava calls as it is; t2av_ltx2_joint: 121 frames of 512 x 768).

``--preset released`` builds every module from the config files the plug-ins ship
(``plugins/*/configs``, through :func:`sava_core.build_check.released_sizes`) directly on the GPU, with
its class's own random initialisation, in the recipe's dtype; nothing is downloaded, and a family
whose configs are not shipped (or whose build stops on a setting) is recorded as skipped. It runs
only where CUDA is available; elsewhere the JSON says why it did not run. ``--preset tiny`` builds
the tiny presets the tests use (any device).

What is measured, per family, after one warm-up call of each side with one step:

- **sampling**: sava's T2V / T2A path (``DiffusersSampler.sample``, then the VAE's ``decode_grid``, as
  the two-stream mode runs it) and the diffusers pipeline holding the same modules, both on the same
  text tokens (random tensors of the text encoder's length and width: the cost does not depend on
  their values, and released sizes ship no tokenizer files; the text encoders are not run), at the
  recipe's guidance scale and batch size (``generate.batch_size``), for ``--steps`` steps (the cost
  per step is what matters; a recipe's 50 steps cost 50 x ``seconds_per_step`` + the decode). The
  VAE, and the text modules a pipeline reads the dtype of (AudioLDM's, AudioLDM2's), are built in the
  backbone's dtype where the recipe differs: the pipelines hold one dtype.
  Also the FLOP/s sava's denoising achieves, from the FLOPs of one backbone forward counted on the
  meta device at the same shapes. LTX-2: sava's ``generate`` against the pipeline's call on the same
  prompts; at released size, whose configs ship no tokenizer, the pipeline alone on zero text
  embeddings (its Stage II does not apply).
- **stage2_step**: the VAE encoding the step's clips (random media of the recipe's shape) and one
  ``Trainer.train_step`` of Eq. 8 (LoRA at the recipe's rank on ``lora_targets``, phi, AdamW) for the
  direction that adapts this backbone (TA2V for video, TV2A for audio) at ``--stage2-batch`` clips,
  with the memory options (gradient checkpointing, VAE slicing and tiling, bfloat16 weights and
  bf16 mixed precision) and without them (float32, no mixed precision); an out-of-memory error is a
  result.

Peak memory is ``torch.cuda.max_memory_allocated`` (MiB) of each measured call, weights included
(``resident_mib``: what the weights hold before the sampling calls); None on a CPU. ``--flops``
counts FLOPs instead (``torch.utils.flop_counter.FlopCounterMode`` on the meta device; see
:func:`table1_flops`) for the GPU-hours model of docs/scaling.md.

    python benchmarks/bench_real_size.py                        # released on a GPU, else tiny -> real_size.json
    python benchmarks/bench_real_size.py --preset tiny --families cogvideox audioldm --steps 2
    python benchmarks/bench_real_size.py --flops [--measured benchmarks/results/real_size_h200.json]
                                                                # -> benchmarks/results/real_size_flops.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from sava_core.io import atomic_write_json  # noqa: E402

REPO = Path(__file__).parent.parent
STEPS = 2
#: Unmasked tokens of each random prompt, an assumed caption length (only CLAP's text encoder, which pads to
#: the batch's longest prompt, costs more for a longer one; the others pad to a fixed length).
PROMPT_TOKENS = 24
MIB = 2**20
#: NVIDIA H200 SXM dense bfloat16 tensor-core peak, FLOP/s (NVIDIA's data sheet: 989 TFLOPS without sparsity).
H200_BF16_PEAK = 989e12
ASSUMED_MFU = (0.3, 0.5)


@dataclass(frozen=True)
class Family:
    """A backbone family: its paper recipe and the stream it generates (``joint``: a joint generator)."""

    recipe: str
    modality: str  # "video" | "audio" | "joint"
    pipeline: Callable[..., Tensor] | None  # (setup, prompts, steps, guidance, on_step) -> decoded media
    pipeline_reads_text_encoder: bool = False  # the pipeline casts given embeddings to its text modules' dtype


# ----------------------------------------------------------------------------------- building


@contextlib.contextmanager
def building(preset: str, registries: Any, device: torch.device) -> Iterator[None]:
    """Components built inside come from their tiny presets, or (``released``) from the configs the
    plug-ins ship, built directly on ``device`` with random weights: :func:`released_sizes` builds on
    ``build_check.META``, which is pointed at ``device`` here (the meta device itself for shapes and
    FLOP counts), so the modules get their classes' own initialisation and the buffers their
    constructors compute."""
    if preset == "tiny":
        yield
        return
    import sava_core.build_check as build_check

    with build_check.released_sizes(registries), mock.patch.object(build_check, "META", device):
        yield


def build(ref: Any, kind: str, preset: str, registries: Any, device: torch.device,
          options: dict[str, Any] | None = None, **runtime: Any) -> Any:
    """The component ``ref`` (a recipe's ComponentRef) with ``options`` over its params, on ``device``
    (random weights drawn after ``torch.manual_seed(0)``)."""
    torch.manual_seed(0)
    with building(preset, registries, device):
        module = registries[kind].build(ref.name, {**ref.params, **(options or {})}, **runtime)
    return module.to(device)


def hub_ids(ref: Any) -> list[str]:
    """The hub ids a component's params name (``pretrained``, AnimateDiff's ``motion_adapter``)."""
    from sava_core.pretrained import looks_like_path

    values = [ref.params.get(key) for key in ("pretrained", "motion_adapter")]
    return [v for v in values if isinstance(v, str) and not looks_like_path(v)]


def missing_configs(refs: list[Any], registries: Any) -> str | None:
    """Why a released-size build cannot run (a hub id without shipped configs), or None."""
    from sava_core.build_check import _config_roots, shipped_config
    from sava_core.errors import SavaError

    roots = _config_roots(registries)
    for ref in refs:
        for hub_id in hub_ids(ref):
            try:
                shipped_config(hub_id, ref.name, roots)
            except SavaError as err:
                return f"skipped: no shipped config ({err})"
    return None


def load_recipe(name: str, preset: str) -> Any:
    from sava_core.recipe import plan

    overrides = ["preset=tiny"] if preset == "tiny" else []
    return plan(REPO / "recipes" / "paper" / f"{name}.yaml", overrides).cells[0].recipe


def slots(recipe: Any, modality: str) -> dict[str, tuple[Any, str]]:
    """(ComponentRef, kind) of the VAE, text encoder and backbone of ``modality``'s stream."""
    from sava_core.generators import text_encoder_ref

    m = recipe.model
    vae = getattr(m, f"{modality}_vae") or getattr(m, f"{modality}_encoder")
    return {"vae": (vae, f"{modality}_encoder"), "text": (text_encoder_ref(recipe, modality), "text_encoder"),
            "backbone": (getattr(m, f"{modality}_backbone"), "backbone")}


@torch.no_grad()
def grid_shape(recipe: Any, registries: Any, preset: str, modality: str) -> tuple[int, ...]:
    """The latent grid of one clip of the recipe's shape under ``modality``'s VAE, built on the meta device."""
    from sava_core.build_check import _media_shapes

    ref, kind = slots(recipe, modality)["vae"]
    vae = build(ref, kind, preset, registries, torch.device("meta"))
    media = _media_shapes(recipe)[0 if modality == "video" else 1]
    return tuple(vae.encode_grid(torch.zeros(media, device="meta")).shape[1:])


# ----------------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, call: Callable[[], Any]) -> dict[str, Any]:
    """Seconds and peak memory (MiB, CUDA; None elsewhere) of ``call()``; an out-of-memory error is a result."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    error = None
    try:
        call()
    except torch.OutOfMemoryError as err:
        error = str(err).split("\n")[0]
    if error is not None:  # out of the except block: the traceback no longer holds the call's tensors
        free(device)
        return {"out_of_memory": error, "seconds": None, "peak_mib": None}
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None
    return {"seconds": seconds, "peak_mib": peak}


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def resident_mib(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / MIB if device.type == "cuda" else None


def count_flops(call: Callable[[], Any]) -> int:
    """FLOPs of ``call()`` as ``FlopCounterMode`` counts them (matrix products, convolutions and
    attention; normalisations and elementwise operations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


@dataclass
class Prompts:
    """Random text conditioning on the device: tokens (B, L, D), mask (B, L) (the first
    ``PROMPT_TOKENS`` real), and the unconditional tokens (1, L, D) with their mask (1, L)."""

    tokens: Tensor
    mask: Tensor
    null: Tensor
    null_mask: Tensor

    @classmethod
    def random(cls, batch: int, length: int, dim: int, device: torch.device) -> Prompts:
        g = torch.Generator().manual_seed(0)
        mask = torch.arange(length) < min(PROMPT_TOKENS, length)
        return cls(torch.randn(batch, length, dim, generator=g).to(device), mask.expand(batch, -1).to(device),
                   torch.randn(1, length, dim, generator=g).to(device), (torch.arange(length) < 1)[None].to(device))

    def conditions(self) -> tuple[Any, Any]:
        from sava_core.contracts import Condition

        n = self.tokens.shape[0]
        return Condition(self.tokens, self.mask), Condition(self.null.expand(n, -1, -1), self.null_mask.expand(n, -1))


@dataclass
class Setup:
    """One family's modules on the device, and its shapes."""

    recipe: Any
    modality: str
    vae: Any
    text: Any  # the text encoder on the device (pipelines that read it) or on the meta device (shapes only)
    backbone: Any
    sampler: Any
    media: tuple[int, ...]  # one clip: (1, F, 3, H, W) or (1, 1, S)
    grid: tuple[int, ...]  # one clip's latent grid, without the batch


def setup(recipe: Any, registries: Any, family: Family, preset: str, device: torch.device, steps: int,
          grid: tuple[int, ...]) -> Setup:
    from sava_core.build_check import _media_shapes

    parts = slots(recipe, family.modality)
    backbone_dtype = parts["backbone"][0].params.get("dtype", "float32")
    vae = build(*parts["vae"], preset, registries, device, {"dtype": backbone_dtype})
    if family.pipeline_reads_text_encoder:
        text = build(*parts["text"], preset, registries, device, {"dtype": backbone_dtype})
    else:
        text = build(*parts["text"], preset, registries, torch.device("meta"))
    backbone = build(*parts["backbone"], preset, registries, device, latent_shape=grid,
                     condition_dim=int(text.dim)).eval()
    m = recipe.model.sampler
    sampler = registries["sampler"].build(m.name, {**m.params, "steps": steps})
    media = _media_shapes(recipe)[0 if family.modality == "video" else 1]
    return Setup(recipe, family.modality, vae, text, backbone, sampler, media, grid)


def text_shape(s: Setup) -> tuple[int, int]:
    """(tokens per prompt, width) the backbone gets from its text encoder."""
    from sava_core.build_check import _text_length

    return _text_length(s.backbone, s.text), int(s.text.dim)


def sava_sampling(s: Setup, sampler: Any, prompts: Prompts, device: torch.device) -> dict[str, Any]:
    """sava's path: ``sampler.sample`` (a ``DiffusersSampler``) from the text, then the VAE's ``decode_grid``."""
    out: dict[str, Any] = {}
    grid: list[Tensor] = []
    n = prompts.tokens.shape[0]
    with torch.no_grad():
        out["denoise"] = measure(device, lambda: grid.append(
            sampler.sample(s.backbone, *prompts.conditions(), n, torch.Generator().manual_seed(0))))
        if grid:
            out["decode"] = measure(device, lambda: s.vae.decode_grid(grid[0]))
    return out


def pipeline_sampling(s: Setup, family: Family, prompts: Prompts, steps: int, device: torch.device) -> dict[str, Any]:
    """The diffusers pipeline on the same modules; the denoising ends at its last step callback."""
    assert family.pipeline is not None
    times: list[float] = []  # the call's start, then the end of each step

    def on_step() -> None:
        synchronize(device)
        times.append(time.perf_counter())

    def call() -> None:
        times.append(time.perf_counter())
        family.pipeline(s, prompts, steps, float(s.sampler.params.guidance_scale), on_step)  # type: ignore[misc]

    with torch.no_grad():
        whole = measure(device, call)
    if whole["seconds"] is None:
        return {"whole": whole}
    denoise = times[-1] - times[0]
    return {"whole": whole, "denoise_seconds": denoise, "decode_seconds": whole["seconds"] - denoise}


def compare_sampling(s: Setup, family: Family, registries: Any, preset: str, device: torch.device,
                     steps: int) -> dict[str, Any]:
    """Seconds per clip (whole call / batch), per step, decode, and peak memory: sava against the pipeline."""
    batch = s.recipe.generate.batch_size
    length, dim = text_shape(s)
    prompts = Prompts.random(batch, length, dim, device)
    one_step = type(s.sampler)(s.sampler.params.model_copy(update={"steps": 1}))
    sava_sampling(s, one_step, prompts, device)  # warm-up: one step and the decode, each side
    pipeline_sampling(s, family, prompts, 1, device)
    resident = resident_mib(device)
    ours = sava_sampling(s, s.sampler, prompts, device)
    theirs = pipeline_sampling(s, family, prompts, steps, device)
    passes = 1 if s.sampler.params.guidance_scale == 1.0 else 2
    result: dict[str, Any] = {"batch": batch, "steps": steps, "guidance_passes": passes, "resident_mib": resident}
    if "decode" in ours and ours["decode"]["seconds"] is not None:
        total = ours["denoise"]["seconds"] + ours["decode"]["seconds"]
        result["sava"] = {"seconds_per_clip": total / batch, "seconds_per_step": ours["denoise"]["seconds"] / steps,
                          "decode_seconds": ours["decode"]["seconds"],
                          "peak_mib": _max(ours["denoise"]["peak_mib"], ours["decode"]["peak_mib"])}
    else:
        result["sava"] = {"out_of_memory": (ours.get("decode") or ours["denoise"]).get("out_of_memory")}
    if theirs["whole"]["seconds"] is not None:
        result["pipeline"] = {"seconds_per_clip": theirs["whole"]["seconds"] / batch,
                              "seconds_per_step": theirs["denoise_seconds"] / steps,
                              "decode_seconds": theirs["decode_seconds"], "peak_mib": theirs["whole"]["peak_mib"]}
    else:
        result["pipeline"] = {"out_of_memory": theirs["whole"]["out_of_memory"]}
    if "seconds_per_clip" in result["sava"] and "seconds_per_clip" in result["pipeline"]:
        result["ratio_sava_over_pipeline"] = result["sava"]["seconds_per_clip"] / result["pipeline"]["seconds_per_clip"]
        forward = forward_flops(s, registries, preset, length, dim)
        achieved = forward * batch * passes * steps / ours["denoise"]["seconds"]
        result["sava"].update({"flops_per_forward": forward, "achieved_flops_per_second": achieved})
    return result


def _max(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def forward_flops(s: Setup, registries: Any, preset: str, length: int, dim: int) -> int:
    """FLOPs of one conditional forward of a clip through the backbone, counted on the meta device."""
    from sava_core.contracts import Condition

    ref, kind = slots(s.recipe, s.modality)["backbone"]
    meta = torch.device("meta")
    backbone = build(ref, kind, preset, registries, meta, latent_shape=s.grid, condition_dim=dim)
    mask = torch.arange(length, device=meta) < min(PROMPT_TOKENS, length)
    cond = Condition(torch.zeros((1, length, dim), device=meta), mask[None])
    x = torch.zeros((1, *s.grid), device=meta)
    with torch.no_grad():
        return count_flops(lambda: backbone(x, torch.full((1,), 999, device=meta), cond))


# ----------------------------------------------------------------------------------- the pipelines


def _step_end(on_step: Callable[[], None]) -> Callable[..., dict[str, Any]]:
    def callback(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        on_step()
        return kwargs

    return callback


def cogvideox_pipeline(s: Setup, prompts: Prompts, steps: int, guidance: float, on_step: Callable[[], None]) -> Tensor:
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline

    transformer = s.backbone.transformer
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=s.vae.vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler.from_config(s.backbone.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    _, frames, _, height, width = s.media
    tokens = prompts.tokens.to(transformer.dtype)
    return pipe(prompt_embeds=tokens, negative_prompt_embeds=prompts.null.expand_as(tokens).to(transformer.dtype),
                height=height, width=width, num_frames=frames, num_inference_steps=steps, guidance_scale=guidance,
                max_sequence_length=tokens.shape[1], output_type="pt", callback_on_step_end=_step_end(on_step)).frames


def animatediff_pipeline(s: Setup, prompts: Prompts, steps: int, guidance: float,
                         on_step: Callable[[], None]) -> Tensor:
    from diffusers import AnimateDiffPipeline, DDIMScheduler

    unet = s.backbone.unet
    pipe = AnimateDiffPipeline(vae=s.vae.vae, text_encoder=None, tokenizer=None, unet=unet, motion_adapter=None,
                               scheduler=DDIMScheduler.from_config(s.backbone.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    _, frames, _, height, width = s.media
    tokens = prompts.tokens.to(unet.dtype)
    return pipe(prompt_embeds=tokens, negative_prompt_embeds=prompts.null.expand_as(tokens).to(unet.dtype),
                height=height, width=width, num_frames=frames, num_inference_steps=steps, guidance_scale=guidance,
                output_type="pt", callback_on_step_end=_step_end(on_step)).frames


@contextlib.contextmanager
def narrow_class_embedding(backbone: Any) -> Iterator[Any]:
    """AudioLDM's UNet as its pipeline feeds it (the CLAP vector alone): the class-embedding projection
    without the zero columns sava adds for Stage II's extra condition (a view of the same weights)."""
    unet, wide = backbone.unet, backbone.unet.class_embedding
    narrow = nn.Linear(backbone.condition_dim, wide.out_features, device=wide.weight.device, dtype=wide.weight.dtype)
    narrow.weight, narrow.bias = nn.Parameter(wide.weight[:, : backbone.condition_dim]), wide.bias
    unet.class_embedding = narrow
    try:
        yield unet
    finally:
        unet.class_embedding = wide


def _audio_seconds(s: Setup) -> float:
    """The duration of the grid's mel frames (what the AudioLDM pipelines call ``audio_length_in_s``)."""
    p = s.vae.params
    return s.grid[1] * s.vae.ratio * p.hop / p.sample_rate


def audioldm_pipeline(s: Setup, prompts: Prompts, steps: int, guidance: float, on_step: Callable[[], None]) -> Tensor:
    from diffusers import AudioLDMPipeline, DDIMScheduler

    n = prompts.tokens.shape[0]
    with narrow_class_embedding(s.backbone) as unet:
        pipe = AudioLDMPipeline(vae=s.vae.vae, text_encoder=s.text.model, tokenizer=None, unet=unet,
                                vocoder=s.vae.vocoder, scheduler=DDIMScheduler.from_config(s.backbone.scheduler_config))
        pipe.set_progress_bar_config(disable=True)
        return pipe(prompt_embeds=prompts.tokens[:, 0], negative_prompt_embeds=prompts.null[:, 0].expand(n, -1),
                    audio_length_in_s=_audio_seconds(s), num_inference_steps=steps, guidance_scale=guidance,
                    output_type="pt", callback=lambda *_: on_step(), callback_steps=1).audios


def audioldm2_pipeline(s: Setup, prompts: Prompts, steps: int, guidance: float, on_step: Callable[[], None]) -> Tensor:
    """AudioLDM2Pipeline given sava's packed tokens split as its backbone splits them: the 8 GPT-2
    tokens (``generated_prompt_embeds``) and the T5 tokens with their mask."""
    from diffusers import AudioLDM2Pipeline, DDIMScheduler

    from sava_audioldm.text import GENERATED_TOKENS as N

    text, b = s.text, s.backbone
    pipe = AudioLDM2Pipeline(vae=s.vae.vae, text_encoder=text.clap, text_encoder_2=text.t5,
                             projection_model=text.projection, language_model=text.language_model,
                             tokenizer=None, tokenizer_2=None, feature_extractor=None, unet=b.unet,
                             vocoder=s.vae.vocoder, scheduler=DDIMScheduler.from_config(b.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    n = prompts.tokens.shape[0]
    null, null_mask = prompts.null.expand(n, -1, -1), prompts.null_mask.expand(n, -1)
    return pipe(prompt_embeds=prompts.tokens[:, N:, : b.t5_dim], attention_mask=prompts.mask[:, N:].long(),
                generated_prompt_embeds=prompts.tokens[:, :N, : b.gpt2_dim],
                negative_prompt_embeds=null[:, N:, : b.t5_dim], negative_attention_mask=null_mask[:, N:].long(),
                negative_generated_prompt_embeds=null[:, :N, : b.gpt2_dim], audio_length_in_s=_audio_seconds(s),
                num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                callback=lambda *_: on_step(), callback_steps=1).audios


FAMILIES: dict[str, Family] = {
    "cogvideox": Family("t2av_cogvideox_audioldm", "video", cogvideox_pipeline),
    "animatediff": Family("t2av_animatediff_audioldm2", "video", animatediff_pipeline),
    "audioldm": Family("t2av_cogvideox_audioldm", "audio", audioldm_pipeline, pipeline_reads_text_encoder=True),
    "audioldm2": Family("t2av_animatediff_audioldm2", "audio", audioldm2_pipeline, pipeline_reads_text_encoder=True),
    "ltx2": Family("t2av_ltx2_joint", "joint", None),
}


# ----------------------------------------------------------------------------------- Stage II


@torch.no_grad()
def encode_step(vae: Any, media: Tensor, device: torch.device) -> dict[str, Any]:
    """Seconds and peak memory of ``vae.encode_grid(media)``."""
    return measure(device, lambda: vae.encode_grid(media))


def stage2_step(recipe: Any, registries: Any, family: Family, preset: str, device: torch.device, batch: int,
                on: bool, grid: tuple[int, ...], video_steps: int) -> dict[str, Any]:
    """The VAE encoding ``batch`` clips and one Trainer step of Eq. 8, options on or off (module docstring)."""
    from accelerate.state import AcceleratorState

    from sava_core.build_check import _media_shapes, _text_length
    from sava_core.conditioning import Phi, add_lora
    from sava_core.losses import DiffusionObjective
    from sava_core.training import Trainer

    parts = slots(recipe, family.modality)
    vae_ref, vae_kind = parts["vae"]
    dtype = "bfloat16" if on else "float32"
    vae_fields = registries[vae_kind].get(vae_ref.name).load_params().model_fields
    vae_options = {k: on for k in ("enable_slicing", "enable_tiling", "slicing", "tiling") if k in vae_fields}
    options = {"vae": {**vae_options, "dtype": dtype}, "backbone": {"gradient_checkpointing": on, "dtype": dtype},
               "mixed_precision": "bf16" if on else "no"}
    out: dict[str, Any] = {"options": options, "batch": batch}
    media_shape = _media_shapes(recipe)[0 if family.modality == "video" else 1]
    media = torch.rand((batch, *media_shape[1:]), generator=torch.Generator().manual_seed(0)).to(device)
    if family.modality == "audio":
        media = media * 2 - 1
    out["encode"] = encode_step(build(vae_ref, vae_kind, preset, registries, device, options["vae"]), media, device)
    free(device)
    text_ref, text_kind = parts["text"]
    text = build(text_ref, text_kind, preset, registries, torch.device("meta"))
    backbone_ref, _ = parts["backbone"]
    backbone = build(backbone_ref, "backbone", preset, registries, device, options["backbone"], latent_shape=grid,
                     condition_dim=int(text.dim))
    length = _text_length(backbone, text)
    f = recipe.finetune
    add_lora(backbone, f.lora_rank, f.lora_alpha)
    phi = Phi(recipe.align.width, int(text.dim)).to(device)
    m = recipe.model.sampler
    sampler = registries["sampler"].build(m.name, m.params)
    objective = DiffusionObjective(backbone, sampler, f.text_dropout, phi, f.text_only_dropout, f.text_swap,
                                   f.condition_dropout)
    config = f.train.model_copy(update={"batch_size": batch, "gradient_accumulation_steps": 1,
                                        "mixed_precision": options["mixed_precision"]})
    AcceleratorState._reset_state(reset_partial_state=True)  # each measurement sets its own mixed precision
    try:
        trainer = Trainer(objective, config, seed=0, cpu=device.type == "cpu")
        prompts = Prompts.random(batch, length, int(text.dim), device)
        g = torch.Generator().manual_seed(1)
        x0 = torch.randn((batch, *grid), generator=g).to(device)
        extra = torch.randn((batch, video_steps, recipe.align.width), generator=g).to(device)
        step = lambda idx: (x0[idx], prompts.tokens[idx], prompts.mask[idx], prompts.null,  # noqa: E731
                            prompts.null_mask, extra[idx])
        warm = measure(device, lambda: trainer.train_step(step, batch))
        out["train_step"] = warm if warm["seconds"] is None else measure(
            device, lambda: trainer.train_step(step, batch))
        out["trainable_parameters"] = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return out


# ----------------------------------------------------------------------------------- LTX-2 and the families


def joint_sampling(recipe: Any, registries: Any, preset: str, device: torch.device, steps: int) -> dict[str, Any]:
    """sava's joint generator (``LTX2JointGenerator.generate``: the pipeline's own call on the prompts)
    against a fresh ``LTX2Pipeline`` over its modules with the same call, after one warm-up call each.
    At released size, whose configs ship no tokenizer, only the pipeline runs, on zero text embeddings
    of the text encoder's stacked hidden states (as ``check_step`` builds them)."""
    from diffusers import LTX2Pipeline

    from sava_ltx2.generator import GUIDANCE

    gen = build(recipe.model.joint_generator, "joint_generator", preset, registries, device,
                {"num_inference_steps": steps})
    batch = recipe.generate.batch_size
    pipe = LTX2Pipeline(**gen.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    guidance = {k: getattr(gen.params, k) for k in GUIDANCE if getattr(gen.params, k) is not None}
    call = {"frame_rate": gen.fps, "output_type": "pt", **gen.call_sizes}
    result: dict[str, Any] = {"batch": batch, "steps": steps, "resident_mib": resident_mib(device)}
    sides: dict[str, Callable[[], Any]] = {}
    if preset == "tiny":
        prompts = [f"a dog barks in a park, take {i}" for i in range(batch)]
        sides["sava"] = lambda: gen.generate(prompts, torch.Generator().manual_seed(0))
        sides["pipeline"] = lambda: pipe(prompt=prompts, generator=torch.Generator().manual_seed(0), **call, **guidance)
    else:
        text = gen.pipe.text_encoder.config.get_text_config()
        weight = next(gen.pipe.transformer.parameters())
        length = gen.call_sizes["max_sequence_length"]
        embeds = torch.zeros(batch, length, text.hidden_size * (text.num_hidden_layers + 1), device=device,
                             dtype=weight.dtype)
        mask = torch.ones(batch, length, dtype=torch.long, device=device)
        guidance.pop("negative_prompt", None)
        result["sava"] = {"not_run": "sava's joint generator is this pipeline call on tokenized prompts (the same "
                                     "clip bit for bit: tests/test_parity.py); the released configs ship no tokenizer"}
        text_inputs = {"prompt_embeds": embeds, "prompt_attention_mask": mask, "negative_prompt_embeds": embeds,
                       "negative_prompt_attention_mask": mask}
        sides["pipeline"] = lambda: pipe(**text_inputs, generator=torch.Generator().manual_seed(0), **call, **guidance)
    with torch.no_grad():
        for side, run in sides.items():
            warm = measure(device, run)
            m = warm if warm["seconds"] is None else measure(device, run)
            result[side] = ({"seconds_per_clip": m["seconds"] / batch, "peak_mib": m["peak_mib"]}
                            if m["seconds"] is not None else {"out_of_memory": m["out_of_memory"]})
    if "seconds_per_clip" in result.get("sava", {}) and "seconds_per_clip" in result["pipeline"]:
        result["ratio_sava_over_pipeline"] = result["sava"]["seconds_per_clip"] / result["pipeline"]["seconds_per_clip"]
    return result


def bench_family(name: str, registries: Any, preset: str, device: torch.device, steps: int,
                 stage2_batch: int) -> dict[str, Any]:
    """Sampling and the Stage II step of one family (module docstring); at released size a family whose
    configs are not shipped, or whose build stops on a setting (a SavaError), is recorded as skipped."""
    from sava_core.errors import SavaError

    family = FAMILIES[name]
    recipe = load_recipe(family.recipe, preset)
    result: dict[str, Any] = {"recipe": family.recipe}
    if family.modality == "joint":
        refs = [recipe.model.joint_generator]
    else:
        refs = [ref for ref, _ in slots(recipe, family.modality).values()] + [slots(recipe, "video")["vae"][0]]
    if preset == "released":
        reason = missing_configs(refs, registries)
        if reason:
            return {**result, "skipped": reason}
    try:
        if family.modality == "joint":
            p = recipe.model.joint_generator.params
            result["dtype"] = p.get("dtype", "float32")
            result["sampling"] = joint_sampling(recipe, registries, preset, device, steps)
            result["stage2_step"] = "not applicable: a joint generator (Stage II adapts T2V / T2A backbones)"
            return result
        grid = grid_shape(recipe, registries, preset, family.modality)
        video_steps = grid[0] if family.modality == "video" else grid_shape(recipe, registries, preset, "video")[0]
        s = setup(recipe, registries, family, preset, device, steps, grid)
        result["dtype"] = str(next(s.backbone.parameters()).dtype).removeprefix("torch.")
        result["shapes"] = {"media": list(s.media), "grid": list(s.grid), "text": list(text_shape(s))}
        result["sampling"] = compare_sampling(s, family, registries, preset, device, steps)
        del s
        free(device)
        result["stage2_step"] = {
            "direction": "ta2v" if family.modality == "video" else "tv2a",
            "extra_tokens": [video_steps, recipe.align.width],
            **{key: stage2_step(recipe, registries, family, preset, device, stage2_batch, on, grid, video_steps)
               for key, on in (("with_options", True), ("without_options", False))}}
    except SavaError as err:
        if preset == "tiny":
            raise
        result["skipped"] = f"skipped: {err}"
    finally:
        free(device)
    return result


def main(out_dir: Path, preset: str | None = None, families: list[str] | None = None, steps: int = STEPS,
         stage2_batch: int = 1) -> dict[str, Any]:
    """Run the families (default: all) and write ``real_size.json``. ``preset`` None: released where
    CUDA is available, else tiny; released without CUDA writes only why it did not run."""
    from sava_core.registry import get_registries

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1)
    preset = preset or ("released" if cuda else "tiny")
    info = machine()
    result: dict[str, Any] = {
        "preset": preset, "device": device.type, "device_name": info["cuda_device"] or info.get("cpu_model"),
        "steps": steps, "stage2_batch": stage2_batch}
    if not cuda:
        result["released_size"] = ("not run: released sizes run only where CUDA is available and this machine has "
                                   "none; on a GPU: python benchmarks/bench_real_size.py")
    if preset == "tiny" or cuda:
        registries = get_registries()
        result["families"] = {name: bench_family(name, registries, preset, device, steps, stage2_batch)
                              for name in families or list(FAMILIES)}
    result["machine"] = info
    atomic_write_json(out_dir / "real_size.json", result)
    return result


# ----------------------------------------------------------------------------------- FLOPs: the GPU-hours model

TABLE1 = "t2av_cogvideox_audioldm"


def unit_flops(recipe: Any, registries: Any) -> tuple[dict[str, int], dict[str, list[int]]]:
    """FLOPs of each unit of work a clip of ``recipe`` is made of, at its released sizes and one clip
    per call, counted on the meta device (CLAP's text and audio towers, whose forwards read tensor
    values, on the CPU with random weights); and the shapes they were counted at. Units: the text encoders on one
    prompt (T5 at its padded length, CLAP at ``PROMPT_TOKENS``), one forward of T2V, TA2V (+ LoRA and
    the extra tokens), TV2A (+ LoRA and the extra condition), the video VAE's encode and decode, the
    audio VAE's decode (+ vocoder), CLAP audio, Stage I's alignment model, P_theta, phi of each
    direction, and one clip's Stage II step of each direction (forward and backward at the recipe's
    gradient checkpointing)."""
    from sava_core.alignment import AlignModel, build_projector
    from sava_core.build_check import _media_shapes, _text_length
    from sava_core.conditioning import Phi, add_lora
    from sava_core.contracts import Condition
    from sava_core.losses import DiffusionObjective

    meta = torch.device("meta")
    zeros = lambda *shape, dtype=torch.float32: torch.zeros(shape, device=meta, dtype=dtype)  # noqa: E731
    video, audio = (list(s) for s in _media_shapes(recipe))
    v, a = slots(recipe, "video"), slots(recipe, "audio")
    flops: dict[str, int] = {}
    with torch.no_grad():
        vvae, avae = (build(*x["vae"], "released", registries, meta) for x in (v, a))
        vgrid = list(vvae.encode_grid(zeros(*video)).shape[1:])
        agrid = list(avae.encode_grid(zeros(*audio)).shape[1:])
        flops["video_vae_encode"] = count_flops(lambda: vvae.encode_grid(zeros(*video)))
        flops["video_vae_decode"] = count_flops(lambda: vvae.decode_grid(zeros(1, *vgrid)))
        flops["audio_vae_decode"] = count_flops(lambda: avae.decode_grid(zeros(1, *agrid)))
        t5, clap_text = (build(*x["text"], "released", registries, meta) for x in (v, a))
    m = recipe.model
    steps, width, f = vgrid[0], recipe.align.width, recipe.finetune
    sampler = registries["sampler"].build(m.sampler.name, m.sampler.params)
    shapes = {"video": video, "audio": audio, "video_grid": vgrid, "audio_grid": agrid, "extra": [1, steps, width],
              "clap_text": [1, PROMPT_TOKENS]}
    for modality, text, grid, plain, conditioned, direction in (
            ("video", t5, vgrid, "t2v_forward", "ta2v_forward", "ta2v"),
            ("audio", clap_text, agrid, None, "tv2a_forward", "tv2a")):
        backbone = build(*slots(recipe, modality)["backbone"], "released", registries, meta, latent_shape=tuple(grid),
                         condition_dim=int(text.dim)).eval()
        length = _text_length(backbone, text)
        shapes[f"{modality}_text"] = [1, length, int(text.dim)]
        tokens, mask = zeros(1, length, int(text.dim)), torch.arange(length, device=meta) < min(PROMPT_TOKENS, length)
        x, t = zeros(1, *grid), torch.full((1,), 999, device=meta)
        phi = Phi(width, int(text.dim)).to(meta)
        extra = zeros(1, steps, width)
        with torch.no_grad():
            if plain:
                flops[plain] = count_flops(lambda: backbone(x, t, Condition(tokens, mask[None])))
            flops[f"phi_{modality}"] = count_flops(lambda: phi(extra))
            add_lora(backbone, f.lora_rank, f.lora_alpha)
            cond = Condition(tokens, mask[None], phi(extra), torch.ones((1, steps), dtype=torch.bool, device=meta))
            flops[conditioned] = count_flops(lambda: backbone(x, t, cond))
        objective = DiffusionObjective(backbone.train(), sampler, f.text_dropout, phi, f.text_only_dropout,
                                       f.text_swap, f.condition_dropout)
        flops[f"{direction}_train_clip"] = count_flops(
            lambda: objective(x, tokens, mask[None], tokens, mask[None], extra)["loss"].backward())
    # as the encoders call their models: T5 without a padding mask (on meta), CLAP text with one (its
    # padding check reads the ids: on the CPU)
    with torch.no_grad():
        flops["t5"] = count_flops(lambda: t5.model(input_ids=zeros(*shapes["video_text"][:2], dtype=torch.long)))
    ids = torch.zeros((1, PROMPT_TOKENS), dtype=torch.long)
    flops["clap_text"] = cpu_flops(a["text"], registries,
                                   lambda c: c.model(input_ids=ids, attention_mask=torch.ones_like(ids)))
    seconds = audio[-1] / avae.sample_rate
    flops["clap_audio"] = cpu_flops((m.audio_encoder, "audio_encoder"), registries,
                                    lambda c: c.encode(torch.zeros(1, 1, round(seconds * c.sample_rate))))
    dv, da = int(vvae.latent_dim), int(build(m.audio_encoder, "audio_encoder", "released", registries, meta).latent_dim)
    xv, xa = zeros(1, steps, dv), zeros(1, steps, da)
    with torch.no_grad():
        align = AlignModel(recipe, registries, dv, da).to(meta)
        flops["stage1"] = count_flops(lambda: align(xv, xa))
        projector = build_projector(recipe, registries, dv).to(meta)
        flops["projector"] = count_flops(lambda: projector(xv))
    return flops, shapes


@torch.no_grad()
def cpu_flops(slot: tuple[Any, str], registries: Any, call: Callable[[Any], Any]) -> int:
    """FLOPs of ``call(component)``, the component (ComponentRef, kind) built at released size on the
    CPU with random weights: for forwards that read tensor values, which the meta device cannot run."""
    component = build(*slot, "released", registries, torch.device("cpu"))
    return count_flops(lambda: call(component))


def clip_units(recipe: Any, registries: Any) -> dict[str, float]:
    """How many of each unit one clip of ``recipe``'s generate mode runs (sava_core/modes.py,
    ``CascadeSampling``): each text encoder encodes the prompts and the empty prompt once per batch of
    ``generate.batch_size``; a stream is ``steps`` x guidance passes backbone forwards (3 passes with
    ``condition_guidance_scale``); a generated stream is decoded, and a generated video encoded again
    from its frames, before P_theta (``cascade``) or Stage I (``cascade_bidirectional``) reads it."""
    from sava_core.errors import SavaError

    m = recipe.model.sampler
    s = registries["sampler"].build(m.name, m.params).params
    guided = 1 if s.guidance_scale == 1 else 2
    plain, conditioned = s.steps * guided, s.steps * (3 if s.condition_guidance_scale is not None else guided)
    text = 1 + 1 / recipe.generate.batch_size
    units = {"t5": text, "clap_text": text, "t2v_forward": plain, "video_vae_decode": 1, "video_vae_encode": 1,
             "projector": 1, "phi_audio": 1, "tv2a_forward": conditioned, "audio_vae_decode": 1}
    if recipe.generate.mode == "cascade_bidirectional":
        units |= {"ta2v_forward": conditioned, "clap_audio": 1, "stage1": 1, "phi_video": 1,
                  "video_vae_decode": 2, "video_vae_encode": 2}
    elif recipe.generate.mode != "cascade":
        raise SavaError(f"generate.mode {recipe.generate.mode}: the GPU-hours model covers cascade and "
                        "cascade_bidirectional")
    return units


def measured_seconds(flops: dict[str, int], measured: dict[str, Any]) -> dict[str, float]:
    """Seconds per unit from a released-size GPU run of this benchmark: the backbone forwards at the
    achieved FLOP/s of sava's denoising (CogVideoX's for T2V / TA2V, AudioLDM's for TV2A), the video
    decode and encode and the audio decode as timed, a CogVideoX Stage II step as timed with the memory
    options (the recipe's settings); every other unit at CogVideoX's achieved FLOP/s."""
    from sava_core.errors import SavaError

    families = measured.get("families", {})
    video, audio = (families.get(name, {}).get("sampling", {}) for name in ("cogvideox", "audioldm"))
    if measured.get("preset") != "released" or any("decode_seconds" not in x.get("sava", {}) for x in (video, audio)):
        raise SavaError("--measured: give a real_size JSON written at --preset released on a GPU, with the cogvideox "
                        "and audioldm sampling measured")
    cog = families["cogvideox"]
    rate = video["sava"]["achieved_flops_per_second"]
    seconds = {unit: n / rate for unit, n in flops.items()}
    seconds["tv2a_forward"] = flops["tv2a_forward"] / audio["sava"]["achieved_flops_per_second"]
    seconds["video_vae_decode"] = video["sava"]["decode_seconds"] / video["batch"]
    seconds["audio_vae_decode"] = audio["sava"]["decode_seconds"] / audio["batch"]
    step = cog["stage2_step"]["with_options"]
    if step["encode"]["seconds"] is not None:
        seconds["video_vae_encode"] = step["encode"]["seconds"] / step["batch"]
    if step["train_step"]["seconds"] is not None:
        seconds["ta2v_train_clip"] = step["train_step"]["seconds"] / step["batch"]
    return seconds


def gpu_hours(total_flops: float, units: dict[str, float], seconds: dict[str, float] | None) -> dict[str, Any]:
    """Hours at the assumed MFU band of the H200's bfloat16 peak, and (given measured seconds per unit)
    as measured."""
    hours: dict[str, Any] = {"assumed": {
        "peak_flops_per_second": H200_BF16_PEAK, "mfu": list(ASSUMED_MFU),
        "hours": [total_flops / (mfu * H200_BF16_PEAK) / 3600 for mfu in ASSUMED_MFU]}}
    if seconds is not None:
        hours["measured"] = sum(n * seconds[unit] for unit, n in units.items()) / 3600
    return hours


def table1_flops(out_dir: Path, measured: Path | None = None) -> dict[str, Any]:
    """The GPU-hours of Table 1's generation (``generate.prompts`` clips per variant of ``TABLE1``) and
    of its Stage II fine-tuning, from the unit FLOPs; writes ``real_size_flops.json``."""
    from sava_core.recipe import plan
    from sava_core.registry import get_registries

    registries = get_registries()
    cells = plan(REPO / "recipes" / "paper" / f"{TABLE1}.yaml").cells
    recipe = cells[0].recipe
    flops, shapes = unit_flops(recipe, registries)
    seconds = measured_seconds(flops, json.loads(measured.read_text())) if measured else None
    clips = recipe.generate.prompts
    per_clip = {c.variant: clip_units(c.recipe, registries) for c in cells}
    generation_units = {u: clips * sum(units.get(u, 0) for units in per_clip.values()) for u in flops}
    generation = sum(n * flops[u] for u, n in generation_units.items())
    training_units: dict[str, float] = {}
    for c in cells:
        t = c.recipe.finetune.train
        for direction in c.recipe.finetune.directions:
            key = f"{direction}_train_clip"
            training_units[key] = training_units.get(key, 0) + t.steps * t.batch_size * t.gradient_accumulation_steps
    training = sum(n * flops[u] for u, n in training_units.items())
    result = {
        "recipe": TABLE1, "counted_with": f"torch.utils.flop_counter.FlopCounterMode (torch {torch.__version__}) on "
        "the meta device (CLAP's text and audio towers on the CPU): matrix products, convolutions and attention",
        "shapes": shapes, "flops": flops,
        "generation": {"clips_per_variant": clips, "units_per_clip": per_clip,
                       "flops_per_clip": {v: sum(n * flops[u] for u, n in units.items())
                                          for v, units in per_clip.items()},
                       "flops": generation, "gpu_hours": gpu_hours(generation, generation_units, seconds)},
        "stage2_training": {"clip_steps": training_units, "flops": training,
                            "gpu_hours": gpu_hours(training, training_units, seconds)},
        "measured_from": str(measured) if measured else None, "machine": machine()}
    atomic_write_json(out_dir / "real_size_flops.json", result)
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", choices=list(FAMILIES), help="default: all")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"sampling steps per measured call (default {STEPS})")
    parser.add_argument("--preset", choices=["tiny", "released"], help="default: released with CUDA, else tiny")
    parser.add_argument("--stage2-batch", type=int, default=1, help="clips per Stage II step (default 1)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs for the GPU-hours model instead")
    parser.add_argument("--measured", type=Path, help="with --flops: a real_size JSON from a released-size GPU run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if args.flops:
        result = table1_flops(args.out, args.measured)
    else:
        result = main(args.out, args.preset, args.families, args.steps, args.stage2_batch)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    cli()
