"""The frozen generative side of a recipe, built from its components: f_v and f_a (the encoders
whose latents Stage I aligns), the VAEs the backbones denoise in, each backbone's text encoder, T2V,
T2A and the sampler.

Encoders: ``model.video_encoder`` / ``model.audio_encoder`` are f_v / f_a; ``model.video_vae`` /
``model.audio_vae`` are the latent spaces the backbones denoise (default: the same components). The
paper pairs them like this for audio: f_a is CLAP, the backbone denoises in AudioLDM's mel VAE. When
f is not the VAE, its latents of generated media are computed from the decoded media.

Each backbone is conditioned by its own text encoder (``model.video_text_encoder`` /
``model.audio_text_encoder``, e.g. CogVideoX's T5 and AudioLDM's CLAP) or by the shared
``model.text_encoder``.

Weights: a component with ``pretrained`` set loads its own; otherwise the plug-ins are asked
(``sava_component_weights``): a world that pretrains its own components answers for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sava_core.cache import align_time, check_rates, to_encoder_rate
from sava_core.config import ComponentRef, ModelSection, Recipe
from sava_core.contracts import TextEncoder
from sava_core.device import accelerator_device, module_device
from sava_core.encoding import encode_grids, media_dataset
from sava_core.errors import SavaError
from sava_core.plugin import WeightsRequest
from sava_core.recipe import component_paths
from sava_core.registry import Registries

WeightLookup = Callable[[str, ComponentRef], "str | None"]
"""(model slot, its component reference) -> a weights path for that component, or None."""


def slot_kinds() -> dict[str, str]:
    """``model.<slot>`` -> its component kind, as the recipe schema declares it."""
    return dict(component_paths(ModelSection))


def plugin_weights(
    recipe: Recipe, registries: Registries, cell_dir: Path | None, required: bool = True
) -> WeightLookup:
    """A :data:`WeightLookup` that asks the plug-ins' ``sava_component_weights`` hook."""

    def lookup(slot: str, ref: ComponentRef) -> str | None:
        return registries.component_weights(WeightsRequest(recipe, registries, slot, ref, cell_dir, required))

    return lookup


def build_slot(recipe: Recipe, registries: Registries, slot: str, weights: WeightLookup | None, **runtime: Any) -> Any:
    """Build the component in ``model.<slot>``; without a ``pretrained`` setting, ``weights`` may supply one."""
    ref = getattr(recipe.model, slot)
    params = dict(ref.params)
    if weights is not None and params.get("pretrained") is None:
        found = weights(slot, ref)
        if found is not None:
            params["pretrained"] = found
    return registries[slot_kinds()[slot]].build(ref.name, params, **runtime)


def require(recipe: Recipe, *slots: str) -> None:
    """Raise a clear error naming every ``model.<slot>`` of ``slots`` the recipe leaves empty."""
    missing = [n for n in slots if getattr(recipe.model, n) is None]
    if missing:
        raise SavaError(f"model: the stages {recipe.stages} need {', '.join('model.' + m for m in missing)}; "
                        "see recipes/quickstart.yaml for a complete example")


def text_encoder_ref(recipe: Recipe, modality: str) -> ComponentRef:
    """The text encoder of the ``modality`` backbone: its own, else the shared ``model.text_encoder``."""
    ref: ComponentRef | None = getattr(recipe.model, f"{modality}_text_encoder") or recipe.model.text_encoder
    if ref is None:
        raise SavaError(f"model: the {modality} backbone needs a text encoder; set model.text_encoder (shared by both "
                        f"backbones) or model.{modality}_text_encoder")
    return ref


def _sequence(encoder: Any, vae: Any, grid: Tensor, media: Tensor | None, rate: int | None = None,
              from_media: bool = False) -> Tensor:
    """f's sequence of clips given as ``vae`` grids (and as media when known; audio at ``rate`` Hz,
    the VAE's, resampled to f's); ``from_media``: see :meth:`Generators.video_sequence`."""
    if encoder is vae:
        if from_media and media is not None:
            grid = encode_grids(vae, media).to(grid.device)
        return encoder.grid_to_sequence(grid)
    if media is None:
        media = vae.decode_grid(grid.to(module_device(vae)))
    if rate is not None:
        media = to_encoder_rate(media, rate, encoder)
    device = module_device(encoder)
    return torch.cat([encoder.encode(media[i : i + 16].to(device)).to(grid.device) for i in range(0, len(media), 16)])


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

    def stage1_sequences(self, video_grid: Tensor, audio_grid: Tensor, video: Tensor | None = None,
                         audio: Tensor | None = None, from_media: bool = False) -> dict[str, Tensor]:
        """The Stage I inputs (f_v, f_a latent sequences) of clips given as VAE grids, and as media when
        known (else decoded from the grids when f is not the VAE); the audio sequence is interpolated to
        the video's number of time steps (as the latent cache does for the align stage). ``from_media``:
        see :meth:`video_sequence`."""
        v = _sequence(self.video_encoder, self.video_vae, video_grid, video, from_media=from_media)
        a = _sequence(self.audio_encoder, self.audio_vae, audio_grid, audio, rate=self.audio_vae.sample_rate,
                      from_media=from_media)
        return {"video": v, "audio": align_time(a, v.shape[1])}

    def video_sequence(self, video_grid: Tensor, video: Tensor | None = None, from_media: bool = False) -> Tensor:
        """f_v's latent sequence (B, T, Dv) of video grids (and the video itself when known): P_theta's input.

        ``from_media``: read the clips from their media even when f_v is the VAE (encode the frames again)
        rather than use the grids as they are. For generated grids: Stage I and P_theta learnt f_v of real
        clips, and a sampled grid can lie off f_v's manifold while its decoded frames look right."""
        return _sequence(self.video_encoder, self.video_vae, video_grid, video, from_media=from_media)

    def modules(self) -> list[torch.nn.Module]:
        """Every network held (the VAEs and text encoders once each)."""
        held = [self.video_encoder, self.audio_encoder, self.video_vae, self.audio_vae,
                *self.text_encoders.values(), self.t2v, self.t2a]
        return list({id(m): m for m in held}.values())


