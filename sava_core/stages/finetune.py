"""Stage II: multi-condition fine-tuning (Eq. 8). TV2A = T2A + LoRA on its conditioning
(cross-attention) layers + phi_A, conditioned on [text ; phi_A(aligned video latent)]; TA2V likewise
from T2V with the masked audio latent. The base backbone and everything else stay frozen."""

from __future__ import annotations

from typing import ClassVar

from sava_core.config import Recipe
from sava_core.registry import Registries
from sava_core.stage import Stage, StageContext


class Finetune(Stage):
    """Fine-tune each direction of ``finetune.directions``; save LoRA + phi to ``<direction>.safetensors``."""

    order: ClassVar[float] = 30
    summary: ClassVar[str] = "Stage II: TV2A / TA2V by LoRA on the backbones' conditioning layers + phi (Eq. 8)"

    def requires(self, recipe: Recipe, registries: Registries) -> list[str]:
        if "align" not in recipe.stages:
            return ["needs the align stage of the same run (its masked latents and P_theta): add align to stages"]
        return []

    def produces(self, recipe: Recipe) -> list[str]:
        return [f"{direction}.safetensors" for direction in recipe.finetune.directions]

    def run(self, context: StageContext) -> dict[str, float]:
        import torch
        from torch import nn

        from sava_core.alignment import load_alignment
        from sava_core.conditioning import DIRECTIONS, conditioned
        from sava_core.device import use_cpu
        from sava_core.encoding import encode_grids, encode_text, load_media, media_dataset
        from sava_core.generators import build_generators, plugin_weights
        from sava_core.losses import DiffusionObjective
        from sava_core.training import EventLog, Trainer

        recipe, cell_dir, registries = context.recipe, context.cell_dir, context.registries
        cfg = recipe.finetune
        gen = build_generators(recipe, registries, plugin_weights(recipe, registries, cell_dir))
        data = media_dataset(recipe, registries)
        train, val = load_media(data, "train"), load_media(data, "val")
        grids = {"video": encode_grids(gen.video_vae, train.video), "audio": encode_grids(gen.audio_vae, train.audio)}
        val_grids = {"video": encode_grids(gen.video_vae, val.video), "audio": encode_grids(gen.audio_vae, val.audio)}
        seq = gen.stage1_sequences(grids["video"], grids["audio"], train.video, train.audio)
        val_seq = gen.stage1_sequences(val_grids["video"], val_grids["audio"], val.video, val.audio)
        model, projector = load_alignment(recipe, cell_dir, registries, seq["video"].shape[-1], seq["audio"].shape[-1])
        with torch.no_grad():
            out, val_out = model(seq["video"], seq["audio"]), model(val_seq["video"], val_seq["audio"])
            by_projector = cfg.condition_source == "projector"
            conditions = {
                "tv2a": (
                    (projector(seq["video"]), projector(val_seq["video"])) if by_projector else (out.hv, val_out.hv)
                ),
                "ta2v": (out.ha, val_out.ha),
            }
        targets = {direction: DIRECTIONS[direction] for direction in cfg.directions}
        texts = {t: (encode_text(gen.text_encoders[t], train.captions), encode_text(gen.text_encoders[t], val.captions))
                 for t in set(targets.values())}
        for module in gen.modules():
            # everything is encoded: leave the accelerator to the backbone being trained (moved by the Trainer)
            module.cpu()
        metrics: dict[str, float] = {}
        for direction, target in targets.items():
            text, val_text = texts[target]
            torch.manual_seed(recipe.seed)
            c = conditioned(gen, direction, recipe, in_place=True)
            c.backbone.train()
            objective = DiffusionObjective(c.backbone, gen.sampler, cfg.text_dropout, c.phi, cfg.text_only_dropout,
                                           cfg.text_swap, cfg.condition_dropout)
            trainer = Trainer(objective, cfg.train, seed=recipe.seed + 2, cpu=use_cpu(recipe.device),
                              checkpoint_dir=cell_dir / "checkpoints" / direction,
                              events=EventLog(cell_dir / "log.jsonl"), name=direction, tracking=recipe.tracking,
                              tracking_dir=cell_dir / "tracking")
            dev = trainer.device
            x, xv = grids[target].to(dev), val_grids[target].to(dev)
            extra, val_extra = (t.to(dev) for t in conditions[direction])
            tt = [t.to(dev) for t in (text.tokens, text.mask, text.null_tokens, text.null_mask)]
            vt = [t.to(dev) for t in (val_text.tokens, val_text.mask, val_text.null_tokens, val_text.null_mask)]

            def validate(obj: nn.Module, xv: torch.Tensor = xv, vt: list[torch.Tensor] = vt,
                         val_extra: torch.Tensor = val_extra) -> dict[str, float]:
                # the same noise with each clip's condition and with another clip's: equal losses mean
                # the condition is ignored
                out = {}
                for key, cond in (("loss", val_extra), ("loss_shuffled", val_extra.roll(1, 0))):
                    torch.manual_seed(0)
                    out[key] = float(obj(xv, vt[0], vt[1], vt[2], vt[3], cond)["loss"])
                return out

            last = trainer.fit(lambda idx: (x[idx], tt[0][idx], tt[1][idx], tt[2], tt[3], extra[idx]), len(x),
                               validate=validate, resume=context.resume)
            metrics[f"{direction}_val_loss"] = last.get("loss", float("nan"))
            metrics[f"{direction}_val_loss_shuffled"] = last.get("loss_shuffled", float("nan"))
            if trainer.is_main:
                c.save(cell_dir, direction)
            c.backbone.cpu()
        return metrics
