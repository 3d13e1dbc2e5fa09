"""Stage II: multi-condition fine-tuning (Eq. 8). TV2A = T2A + LoRA on its conditioning
(cross-attention) layers + phi_A, conditioned on [text ; phi_A(aligned video latent)]; TA2V likewise
from T2V with the masked audio latent. The base backbone and everything else stay frozen."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sava_core.config import Recipe
from sava_core.io import atomic_write_with
from sava_core.registry import Registries
from sava_core.stages.align import AlignModel, use_cpu
from sava_core.stages.generation import (
    DiffusionObjective,
    Generators,
    Phi,
    build_generators,
    encode_grids,
    encode_text,
    load_media,
    media_dataset,
)
from sava_core.stages.pretrain import recorded_weights
from sava_core.training import EventLog, Trainer

log = logging.getLogger("sava")


def add_lora(backbone: nn.Module, rank: int, alpha: float) -> None:
    """Freeze ``backbone`` and inject LoRA (peft) into the modules matching its ``lora_targets``."""
    from peft import LoraConfig, inject_adapter_in_model

    backbone.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules="|".join(backbone.lora_targets), lora_dropout=0.0)
    inject_adapter_in_model(config, backbone)


def lora_state(backbone: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items() if "lora_" in k}


def load_stage1(recipe: Recipe, cell_dir: Path, registries: Registries, video_dim: int, audio_dim: int) -> tuple[AlignModel, nn.Module]:
    """The Stage I model and P_theta trained in this run (``model.safetensors``), frozen."""
    model = AlignModel(recipe, registries, video_dim, audio_dim)
    projector = registries["projector"].build(recipe.model.projector.name, recipe.model.projector.params,
                                              in_dim=video_dim, out_dim=recipe.align.width)
    path = cell_dir / "model.safetensors"
    if not path.is_file():
        from sava_core.errors import SavaError

        raise SavaError(f"{path} not found: the finetune and generate stages need the align stage of the same run; "
                        "put align before them in `stages`")
    state = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("align.")})
    projector.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("projector.")})
    return model.requires_grad_(False).eval(), projector.requires_grad_(False).eval()


@dataclass
class Conditioned:
    """A fine-tuned conditional generator: the backbone with LoRA, and phi."""

    backbone: nn.Module
    phi: Phi


def conditioned(gen: Generators, direction: str, recipe: Recipe, state: dict[str, Tensor] | None = None) -> Conditioned:
    """TV2A (from a copy of T2A) or TA2V (from a copy of T2V) with LoRA and phi; loads ``state`` if given."""
    backbone = copy.deepcopy(gen.t2a if direction == "tv2a" else gen.t2v)
    add_lora(backbone, recipe.finetune.lora_rank, recipe.finetune.lora_alpha)
    phi = Phi(recipe.align.width, gen.text_encoder.dim)
    if state is not None:
        missing = backbone.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"unexpected LoRA keys: {missing.unexpected_keys[:3]}")
        phi.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("phi.")})
    return Conditioned(backbone, phi)


def load_conditioned(gen: Generators, direction: str, recipe: Recipe, cell_dir: Path) -> Conditioned:
    path = cell_dir / f"{direction}.safetensors"
    if not path.is_file():
        from sava_core.errors import SavaError

        raise SavaError(f"{path} not found: add `finetune` (with finetune.directions including {direction}) before `generate`")
    c = conditioned(gen, direction, recipe, load_file(str(path)))
    c.backbone.eval()
    c.phi.eval()
    return c


def run(recipe: Recipe, cell_dir: Path, registries: Registries, resume: bool = False) -> dict[str, float]:
    """Fine-tune each direction in ``finetune.directions``; save LoRA + phi to ``<direction>.safetensors``."""
    cfg = recipe.finetune
    gen = build_generators(recipe, registries, recorded_weights(cell_dir, recipe))
    data = media_dataset(recipe, registries)
    train, val = load_media(data, "train"), load_media(data, "val")
    grids = {"video": encode_grids(gen.video_encoder, train.video), "audio": encode_grids(gen.audio_encoder, train.audio)}
    val_grids = {"video": encode_grids(gen.video_encoder, val.video), "audio": encode_grids(gen.audio_encoder, val.audio)}
    seq = {k: _sequence(gen, k, v) for k, v in grids.items()}
    val_seq = {k: _sequence(gen, k, v) for k, v in val_grids.items()}
    model, projector = load_stage1(recipe, cell_dir, registries, seq["video"].shape[-1], seq["audio"].shape[-1])
    with torch.no_grad():
        out, val_out = model(seq["video"], seq["audio"]), model(val_seq["video"], val_seq["audio"])
        conditions = {
            "tv2a": (projector(seq["video"]), projector(val_seq["video"])) if cfg.condition_source == "projector" else (out.hv, val_out.hv),
            "ta2v": (out.ha, val_out.ha),
        }
    text, val_text = encode_text(gen.text_encoder, train.captions), encode_text(gen.text_encoder, val.captions)
    metrics: dict[str, float] = {}
    for direction in cfg.directions:
        target = "audio" if direction == "tv2a" else "video"
        torch.manual_seed(recipe.seed)
        c = conditioned(gen, direction, recipe)
        c.backbone.train()
        objective = DiffusionObjective(c.backbone, gen.sampler, cfg.text_dropout, c.phi)
        trainer = Trainer(objective, cfg.train, seed=recipe.seed + 2, cpu=use_cpu(recipe.device),
                          checkpoint_dir=cell_dir / "checkpoints" / direction, events=EventLog(cell_dir / "log.jsonl"),
                          name=direction, tracking=recipe.tracking, tracking_dir=cell_dir / "tracking")
        dev = trainer.device
        x, xv = grids[target].to(dev), val_grids[target].to(dev)
        extra, val_extra = (t.to(dev) for t in conditions[direction])
        tt = [t.to(dev) for t in (text.tokens, text.mask, text.null_tokens, text.null_mask)]
        vt = [t.to(dev) for t in (val_text.tokens, val_text.mask, val_text.null_tokens, val_text.null_mask)]

        def validate(obj: nn.Module) -> dict[str, float]:
            # the same noise with each clip's condition and with another clip's: equal losses mean
            # the condition is ignored
            out = {}
            for key, cond in (("loss", val_extra), ("loss_shuffled", val_extra.roll(1, 0))):
                torch.manual_seed(0)
                out[key] = float(obj(xv, vt[0], vt[1], vt[2], vt[3], cond)["loss"])
            return out

        last = trainer.fit(lambda idx: (x[idx], tt[0][idx], tt[1][idx], tt[2], tt[3], extra[idx]), len(x),
                           validate=validate, resume=resume)
        metrics[f"{direction}_val_loss"] = last.get("loss", float("nan"))
        metrics[f"{direction}_val_loss_shuffled"] = last.get("loss_shuffled", float("nan"))
        if trainer.is_main:
            state = {f"backbone.{k}": v for k, v in lora_state(c.backbone).items()}
            state |= {f"phi.{k}": v.detach().contiguous().cpu() for k, v in c.phi.state_dict().items()}
            atomic_write_with(cell_dir / f"{direction}.safetensors", lambda tmp, s=state: save_file(s, str(tmp)))
    return metrics


def _sequence(gen: Generators, modality: str, grid: Tensor) -> Tensor:
    encoder: Any = gen.video_encoder if modality == "video" else gen.audio_encoder
    return encoder.grid_to_sequence(grid)
