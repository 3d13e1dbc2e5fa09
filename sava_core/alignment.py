"""The Stage I model (adapters q, masks M and cross-modal decoders g of Eq. 3-6) with P_theta, its
inputs (the dataset's splits as encoder latents), and its weights file in a run cell.

Stage I's objective (Eq. 7) and P_theta's are in :mod:`sava_core.losses`; the stage that trains
them is :mod:`sava_core.stages.align`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sava_core.cache import encode_split
from sava_core.config import ComponentRef, Recipe
from sava_core.contracts import Adapter, Dataset, Decoder, LatentSplit, Mask
from sava_core.device import accelerator_device
from sava_core.errors import SavaError
from sava_core.generators import build_slot, plugin_weights
from sava_core.io import atomic_write_with
from sava_core.registry import Registries

WEIGHTS_FILE = "model.safetensors"
"""Stage I's and P_theta's weights in a run cell (keys ``align.*`` and ``projector.*``)."""


@dataclass
class AlignOutput:
    """Every intermediate of Eq. 3-6, each (B, T, ...)."""

    zv: Tensor  # aligned video latent q_V(x_v), (B, T, d)
    za: Tensor  # aligned audio latent q_A(x_a), (B, T, d)
    mv: Tensor  # video mask M_V, (B, T, d) in [0, 1]
    ma: Tensor  # audio mask M_A
    hv: Tensor  # masked video latent M_V * z_v: the audio-guiding latent
    ha: Tensor  # masked audio latent M_A * z_a
    xa_hat: Tensor  # g_A(hv), (B, T, Da)
    xv_hat: Tensor  # g_V(ha), (B, T, Dv)


class AlignModel(nn.Module):
    """Adapters, masks and cross-modal decoders of Stage I, built from the recipe's components."""

    def __init__(self, recipe: Recipe, registries: Registries, video_dim: int, audio_dim: int):
        super().__init__()
        m, d = recipe.model, recipe.align.width

        def build(kind: str, ref: ComponentRef, **runtime: int) -> Any:
            return registries[kind].build(ref.name, ref.params, **runtime)

        self.q_v: Adapter = build("adapter", m.adapter, in_dim=video_dim, out_dim=d)
        self.q_a: Adapter = build("adapter", m.adapter, in_dim=audio_dim, out_dim=d)
        self.m_v: Mask = build("mask", m.mask, dim=d)
        self.m_a: Mask = build("mask", m.mask, dim=d)
        self.g_a: Decoder = build("decoder", m.decoder, in_dim=d, out_dim=audio_dim)
        self.g_v: Decoder = build("decoder", m.decoder, in_dim=d, out_dim=video_dim)

    @property
    def masked(self) -> bool:
        """Whether the masks do anything (Eq. 7's sparsity term applies)."""
        return not self.m_v.is_identity

    def forward(self, xv: Tensor, xa: Tensor, partner_shift: int = 0) -> AlignOutput:
        """``xv`` (B, T, Dv), ``xa`` (B, T, Da). ``partner_shift`` != 0 feeds each mask the partner
        latent of another clip (``roll`` along the batch): the shuffled-partner leakage control."""
        zv, za = self.q_v(xv), self.q_a(xa)
        pa = za.roll(partner_shift, 0) if partner_shift else za
        pv = zv.roll(partner_shift, 0) if partner_shift else zv
        mv, ma = self.m_v(zv, pa), self.m_a(za, pv)
        hv, ha = mv * zv, ma * za
        return AlignOutput(zv, za, mv, ma, hv, ha, self.g_a(hv), self.g_v(ha))


def build_projector(recipe: Recipe, registries: Registries, video_dim: int) -> nn.Module:
    """P_theta: f_v latent (B, T, video_dim) -> audio-guiding latent (B, T, d)."""
    ref = recipe.model.projector
    projector: nn.Module = registries["projector"].build(ref.name, ref.params, in_dim=video_dim,
                                                         out_dim=recipe.align.width)
    return projector


def save_alignment(cell_dir: Path, model: AlignModel, projector: nn.Module) -> None:
    """Write Stage I's model and P_theta to the cell's :data:`WEIGHTS_FILE` (atomically)."""
    weights = {f"align.{k}": v.contiguous() for k, v in model.state_dict().items()}
    weights |= {f"projector.{k}": v.contiguous() for k, v in projector.state_dict().items()}
    atomic_write_with(cell_dir / WEIGHTS_FILE, lambda tmp: save_file(weights, str(tmp)))


def load_alignment(recipe: Recipe, cell_dir: Path, registries: Registries, video_dim: int,
                   audio_dim: int) -> tuple[AlignModel, nn.Module]:
    """The Stage I model and P_theta trained in this cell, frozen."""
    model = AlignModel(recipe, registries, video_dim, audio_dim)
    projector = build_projector(recipe, registries, video_dim)
    path = cell_dir / WEIGHTS_FILE
    if not path.is_file():
        raise SavaError(f"{path} not found: the finetune and generate stages need the align stage of the same run; "
                        "put align before them in `stages`")
    state = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("align.")})
    projector.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("projector.")})
    return model.requires_grad_(False).eval(), projector.requires_grad_(False).eval()


def load_latents(recipe: Recipe, registries: Registries, device: torch.device,
                 cell_dir: Path | None = None) -> dict[str, LatentSplit]:
    """The dataset's train / val / test splits as encoder latents on ``device``: given by a latent
    dataset, or a media dataset encoded by the recipe's video and audio encoders (through the latent
    cache, with the weights the plug-ins supply for this cell when the encoders set none)."""
    data: Dataset = registries["dataset"].build(recipe.data.name, recipe.data.params)
    out = {}
    for split in ("train", "val", "test"):
        s = data.latents(split) if data.provides_latents else _encoded(recipe, registries, data, split, cell_dir)
        out[split] = LatentSplit(s.video.to(device), s.audio.to(device),
                                 {k: v.to(device) for k, v in s.factors.items()}, s.captions)
    return out


def _encoded(recipe: Recipe, registries: Registries, data: Dataset, split: str, cell_dir: Path | None) -> LatentSplit:
    """Encoder latents of a media split, through the latent cache (encoded once per encoder and data)."""
    m = recipe.model
    if m.video_encoder is None or m.audio_encoder is None:
        raise SavaError(f"data: {recipe.data.name!r} provides media; set model.video_encoder and model.audio_encoder "
                        "so the align stage can encode it (or use a latent dataset such as factor_world)")
    weights = plugin_weights(recipe, registries, cell_dir, required=False)
    venc = build_slot(recipe, registries, "video_encoder", weights)
    aenc = build_slot(recipe, registries, "audio_encoder", weights)
    if len(data.media(split)) == 0:
        raise SavaError(f"data: the {split!r} split of {recipe.data.name!r} is empty; the align stage needs train, val "
                        "and test clips (for vggsound set data.params.val_fraction, e.g. 0.05)")
    device = accelerator_device(recipe.device)  # encode on the accelerator; latents come back to the CPU
    key = {"video_encoder": m.video_encoder.name, "audio_encoder": m.audio_encoder.name}
    return encode_split(data, split, venc.eval().to(device), aenc.eval().to(device), key_extra=key, run_dir=cell_dir)
