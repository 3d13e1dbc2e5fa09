"""A third-party stage: after Stage I, count the trained parameters of each part of the Stage I
model and of P_theta from the cell's weights file. Torch-free at import (safetensors is read in run)."""

from __future__ import annotations

from typing import ClassVar

from sava_core.config import Recipe
from sava_core.registry import Registries
from sava_core.stage import Stage, StageContext


class Stage1Size(Stage):
    """Writes ``stage1_size.json`` and returns ``params_<part>`` for q_v, q_a, m_v, m_a, g_a, g_v and the projector."""

    order: ClassVar[float] = 25  # after align (20), before finetune (30)

    def requires(self, recipe: Recipe, registries: Registries) -> list[str]:
        return [] if "align" in recipe.stages else ["reads the align stage's weights: add align before it"]

    def produces(self, recipe: Recipe) -> list[str]:
        return ["stage1_size.json"]

    def run(self, context: StageContext) -> dict[str, float]:
        from safetensors import safe_open

        from sava_core.io import atomic_write_json

        counts: dict[str, float] = {}
        with safe_open(str(context.cell_dir / "model.safetensors"), framework="pt") as weights:
            for key in weights.keys():
                part = key.split(".")[1] if key.startswith("align.") else "projector"
                shape = weights.get_slice(key).get_shape()
                n = 1
                for size in shape:
                    n *= size
                counts[f"params_{part}"] = counts.get(f"params_{part}", 0) + n
        atomic_write_json(context.cell_dir / "stage1_size.json", counts)
        return counts
