"""What the generation stages share: building the recipe's generative components, rendering and
encoding media splits, the conditional diffusion objective and Stage II's condition projection phi.

Latent layouts follow the encoders: a *grid* is what a backbone denoises, a *sequence* (B, T, D) is
what Stage I aligns; encoders used here provide ``encode_grid``, ``decode_grid`` and
``grid_to_sequence`` (see the contracts). When the audio sequence has another number of time steps
than the video's, Stage I sees it linearly interpolated to the video's (:func:`sava_core.cache.align_time`).

Encoders: ``model.video_encoder`` / ``model.audio_encoder`` are f_v / f_a, whose latents Stage I
aligns; ``model.video_vae`` / ``model.audio_vae`` are the latent spaces the backbones denoise
(default: the same components). The paper pairs them like this for audio: f_a is CLAP, the backbone
denoises in AudioLDM's mel VAE. When f is not the VAE, its latents of generated media are computed
from the decoded media.

Each backbone is conditioned by its own text encoder (``model.video_text_encoder`` /
``model.audio_text_encoder``, e.g. CogVideoX's T5 and AudioLDM's CLAP) or by the shared
``model.text_encoder``.

Weights: components of a synthetic world (``pretrain_stage = True`` on their class) are trained by
the ``pretrain`` stage and get their weights from it; real components load their own
(``pretrained:`` or ``preset:``).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sava_core.components.embeddings import sinusoids
from sava_core.config import ComponentRef, Recipe
from sava_core.contracts import Condition, TextEncoder
from sava_core.errors import SavaError
from sava_core.io import canonical_hash
from sava_core.registry import Registries

WEIGHT_FILES = {"video_encoder": "video_encoder.safetensors", "audio_encoder": "audio_encoder.safetensors",
                "video_backbone": "t2v.safetensors", "audio_backbone": "t2a.safetensors"}


def _require(recipe: Recipe, *names: str) -> None:
    missing = [n for n in names if getattr(recipe.model, n) is None]
    if missing:
        raise SavaError(f"model: the stages {recipe.stages} need {', '.join('model.' + m for m in missing)}; "
                        "see recipes/quickstart.yaml for a complete example")


def _slot_kinds() -> dict[str, str]:
    """``model.<slot>`` -> its component kind, as the recipe schema declares it."""
    from sava_core.config import ModelSection
    from sava_core.recipe import component_paths

    return dict(component_paths(ModelSection))


def pretrain_key(recipe: Recipe) -> str:
    """Hash of everything pretrained weights depend on: the world, the components and the pretrain
    section. Left out: the components' ``pretrained`` paths and the params their params model lists in
    ``after_pretraining`` (settings that only matter once the weights exist, e.g. how Stage II's
    condition tokens are attended), so changing those does not train the world's generators again."""
    from sava_core.registry import get_registries

    m = recipe.model
    registries, kinds = get_registries(), _slot_kinds()
    # settings at their defaults are left out, so that a new training option (defaulting to the old
    # behaviour) keeps every existing key
    parts: dict[str, Any] = {"data": recipe.data.model_dump(),
                             "pretrain": recipe.pretrain.model_dump(exclude={"weights"}, exclude_defaults=True)}
    for name in WEIGHT_FILES | {"text_encoder": None, "sampler": None, "video_text_encoder": None, "audio_text_encoder": None}:
        ref = getattr(m, name)
        if ref is None and name.endswith("_text_encoder"):
            continue  # absent per-backbone text encoders leave the key as it was before they existed
        if ref is None:
            parts[name] = None
            continue
        params_model = getattr(registries[kinds[name]].get(ref.name).load(), "Params", None)
        skip = {"pretrained", *getattr(params_model, "after_pretraining", ())}
        parts[name] = {"name": ref.name, "params": {k: v for k, v in ref.params.items() if k not in skip}}
    return canonical_hash(parts)


def weights_dir(recipe: Recipe) -> Path:
    """Where the pretrained generative weights of this recipe live: ``pretrain.weights`` (a directory,
    or ``shipped`` for the weights shipped with the synthetic world whatever the key), or the user
    cache ``$SAVA_CACHE/pretrained/<key>`` (default ``~/.cache/sava``)."""
    if recipe.pretrain.weights == "shipped":
        import sava_synth

        return Path(sava_synth.__file__).parent / "weights"
    if recipe.pretrain.weights:
        return Path(recipe.pretrain.weights).expanduser()
    root = Path(os.environ.get("SAVA_CACHE", Path.home() / ".cache" / "sava"))
    return root / "pretrained" / pretrain_key(recipe)


