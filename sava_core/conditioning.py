"""Stage II's conditional generators: phi (aligned latent -> condition tokens), LoRA on a backbone's
conditioning layers (peft), the fine-tuned TV2A / TA2V as saved in a run cell, and the conditional /
unconditional pair classifier-free guidance samples with."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sava_core.components.embeddings import sinusoids
from sava_core.config import Recipe
from sava_core.contracts import Backbone, Condition
from sava_core.encoding import TextBatch
from sava_core.errors import SavaError
from sava_core.generators import Generators
from sava_core.io import atomic_write_with

DIRECTIONS = {"tv2a": "audio", "ta2v": "video"}
"""Stage II's directions -> the modality each generates (TV2A adapts T2A, TA2V adapts T2V)."""


class Phi(nn.Module):
    """phi: aligned latent (B, T, d) -> condition tokens (B, T, text_dim) (``text_dim`` = the
    backbone's ``condition_dim``), with fixed sinusoidal time embeddings so that cross-attention can
    tell the instants apart."""

    def __init__(self, width: int, text_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(width, text_dim), nn.SiLU(), nn.Linear(text_dim, text_dim))
        self.text_dim = text_dim

    def forward(self, z: Tensor) -> Tensor:
        out: Tensor = self.proj(z) + sinusoids(z.shape[1], self.text_dim).to(z)
        return out


def add_lora(backbone: Backbone, rank: int, alpha: float) -> None:
    """Freeze ``backbone``, inject LoRA (peft) into the modules matching its ``lora_targets`` and
    make its ``condition_modules`` trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    backbone.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; any scale works
                        target_modules="|".join(backbone.lora_targets), lora_dropout=0.0)
    inject_adapter_in_model(config, backbone)
    for name in backbone.condition_modules:
        backbone.get_submodule(name).requires_grad_(True)


def finetuned_state(backbone: Backbone) -> dict[str, Tensor]:
    """What Stage II trains in ``backbone``: its LoRA weights and its ``condition_modules`` (detached,
    on the CPU)."""
    prefixes = tuple(f"{name}." for name in backbone.condition_modules)
    return {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()
            if "lora_" in k or k.startswith(prefixes)}


@dataclass
class Conditioned:
    """A fine-tuned conditional generator: the backbone with LoRA, and phi."""

    backbone: Backbone
    phi: Phi

    def state(self) -> dict[str, Tensor]:
        """What Stage II trains: LoRA and condition modules (``backbone.*``) and phi (``phi.*``), on the CPU."""
        state = {f"backbone.{k}": v for k, v in finetuned_state(self.backbone).items()}
        return state | {f"phi.{k}": v.detach().contiguous().cpu() for k, v in self.phi.state_dict().items()}

    def save(self, cell_dir: Path, direction: str) -> None:
        """Write :meth:`state` to ``cell_dir/<direction>.safetensors`` (atomically)."""
        state = self.state()
        atomic_write_with(cell_dir / f"{direction}.safetensors", lambda tmp: save_file(state, str(tmp)))


def conditioned(gen: Generators, direction: str, recipe: Recipe, state: dict[str, Tensor] | None = None,
                in_place: bool = False) -> Conditioned:
    """TV2A (from a copy of T2A) or TA2V (from a copy of T2V) with LoRA and phi; loads ``state`` if
    given. ``in_place`` adapts ``gen``'s own backbone instead of a copy (one model in memory, when
    the plain T2A / T2V is not needed afterwards)."""
    base = gen.t2a if DIRECTIONS[direction] == "audio" else gen.t2v
    backbone = base if in_place else copy.deepcopy(base)
    add_lora(backbone, recipe.finetune.lora_rank, recipe.finetune.lora_alpha)
    phi = Phi(recipe.align.width, backbone.condition_dim)
    if state is not None:
        missing = backbone.load_state_dict(
            {k[9:]: v for k, v in state.items() if k.startswith("backbone.")}, strict=False
        )
        if missing.unexpected_keys:
            raise RuntimeError(f"unexpected Stage II keys: {missing.unexpected_keys[:3]}")
        phi.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("phi.")})
    return Conditioned(backbone, phi)


def load_conditioned(gen: Generators, direction: str, recipe: Recipe, cell_dir: Path) -> Conditioned:
    """The ``direction`` fine-tuned in this cell (``<direction>.safetensors``), in eval mode."""
    path = cell_dir / f"{direction}.safetensors"
    if not path.is_file():
        raise SavaError(
            f"{path} not found: add `finetune` (with finetune.directions including {direction}) before `generate`"
        )
    c = conditioned(gen, direction, recipe, load_file(str(path)))
    c.backbone.eval()
    c.phi.eval()
    return c


def guidance_conditions(text: TextBatch, extra: Tensor | None = None) -> tuple[Condition, Condition]:
    """(conditional, unconditional) for guidance: the unconditional drops text and extra together."""
    n = text.tokens.shape[0]
    null = text.null_tokens.expand(n, -1, -1), text.null_mask.expand(n, -1)
    if extra is None:
        return Condition(text.tokens, text.mask), Condition(*null)
    on = torch.ones(extra.shape[:2], dtype=torch.bool, device=extra.device)
    return Condition(text.tokens, text.mask, extra, on), Condition(*null, extra, ~on)
