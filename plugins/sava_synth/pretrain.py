"""The media world's own pretraining: the ``pretrain`` stage trains the world's video and audio
autoencoders, then its T2V and T2A latent diffusion backbones (text-conditioned), once per
configuration; and the ``sava_component_weights`` hook hands those weights to the core for every
component of this plug-in that is marked ``pretrain_stage = True`` and sets no ``pretrained``.

Where the weights are found, in this order: the run cell's record (``pretrained.json``, written
by the stage), the weights shipped in ``sava_synth/weights/`` when they were made by this exact
configuration (same :func:`pretrain_key`), ``pretrain.weights`` (a directory, or ``shipped``), or the
user cache ``$SAVA_CACHE/pretrained/<key>`` (default ``~/.cache/sava``). The stage is skipped when
weights for the configuration already exist.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from sava_core.config import Recipe
from sava_core.errors import SavaError
from sava_core.plugin import WeightsRequest
from sava_core.registry import Registries
from sava_core.stage import Stage, StageContext

log = logging.getLogger("sava")

SHIPPED = Path(__file__).parent / "weights"
"""The weights shipped with the media world (made by ``recipes/synth_pretrain.yaml``)."""

WEIGHT_FILES = {"video_encoder": "video_encoder.safetensors", "audio_encoder": "audio_encoder.safetensors",
                "video_backbone": "t2v.safetensors", "audio_backbone": "t2a.safetensors"}
"""The ``model`` slots the stage trains -> their file in a weights directory."""

SLOT_FILES = WEIGHT_FILES | {"video_vae": WEIGHT_FILES["video_encoder"], "audio_vae": WEIGHT_FILES["audio_encoder"]}
"""Every slot a pretrained component can sit in (a VAE slot holds an autoencoder) -> its file."""


def trained_here(recipe: Recipe, registries: Registries, slot: str) -> bool:
    """Whether ``model.<slot>`` is a component this stage trains (its class says ``pretrain_stage``)."""
    from sava_core.generators import slot_kinds

    ref = getattr(recipe.model, slot)
    return ref is not None and bool(
        getattr(registries[slot_kinds()[slot]].get(ref.name).load(), "pretrain_stage", False)
    )


def pretrain_key(recipe: Recipe, registries: Registries) -> str:
    """Hash of everything pretrained weights depend on: the world, the components and the pretrain
    section. Left out: the components' ``pretrained`` paths and the params their params model lists in
    ``after_pretraining`` (settings that only matter once the weights exist, e.g. how Stage II's
    condition tokens are attended), so changing those does not train the world's generators again."""
    from sava_core.generators import slot_kinds
    from sava_core.io import canonical_hash

    m, kinds = recipe.model, slot_kinds()
    # settings at their defaults are left out, so that a new training option (defaulting to the old
    # behaviour) keeps every existing key
    parts: dict[str, Any] = {"data": recipe.data.model_dump(),
                             "pretrain": recipe.pretrain.model_dump(exclude={"weights"}, exclude_defaults=True)}
    for name in [*WEIGHT_FILES, "text_encoder", "sampler", "video_text_encoder", "audio_text_encoder"]:
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


def weights_dir(recipe: Recipe, registries: Registries) -> Path:
    """Where this recipe's pretrained weights live: ``pretrain.weights`` (a directory, or ``shipped``
    for :data:`SHIPPED` whatever the key), or the user cache ``$SAVA_CACHE/pretrained/<key>``."""
    if recipe.pretrain.weights == "shipped":
        return SHIPPED
    if recipe.pretrain.weights:
        return Path(recipe.pretrain.weights).expanduser()
    root = Path(os.environ.get("SAVA_CACHE", Path.home() / ".cache" / "sava"))
    return root / "pretrained" / pretrain_key(recipe, registries)


