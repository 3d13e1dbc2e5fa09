"""Stage I: masked latent alignment (Eq. 3-7), then the projector P_theta, then the audit."""

from __future__ import annotations

from typing import Any, ClassVar

from sava_core.config import Recipe
from sava_core.stage import Stage, StageContext


class Align(Stage):
    """Train Stage I and P_theta for one cell, save them to ``model.safetensors`` and return the
    audit metrics. Runs under Accelerate: every process trains on its share of each batch; the main
    process writes the files."""

    order: ClassVar[float] = 20
    summary: ClassVar[str] = "Stage I: adapters, masks and cross-modal decoders (Eq. 7), then P_theta, then the audit"

    def produces(self, recipe: Recipe) -> list[str]:
        return ["model.safetensors"]

    def run(self, context: StageContext) -> dict[str, float]:
        import torch

        from sava_core.alignment import AlignModel, build_projector, load_latents, save_alignment
        from sava_core.audit import audit
        from sava_core.contracts import LatentSplit
        from sava_core.device import use_cpu
        from sava_core.losses import AlignObjective, ProjectorObjective
        from sava_core.training import EventLog, Trainer

        recipe, cell_dir, registries, resume = context.recipe, context.cell_dir, context.registries, context.resume
        cfg = recipe.align
        common: dict[str, Any] = dict(cpu=use_cpu(recipe.device), events=EventLog(cell_dir / "log.jsonl"),
                      tracking=recipe.tracking, tracking_dir=cell_dir / "tracking",
                      hparams=recipe.model_dump(mode="json", include={"model", "align", "data", "seed"}))

        splits = load_latents(recipe, registries, torch.device("cpu"), cell_dir)
        torch.manual_seed(recipe.seed)  # just before the models it initialises
        model = AlignModel(recipe, registries, splits["train"].video.shape[-1], splits["train"].audio.shape[-1])
        trainer = Trainer(AlignObjective(model, cfg.loss.alpha, cfg.loss.lam), cfg.train, seed=recipe.seed,
                          checkpoint_dir=cell_dir / "checkpoints" / "align", name="align", **common)
        device = trainer.device
        splits = {k: LatentSplit(v.video.to(device), v.audio.to(device),
                                 {f: t.to(device) for f, t in v.factors.items()}, v.captions)
                  for k, v in splits.items()}
        train, val = splits["train"], splits["val"]
        trainer.fit(lambda idx: (train.video[idx], train.audio[idx]), len(train),
                    validate=lambda obj: {k: float(v) for k, v in obj(val.video, val.audio).items()}, resume=resume)
        model.requires_grad_(False).eval()

        # P_theta: from the video latent alone, predict the masked latent Stage I computes with both
        with torch.no_grad():
            target_train = model(train.video, train.audio).hv
            target_val = model(val.video, val.audio).hv
        projector = build_projector(recipe, registries, train.video.shape[-1]).to(device)
        Trainer(ProjectorObjective(projector), cfg.projector_train, seed=recipe.seed + 1,
                checkpoint_dir=cell_dir / "checkpoints" / "projector", name="projector", **common).fit(
            lambda idx: (train.video[idx], target_train[idx]), len(train),
            validate=lambda obj: {k: float(v) for k, v in obj(val.video, target_val).items()}, resume=resume)
        projector.requires_grad_(False).eval()

        if trainer.is_main:
            save_alignment(cell_dir, model, projector)
        return audit(model, projector, splits["train"], splits["test"], cfg.probe)
