"""Stage II: multi-condition fine-tuning (Eq. 8). TV2A = T2A + LoRA on its conditioning
(cross-attention) layers + phi_A, conditioned on [text ; phi_A(aligned video latent)]; TA2V likewise
from T2V with the masked audio latent. The base backbone and everything else stay frozen."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sava_core.config import Recipe
from sava_core.errors import SavaError
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
    module_device,
    uses_pretrain_stage,
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


def conditioned(gen: Generators, direction: str, recipe: Recipe, state: dict[str, Tensor] | None = None,
                in_place: bool = False) -> Conditioned:
    """TV2A (from a copy of T2A) or TA2V (from a copy of T2V) with LoRA and phi; loads ``state`` if
    given. ``in_place`` adapts ``gen``'s own backbone instead of a copy (one model in memory, when
    the plain T2A / T2V is not needed afterwards)."""
    base = gen.t2a if direction == "tv2a" else gen.t2v
    backbone = base if in_place else copy.deepcopy(base)
    add_lora(backbone, recipe.finetune.lora_rank, recipe.finetune.lora_alpha)
    phi = Phi(recipe.align.width, backbone.condition_dim)
    if state is not None:
        missing = backbone.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"unexpected LoRA keys: {missing.unexpected_keys[:3]}")
        phi.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("phi.")})
    return Conditioned(backbone, phi)


def load_conditioned(gen: Generators, direction: str, recipe: Recipe, cell_dir: Path) -> Conditioned:
    path = cell_dir / f"{direction}.safetensors"
    if not path.is_file():
        raise SavaError(f"{path} not found: add `finetune` (with finetune.directions including {direction}) before `generate`")
    c = conditioned(gen, direction, recipe, load_file(str(path)))
    c.backbone.eval()
    c.phi.eval()
    return c


def run(recipe: Recipe, cell_dir: Path, registries: Registries, resume: bool = False) -> dict[str, float]:
    """Fine-tune each direction in ``finetune.directions``; save LoRA + phi to ``<direction>.safetensors``."""
    cfg = recipe.finetune
    gen = build_generators(recipe, registries, recorded_weights(cell_dir, recipe, required=uses_pretrain_stage(recipe, registries)))
    data = media_dataset(recipe, registries)
    train, val = load_media(data, "train"), load_media(data, "val")
    grids = {"video": encode_grids(gen.video_vae, train.video), "audio": encode_grids(gen.audio_vae, train.audio)}
    val_grids = {"video": encode_grids(gen.video_vae, val.video), "audio": encode_grids(gen.audio_vae, val.audio)}
    seq = stage1_sequences(gen, grids["video"], grids["audio"], train.video, train.audio)
    val_seq = stage1_sequences(gen, val_grids["video"], val_grids["audio"], val.video, val.audio)
    model, projector = load_stage1(recipe, cell_dir, registries, seq["video"].shape[-1], seq["audio"].shape[-1])
    with torch.no_grad():
        out, val_out = model(seq["video"], seq["audio"]), model(val_seq["video"], val_seq["audio"])
        conditions = {
            "tv2a": (projector(seq["video"]), projector(val_seq["video"])) if cfg.condition_source == "projector" else (out.hv, val_out.hv),
            "ta2v": (out.ha, val_out.ha),
        }
    targets = {direction: "audio" if direction == "tv2a" else "video" for direction in cfg.directions}
    texts = {t: (encode_text(gen.text_encoders[t], train.captions), encode_text(gen.text_encoders[t], val.captions))
             for t in set(targets.values())}
    for module in (gen.video_encoder, gen.audio_encoder, gen.video_vae, gen.audio_vae, *gen.text_encoders.values(),
                   gen.t2v, gen.t2a):
        module.cpu()  # everything is encoded: leave the accelerator to the backbone being trained (moved by the Trainer)
    metrics: dict[str, float] = {}
    for direction, target in targets.items():
        text, val_text = texts[target]
        torch.manual_seed(recipe.seed)
        c = conditioned(gen, direction, recipe, in_place=True)
        c.backbone.train()
        objective = DiffusionObjective(c.backbone, gen.sampler, cfg.text_dropout, c.phi, cfg.text_only_dropout,
                                      cfg.text_swap, cfg.condition_dropout)
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
        c.backbone.cpu()
    return metrics


def stage1_sequences(gen: Generators, video_grid: Tensor, audio_grid: Tensor, video: Tensor | None = None,
                     audio: Tensor | None = None, from_media: bool = False) -> dict[str, Tensor]:
    """The Stage I inputs (f_v, f_a latent sequences) of clips given as VAE grids, and as media when
    known (else decoded from the grids when f is not the VAE); the audio sequence is interpolated to
    the video's number of time steps (as the latent cache does for the align stage). ``from_media``:
    see :func:`video_sequence`."""
    from sava_core.cache import align_time

    v = _sequence(gen.video_encoder, gen.video_vae, video_grid, video, from_media=from_media)
    a = _sequence(gen.audio_encoder, gen.audio_vae, audio_grid, audio, rate=gen.audio_vae.sample_rate, from_media=from_media)
    return {"video": v, "audio": align_time(a, v.shape[1])}


def video_sequence(gen: Generators, video_grid: Tensor, video: Tensor | None = None, from_media: bool = False) -> Tensor:
    """f_v's latent sequence (B, T, Dv) of video grids (and the video itself when known): P_theta's input.

    ``from_media``: read the clips from their media even when f_v is the VAE (encode the frames again)
    rather than use the grids as they are. For generated grids: Stage I and P_theta learnt f_v of real
    clips, and a sampled grid can lie off f_v's manifold while its decoded frames look right."""
    return _sequence(gen.video_encoder, gen.video_vae, video_grid, video, from_media=from_media)


def _sequence(encoder: Any, vae: Any, grid: Tensor, media: Tensor | None, rate: int | None = None,
              from_media: bool = False) -> Tensor:
    """f's sequence of clips given as ``vae`` grids (and as media when known; audio at ``rate`` Hz,
    the VAE's, resampled to f's); ``from_media``: see :func:`video_sequence`."""
    from sava_core.cache import to_encoder_rate

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