def shipped_weights(recipe: Recipe) -> Path | None:
    """Weights shipped with the synthetic world, if they were made by this exact configuration."""
    import sava_synth

    folder = Path(sava_synth.__file__).parent / "weights"
    info = folder / "pretrain.json"
    if info.is_file() and json.loads(info.read_text()).get("key") == pretrain_key(recipe):
        return folder
    return None


def pretrained_dir(recipe: Recipe) -> Path | None:
    """An existing complete weights directory for this recipe (shipped, configured or cached)."""
    for folder in (shipped_weights(recipe), weights_dir(recipe)):
        if folder is not None and (folder / "pretrain.json").is_file():
            return folder
    return None


def pretrain_stage_slots(recipe: Recipe, registries: Registries) -> dict[str, bool]:
    """For each encoder / backbone slot the recipe sets: is its component trained by the ``pretrain``
    stage (a synthetic world's) rather than loading its own weights?"""
    slots = ("video_encoder", "audio_encoder", "video_backbone", "audio_backbone", "video_vae", "audio_vae")
    kinds = _slot_kinds()
    return {slot: bool(getattr(registries[kinds[slot]].get(ref.name).load(), "pretrain_stage", False))
            for slot in slots if (ref := getattr(recipe.model, slot)) is not None}


def uses_pretrain_stage(recipe: Recipe, registries: Registries) -> bool:
    """Whether any of the recipe's encoders or backbones gets its weights from the ``pretrain`` stage."""
    return any(pretrain_stage_slots(recipe, registries).values())


def _build(registries: Registries, kind: str, ref: ComponentRef, weights: Path | None, file: str, **runtime: Any) -> Any:
    params = dict(ref.params)
    trained_here = getattr(registries[kind].get(ref.name).load(), "pretrain_stage", False)
    if trained_here and weights is not None and params.get("pretrained") is None:
        params["pretrained"] = str(weights / file)
    return registries[kind].build(ref.name, params, **runtime)


def text_encoder_ref(recipe: Recipe, modality: str) -> ComponentRef:
    """The text encoder of the ``modality`` backbone: its own, else the shared ``model.text_encoder``."""
    ref = getattr(recipe.model, f"{modality}_text_encoder") or recipe.model.text_encoder
    if ref is None:
        raise SavaError(f"model: the {modality} backbone needs a text encoder; set model.text_encoder (shared by both "
                        f"backbones) or model.{modality}_text_encoder")
    return ref


@dataclass
class Generators:
    """The frozen generative side of a recipe: encoders/decoders, the text encoder of each backbone,
    T2V, T2A and the sampler."""

    video_encoder: Any  # f_v
    audio_encoder: Any  # f_a
    video_vae: Any  # what T2V denoises in (often f_v itself)
    audio_vae: Any  # what T2A denoises in (often f_a itself)
    text_encoders: dict[str, TextEncoder]  # "video" / "audio" -> the encoder conditioning that backbone
    t2v: Any
    t2a: Any
    sampler: Any


def build_encoders(recipe: Recipe, registries: Registries, weights: Path | None) -> tuple[Any, Any, dict[str, TextEncoder]]:
    """The video and audio encoders (with ``weights`` if given) and each backbone's text encoder
    (one instance when both use the same)."""
    _require(recipe, "video_encoder", "audio_encoder")
    m = recipe.model
    venc = _build(registries, "video_encoder", m.video_encoder, weights, WEIGHT_FILES["video_encoder"])
    aenc = _build(registries, "audio_encoder", m.audio_encoder, weights, WEIGHT_FILES["audio_encoder"])
    refs = {modality: text_encoder_ref(recipe, modality) for modality in ("video", "audio")}
    video_text = registries["text_encoder"].build(refs["video"].name, refs["video"].params)
    audio_text = video_text if refs["audio"] == refs["video"] else registries["text_encoder"].build(refs["audio"].name, refs["audio"].params)
    return venc, aenc, {"video": video_text, "audio": audio_text}