def shipped_weights(recipe: Recipe, registries: Registries) -> Path | None:
    """:data:`SHIPPED`, if those weights were made by this exact configuration."""
    info = SHIPPED / "pretrain.json"
    if info.is_file() and json.loads(info.read_text()).get("key") == pretrain_key(recipe, registries):
        return SHIPPED
    return None


def pretrained_dir(recipe: Recipe, registries: Registries) -> Path | None:
    """An existing complete weights directory for this recipe (shipped, configured or cached)."""
    for folder in (shipped_weights(recipe, registries), weights_dir(recipe, registries)):
        if folder is not None and (folder / "pretrain.json").is_file():
            return folder
    return None


def recorded_weights(
    cell_dir: Path | None, recipe: Recipe, registries: Registries, required: bool = True
) -> Path | None:
    """The weights directory the pretrain stage recorded for this cell, or the one it would use
    (shipped, configured or cached). Raises if there is none and ``required``."""
    record = cell_dir / "pretrained.json" if cell_dir is not None else None
    if record is not None and record.is_file():
        return Path(json.loads(record.read_text())["weights"])
    found = pretrained_dir(recipe, registries)
    if found is None and required:
        raise SavaError(f"no pretrained weights for this recipe (key {pretrain_key(recipe, registries)}); "
                        "add `pretrain` to stages or run recipes/synth_pretrain.yaml first")
    return found


def component_weights(request: WeightsRequest) -> str | None:
    """The ``sava_component_weights`` answer: the weights file of a component this stage trains."""
    if request.slot not in SLOT_FILES or not trained_here(request.recipe, request.registries, request.slot):
        return None
    folder = recorded_weights(request.cell_dir, request.recipe, request.registries, required=request.required)
    return None if folder is None else str(folder / SLOT_FILES[request.slot])


class Pretrain(Stage):
    """Train (or find) the world's generators; record where they are in ``cell_dir/pretrained.json``."""

    order: ClassVar[float] = 10
    summary: ClassVar[str] = "media world: train its autoencoders and T2V / T2A once (skipped when the weights exist)"

    def produces(self, recipe: Recipe) -> list[str]:
        return ["pretrained.json"]

    def run(self, context: StageContext) -> dict[str, float]:
        from sava_core.io import atomic_write_json

        recipe, cell_dir, registries = context.recipe, context.cell_dir, context.registries
        existing = pretrained_dir(recipe, registries)
        if existing is not None:
            log.info("pretrain: using the weights in %s", existing)
            atomic_write_json(cell_dir / "pretrained.json", {"weights": str(existing),
                                                             "key": pretrain_key(recipe, registries)})
            return {}
        own = [f"model.{s}" for s in WEIGHT_FILES if not trained_here(recipe, registries, s)]
        if own:
            raise SavaError(f"stages: `pretrain` trains a synthetic world's encoders and both backbones, but "
                            f"{', '.join(own)} load their own weights (pretrained / preset); "
                            "remove pretrain from stages, "
                            "and for a mixed recipe pretrain the synthetic side with its own recipe and set "
                            "pretrain.weights to its directory")
        return _train(context, weights_dir(recipe, registries))