def build_encoders(recipe: Recipe, registries: Registries,
                   weights: WeightLookup | None) -> tuple[Any, Any, dict[str, TextEncoder]]:
    """The video and audio encoders (with the weights ``weights`` finds) and each backbone's text
    encoder (one instance when both use the same)."""
    require(recipe, "video_encoder", "audio_encoder")
    venc = build_slot(recipe, registries, "video_encoder", weights)
    aenc = build_slot(recipe, registries, "audio_encoder", weights)
    refs = {modality: text_encoder_ref(recipe, modality) for modality in ("video", "audio")}
    video_text = registries["text_encoder"].build(refs["video"].name, refs["video"].params)
    audio_text = video_text if refs["audio"] == refs["video"] else registries["text_encoder"].build(
        refs["audio"].name, refs["audio"].params)
    return venc, aenc, {"video": video_text, "audio": audio_text}


def build_backbones(recipe: Recipe, registries: Registries, weights: WeightLookup | None,
                    grids: tuple[tuple[int, ...], tuple[int, ...]], text_dims: tuple[int, int]) -> tuple[Any, Any]:
    """T2V and T2A for latent grids of the given shapes, conditioned on tokens of ``text_dims``
    (video's, audio's)."""
    require(recipe, "video_backbone", "audio_backbone")
    t2v = build_slot(recipe, registries, "video_backbone", weights, latent_shape=grids[0], condition_dim=text_dims[0])
    t2a = build_slot(recipe, registries, "audio_backbone", weights, latent_shape=grids[1], condition_dim=text_dims[1])
    return t2v, t2a


def build_generators(recipe: Recipe, registries: Registries, weights: WeightLookup | None) -> Generators:
    """Every generative component with the weights ``weights`` finds, frozen, on the recipe's
    accelerator (:func:`sava_core.device.accelerator_device`)."""
    venc, aenc, texts = build_encoders(recipe, registries, weights)
    m = recipe.model
    vvae = venc if m.video_vae in (None, m.video_encoder) else build_slot(recipe, registries, "video_vae", weights)
    avae = aenc if m.audio_vae in (None, m.audio_encoder) else build_slot(recipe, registries, "audio_vae", weights)
    t2v, t2a = build_backbones(recipe, registries, weights, probe_grids(recipe, registries, (venc, aenc, vvae, avae)),
                               (texts["video"].dim, texts["audio"].dim))
    sampler = registries["sampler"].build(recipe.model.sampler.name, recipe.model.sampler.params)
    device = accelerator_device(recipe.device)
    for module in (venc, aenc, vvae, avae, *texts.values(), t2v, t2a):
        module.requires_grad_(False).eval().to(device)
    return Generators(venc, aenc, vvae, avae, texts, t2v, t2a, sampler)


@torch.no_grad()
def probe_grids(recipe: Recipe, registries: Registries,
                encoders: tuple[Any, Any, Any, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The latent grid shapes of one validation clip under the VAEs, checking the dataset's rates
    against every encoder's. ``encoders``: (f_v, f_a, video VAE, audio VAE)."""
    venc, aenc, vvae, avae = encoders
    items = media_dataset(recipe, registries).media("val")
    if len(items) == 0:
        raise SavaError("data: the 'val' split is empty; the generation stages need train, val and test clips")
    check_rates(items, venc)  # f_a gets audio resampled to its rate; the VAEs' rates are those of the outputs
    check_rates(items, vvae, avae)
    clip = items[0]
    return tuple(encode_grids(vvae, clip.video[None]).shape[1:]), tuple(encode_grids(avae, clip.audio[None]).shape[1:])