def build_backbones(recipe: Recipe, registries: Registries, weights: Path | None,
                    grids: tuple[tuple[int, ...], tuple[int, ...]], text_dims: tuple[int, int]) -> tuple[Any, Any]:
    """T2V and T2A for latent grids of the given shapes, conditioned on tokens of ``text_dims``
    (video's, audio's)."""
    _require(recipe, "video_backbone", "audio_backbone")
    m = recipe.model
    t2v = _build(registries, "backbone", m.video_backbone, weights, WEIGHT_FILES["video_backbone"],
                 latent_shape=grids[0], condition_dim=text_dims[0])
    t2a = _build(registries, "backbone", m.audio_backbone, weights, WEIGHT_FILES["audio_backbone"],
                 latent_shape=grids[1], condition_dim=text_dims[1])
    return t2v, t2a


def generation_device(recipe: Recipe) -> torch.device:
    """Where the generation stages run: this process's accelerator (Accelerate's choice under
    ``accelerate launch``), or the CPU when the recipe says ``device: cpu`` or there is none."""
    from accelerate import PartialState

    from sava_core.stages.align import use_cpu

    return PartialState(cpu=use_cpu(recipe.device)).device


def build_generators(recipe: Recipe, registries: Registries, weights: Path | None) -> Generators:
    """Every generative component, loading ``weights`` (a pretrain directory) if given, frozen, on
    :func:`generation_device`."""
    venc, aenc, texts = build_encoders(recipe, registries, weights)
    m = recipe.model
    vvae = venc if m.video_vae in (None, m.video_encoder) else _build(registries, "video_encoder", m.video_vae, weights, "")
    avae = aenc if m.audio_vae in (None, m.audio_encoder) else _build(registries, "audio_encoder", m.audio_vae, weights, "")
    t2v, t2a = build_backbones(recipe, registries, weights, probe_grids(recipe, registries, (venc, aenc, vvae, avae)),
                               (texts["video"].dim, texts["audio"].dim))
    sampler = registries["sampler"].build(recipe.model.sampler.name, recipe.model.sampler.params)
    device = generation_device(recipe)
    for module in (venc, aenc, vvae, avae, *texts.values(), t2v, t2a):
        module.requires_grad_(False).eval().to(device)
    return Generators(venc, aenc, vvae, avae, texts, t2v, t2a, sampler)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module without tensors)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def probe_grids(recipe: Recipe, registries: Registries, encoders: tuple[Any, Any, Any, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The latent grid shapes of one validation clip under the VAEs, checking the dataset's rates
    against every encoder's. ``encoders``: (f_v, f_a, video VAE, audio VAE)."""
    from sava_core.cache import check_rates

    venc, aenc, vvae, avae = encoders
    items = media_dataset(recipe, registries).media("val")
    if len(items) == 0:
        raise SavaError("data: the 'val' split is empty; the generation stages need train, val and test clips")
    check_rates(items, venc)  # f_a gets audio resampled to its rate; the VAEs' rates are those of the outputs
    check_rates(items, vvae, avae)
    clip = items[0]
    return tuple(encode_grids(vvae, clip.video[None]).shape[1:]), tuple(encode_grids(avae, clip.audio[None]).shape[1:])


def media_dataset(recipe: Recipe, registries: Registries) -> Any:
    data = registries["dataset"].build(recipe.data.name, recipe.data.params)
    if not data.provides_media:
        raise SavaError(f"data: the generation stages need a media dataset; {recipe.data.name!r} provides latents only")
    return data


@dataclass
class MediaSplit:
    """A split rendered into memory: video (N, F, 3, H, W), audio (N, C, S), captions, metadata."""

    video: Tensor
    audio: Tensor
    captions: list[str]
    meta: list[dict[str, Any]]
    fps: float
    sample_rate: int


def load_media(data: Any, split: str, limit: int | None = None) -> MediaSplit:
    items = data.media(split)
    n = len(items) if limit is None else min(limit, len(items))
    if n == 0:
        raise SavaError(f"data: the {split!r} split is empty; the generation stages need train, val and test clips")
    clips = [items[i] for i in range(n)]
    return MediaSplit(torch.stack([c.video for c in clips]), torch.stack([c.audio for c in clips]),
                      [c.caption for c in clips], [c.meta for c in clips], clips[0].fps, clips[0].sample_rate)


@torch.no_grad()
def encode_grids(encoder: Any, media: Tensor, batch_size: int = 64) -> Tensor:
    """Run ``encoder.encode_grid`` over ``media`` in batches on the encoder's device; grids on the CPU."""
    device = module_device(encoder)
    return torch.cat([encoder.encode_grid(media[i : i + batch_size].to(device)).cpu()
                      for i in range(0, len(media), batch_size)])


@dataclass
class TextBatch:
    """Prompts as padded tokens (N, L, D) and mask (N, L), plus the null (empty) prompt (1, L, D)."""

    tokens: Tensor
    mask: Tensor
    null_tokens: Tensor
    null_mask: Tensor


@torch.no_grad()
def encode_text(text: TextEncoder, prompts: list[str]) -> TextBatch:
    emb = text.encode(prompts)
    null = text.encode([""])
    length = max(emb.tokens.shape[1], null.tokens.shape[1])
    pad = lambda x, n: torch.nn.functional.pad(x, (0, 0, 0, n - x.shape[1])) if x.dim() == 3 else torch.nn.functional.pad(x, (0, n - x.shape[1]))  # noqa: E731
    return TextBatch(pad(emb.tokens, length), pad(emb.mask, length), pad(null.tokens, length), pad(null.mask, length))


class Phi(nn.Module):
    """phi: aligned latent (B, T, d) -> condition tokens (B, T, text_dim) (``text_dim`` = the
    backbone's ``condition_dim``), with fixed sinusoidal time embeddings so that cross-attention can
    tell the instants apart."""

    def __init__(self, width: int, text_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(width, text_dim), nn.SiLU(), nn.Linear(text_dim, text_dim))
        self.text_dim = text_dim

    def forward(self, z: Tensor) -> Tensor:
        return self.proj(z) + sinusoids(z.shape[1], self.text_dim).to(z)


class DiffusionObjective(nn.Module):
    """Eq. 8: || target - eps_theta(x_t, t, c) ||^2 with c = [text ; phi(extra)]. Per clip, with
    probability

    - ``dropout``: c dropped (text and extra together), so that classifier-free guidance works;
    - ``text_only_dropout``: the text dropped, the extra condition kept (generate from it alone);
    - ``text_swap``: the text replaced by another clip's of the batch, the clip's own extra condition
      and target kept (follow the extra condition where the two disagree);
    - ``condition_dropout``: the extra condition dropped, the text kept (the text-only prediction that
      the sampler's ``condition_guidance_scale`` guides from).

    The last three apply only with an extra condition. The target follows the backbone's
    ``prediction_type``: the noise (epsilon), the velocity alpha_t * eps - sigma_t * x0
    (v_prediction) or x0 (sample)."""

    def __init__(self, backbone: nn.Module, sampler: Any, dropout: float, phi: nn.Module | None = None,
                 text_only_dropout: float = 0.0, text_swap: float = 0.0, condition_dropout: float = 0.0):
        super().__init__()
        self.backbone, self.phi, self.dropout = backbone, phi, dropout
        self.text_only_dropout, self.text_swap, self.condition_dropout = text_only_dropout, text_swap, condition_dropout
        self.scheduler = sampler.train_scheduler(backbone)
        self.prediction_type = backbone.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise SavaError(f"{type(backbone).__name__}: unknown prediction_type {self.prediction_type!r}")

    def forward(self, x0: Tensor, text: Tensor, mask: Tensor, null_text: Tensor, null_mask: Tensor,
                extra: Tensor | None = None) -> dict[str, Tensor]:
        b = x0.shape[0]
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=x0.device)
        xt = self.scheduler.add_noise(x0, noise, t)
        conditioned = self.phi is not None and extra is not None

        def draw(p: float) -> Tensor:  # (b,) bool, each True with probability p (no draw when p = 0)
            return torch.rand(b, device=x0.device) < p if p > 0 else torch.zeros(b, dtype=torch.bool, device=x0.device)

        drop = torch.rand(b, device=x0.device) < self.dropout
        drop_text = drop | draw(self.text_only_dropout) if conditioned else drop
        if conditioned and self.text_swap > 0 and b > 1:
            swap = draw(self.text_swap)
            text = torch.where(swap[:, None, None], text.roll(1, 0), text)
            mask = torch.where(swap[:, None], mask.roll(1, 0), mask)
        text = torch.where(drop_text[:, None, None], null_text.expand_as(text), text)
        mask = torch.where(drop_text[:, None], null_mask.expand_as(mask), mask)
        cond = Condition(text, mask)
        if conditioned:
            tokens = self.phi(extra)
            keep = ~(drop | draw(self.condition_dropout))
            cond = Condition(text, mask, tokens, keep[:, None].expand(-1, tokens.shape[1]))
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x0, noise, t)
        else:
            target = x0
        return {"loss": (self.backbone(xt, t, cond).float() - target.float()).pow(2).mean()}