def _train(context: StageContext, out: Path) -> dict[str, float]:
    """The autoencoders, then T2V and T2A, trained under Accelerate; weights written to ``out``."""
    import torch
    from safetensors.torch import save_file
    from torch import Tensor, nn

    from sava_core.device import use_cpu
    from sava_core.encoding import encode_grids, encode_text, load_media, media_dataset
    from sava_core.generators import build_backbones, build_encoders
    from sava_core.io import atomic_write_json, atomic_write_with
    from sava_core.losses import DiffusionObjective
    from sava_core.training import EventLog, Trainer

    class AutoencoderObjective(nn.Module):
        """Reconstruction losses of both autoencoders: forward(video, audio) -> terms."""

        def __init__(self, video_encoder: nn.Module, audio_encoder: nn.Module):
            super().__init__()
            self.video_encoder, self.audio_encoder = video_encoder, audio_encoder

        def forward(self, video: Tensor, audio: Tensor) -> dict[str, Tensor]:
            v = self.video_encoder.autoencoder_loss(video)
            a = self.audio_encoder.autoencoder_loss(audio)
            return {"video": v, "audio": a, "loss": v + a}

    recipe, cell_dir, registries, resume = context.recipe, context.cell_dir, context.registries, context.resume
    cfg = recipe.pretrain
    cpu = use_cpu(recipe.device)
    data = media_dataset(recipe, registries)
    train, val = load_media(data, "train"), load_media(data, "val")
    torch.manual_seed(recipe.seed)
    venc, aenc, texts = build_encoders(recipe, registries, weights=None)
    sampler = registries["sampler"].build(recipe.model.sampler.name, recipe.model.sampler.params)
    aenc.fit_mel_statistics(train.audio)  # on the CPU, before Accelerate moves the encoders
    events = EventLog(cell_dir / "log.jsonl")
    ckpt = cell_dir / "checkpoints"
    common: dict[str, Any] = dict(cpu=cpu, events=events, tracking=recipe.tracking)

    venc.requires_grad_(True).train()
    aenc.requires_grad_(True).train()
    ae = Trainer(AutoencoderObjective(venc, aenc), cfg.autoencoder, seed=recipe.seed,
                 checkpoint_dir=ckpt / "autoencoder", name="autoencoder", tracking_dir=cell_dir / "tracking", **common)
    device = ae.device
    train.video, train.audio, val.video, val.audio = (
        t.to(device) for t in (train.video, train.audio, val.video, val.audio)
    )
    ae_val = ae.fit(lambda idx: (train.video[idx], train.audio[idx]), len(train.video),
                    validate=lambda obj: {k: float(v) for k, v in obj(val.video[:32], val.audio[:32]).items()},
                    resume=resume)
    venc.requires_grad_(False).eval()
    aenc.requires_grad_(False).eval()
    venc.fit_statistics(train.video[:256])
    aenc.fit_statistics(train.audio[:256])

    grids = {"video": encode_grids(venc, train.video), "audio": encode_grids(aenc, train.audio)}
    val_grids = {"video": encode_grids(venc, val.video), "audio": encode_grids(aenc, val.audio)}
    t2v, t2a = build_backbones(recipe, registries, None,
                               (tuple(grids["video"].shape[1:]), tuple(grids["audio"].shape[1:])),
                               (texts["video"].dim, texts["audio"].dim))
    metrics = {f"ae_{k}": v for k, v in ae_val.items()}
    for modality, backbone, train_cfg in (("video", t2v, cfg.video), ("audio", t2a, cfg.audio)):
        backbone.train()
        objective = DiffusionObjective(backbone, sampler, cfg.text_dropout)
        x, xv = grids[modality].to(device), val_grids[modality].to(device)
        t, tv = encode_text(texts[modality], train.captions), encode_text(texts[modality], val.captions)
        trainer = Trainer(objective, train_cfg, seed=recipe.seed + 1, checkpoint_dir=ckpt / f"t2{modality[0]}",
                          name=f"t2{modality[0]}", tracking_dir=cell_dir / "tracking", **common)

        def validate(obj: nn.Module, xv: Tensor = xv, tv: Any = tv) -> dict[str, float]:
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
        key = pretrain_key(recipe, registries)
        atomic_write_json(
            out / "pretrain.json", {"key": key, "recipe": recipe.model_dump(mode="json"), "metrics": metrics}
        )
        atomic_write_json(cell_dir / "pretrained.json", {"weights": str(out), "key": key})
        log.info("pretrain: weights written to %s", out)
    return metrics


def _stored(tensor: Any, dtype: Any) -> Any:
    """A state-dict entry as written to disk: floating-point tensors in ``dtype``, on the CPU."""
    tensor = tensor.detach().cpu()
    return (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()
