"""The one-time pretraining of a synthetic world's generative components: the video and audio
autoencoders, then the T2V and T2A latent diffusion backbones (text-conditioned).

Skipped when weights for the same configuration already exist (shipped with the world, in
``pretrain.weights`` or in the user cache)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from sava_core.config import Recipe
from sava_core.io import atomic_write_json, atomic_write_with
from sava_core.registry import Registries
from sava_core.stages.generation import (
    WEIGHT_FILES,
    DiffusionObjective,
    build_backbones,
    build_encoders,
    encode_grids,
    encode_text,
    load_media,
    media_dataset,
    pretrain_key,
    pretrain_stage_slots,
    pretrained_dir,
    weights_dir,
)
from sava_core.stages.align import use_cpu
from sava_core.training import EventLog, Trainer

log = logging.getLogger("sava")


class AutoencoderObjective(nn.Module):
    """Reconstruction losses of both autoencoders: forward(video, audio) -> terms."""

    def __init__(self, video_encoder: nn.Module, audio_encoder: nn.Module):
        super().__init__()
        self.video_encoder, self.audio_encoder = video_encoder, audio_encoder

    def forward(self, video: Tensor, audio: Tensor) -> dict[str, Tensor]:
        v = self.video_encoder.autoencoder_loss(video)
        a = self.audio_encoder.autoencoder_loss(audio)
        return {"video": v, "audio": a, "loss": v + a}


def run(recipe: Recipe, cell_dir: Path, registries: Registries, resume: bool = False) -> dict[str, float]:
    """Train (or find) the pretrained weights; record where they are in ``cell_dir/pretrained.json``."""
    existing = pretrained_dir(recipe)
    if existing is not None:
        log.info("pretrain: using the weights in %s", existing)
        atomic_write_json(cell_dir / "pretrained.json", {"weights": str(existing), "key": pretrain_key(recipe)})
        return {}
    out = weights_dir(recipe)
    cfg = recipe.pretrain
    cpu = use_cpu(recipe.device)
    data = media_dataset(recipe, registries)
    train, val = load_media(data, "train"), load_media(data, "val")
    torch.manual_seed(recipe.seed)
    slots = pretrain_stage_slots(recipe, registries)
    if not all(slots.get(s, False) for s in WEIGHT_FILES):
        from sava_core.errors import SavaError

        own = [f"model.{s}" for s in WEIGHT_FILES if not slots.get(s, False)]
        raise SavaError(f"stages: `pretrain` trains a synthetic world's encoders and both backbones, but {', '.join(own)} "
                        "load their own weights (pretrained / preset); remove pretrain from stages, and for a mixed "
                        "recipe pretrain the synthetic side with its own recipe and set pretrain.weights to its directory")
    venc, aenc, texts = build_encoders(recipe, registries, weights=None)
    sampler = registries["sampler"].build(recipe.model.sampler.name, recipe.model.sampler.params)
    aenc.fit_mel_statistics(train.audio)  # on the CPU, before Accelerate moves the encoders
    events = EventLog(cell_dir / "log.jsonl")
    ckpt = cell_dir / "checkpoints"
    common = dict(cpu=cpu, events=events, tracking=recipe.tracking)

    venc.requires_grad_(True).train()
    aenc.requires_grad_(True).train()
    ae = Trainer(AutoencoderObjective(venc, aenc), cfg.autoencoder, seed=recipe.seed, checkpoint_dir=ckpt / "autoencoder",
                 name="autoencoder", tracking_dir=cell_dir / "tracking", **common)
    device = ae.device
    train.video, train.audio, val.video, val.audio = (t.to(device) for t in (train.video, train.audio, val.video, val.audio))
    ae_val = ae.fit(lambda idx: (train.video[idx], train.audio[idx]), len(train.video),
                    validate=lambda obj: {k: float(v) for k, v in obj(val.video[:32], val.audio[:32]).items()}, resume=resume)
    venc.requires_grad_(False).eval()
    aenc.requires_grad_(False).eval()
    venc.fit_statistics(train.video[:256])
    aenc.fit_statistics(train.audio[:256])

    device = ae.device
    grids = {"video": encode_grids(venc, train.video), "audio": encode_grids(aenc, train.audio)}
    val_grids = {"video": encode_grids(venc, val.video), "audio": encode_grids(aenc, val.audio)}
    t2v, t2a = build_backbones(recipe, registries, None, (tuple(grids["video"].shape[1:]), tuple(grids["audio"].shape[1:])),
                               (texts["video"].dim, texts["audio"].dim))
    metrics = {f"ae_{k}": v for k, v in ae_val.items()}
    for modality, backbone, train_cfg in (("video", t2v, cfg.video), ("audio", t2a, cfg.audio)):
        backbone.train()
        objective = DiffusionObjective(backbone, sampler, cfg.text_dropout)
        x, xv = grids[modality].to(device), val_grids[modality].to(device)
        t, tv = encode_text(texts[modality], train.captions), encode_text(texts[modality], val.captions)
        trainer = Trainer(objective, train_cfg, seed=recipe.seed + 1, checkpoint_dir=ckpt / f"t2{modality[0]}",
                          name=f"t2{modality[0]}", tracking_dir=cell_dir / "tracking", **common)

        def validate(obj: nn.Module, xv: Tensor = xv, tv=tv) -> dict[str, float]:  # type: ignore[no-untyped-def]
            torch.manual_seed(0)
            return {"loss": float(obj(xv, tv.tokens.to(device), tv.mask.to(device), tv.null_tokens.to(device),
                                      tv.null_mask.to(device))["loss"])}

        last = trainer.fit(lambda idx, x=x, t=t: (x[idx], t.tokens[idx].to(device), t.mask[idx].to(device),
                                                  t.null_tokens.to(device), t.null_mask.to(device)),
                           len(x), validate=validate, resume=resume)
        backbone.eval()
        metrics[f"t2{modality[0]}_val_loss"] = last.get("loss", float("nan"))

    if ae.is_main:
        backbone_dtype = getattr(torch, cfg.weights_dtype)
        for name, module, dtype in (("video_encoder", venc, torch.float32), ("audio_encoder", aenc, torch.float32),
                                    ("video_backbone", t2v, backbone_dtype), ("audio_backbone", t2a, backbone_dtype)):
            state = {k: _stored(v, dtype) for k, v in module.state_dict().items()}
            atomic_write_with(out / WEIGHT_FILES[name], lambda tmp, state=state: save_file(state, str(tmp)))
        atomic_write_json(out / "pretrain.json", {"key": pretrain_key(recipe), "recipe": recipe.model_dump(mode="json"),
                                                  "metrics": metrics})
        atomic_write_json(cell_dir / "pretrained.json", {"weights": str(out), "key": pretrain_key(recipe)})
        log.info("pretrain: weights written to %s", out)
    return metrics


def _stored(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """A state-dict entry as written to disk: floating-point tensors in ``dtype``, on the CPU."""
    tensor = tensor.detach().cpu()
    return (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()


def recorded_weights(cell_dir: Path, recipe: Recipe, required: bool = True) -> Path | None:
    """The weights directory the pretrain stage recorded for this run, or the one it would use
    (shipped, configured or cached). Raises if there is none and ``required``."""
    record = cell_dir / "pretrained.json"
    if record.is_file():
        return Path(json.loads(record.read_text())["weights"])
    found = pretrained_dir(recipe)
    if found is None and required:
        from sava_core.errors import SavaError

        raise SavaError(f"no pretrained weights for this recipe (key {pretrain_key(recipe)}); add `pretrain` to stages "
                        "or run recipes/synth_pretrain.yaml first")
    return found
