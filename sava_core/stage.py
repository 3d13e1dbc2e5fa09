"""Contracts of the run's steps: stages (``stages:`` of a recipe) and generation modes
(``generate.mode``). Torch-free, so that ``sava validate`` checks a recipe's stage list and mode
without importing torch: subclasses keep their heavy imports inside :meth:`Stage.run` and
:meth:`GenerationMode.generate`.

Both are registered like any component (kinds ``stage`` and ``generation_mode``) and constructed
without parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sava_core.config import Recipe
    from sava_core.registry import Registries


@dataclass(frozen=True)
class StageContext:
    """What a stage runs on: one cell of the grid (a variant x seed) and its directory."""

    recipe: Recipe
    cell_dir: Path
    registries: Registries
    resume: bool = False


class Stage(ABC):
    """One step of a run, executed once per cell in the order of the recipe's ``stages``.

    ``order``: where the stage stands among the others (a recipe lists its stages in ascending
    order; the built-in ones are align 20, finetune 30, generate 40; a world's pretraining 10).
    ``requires(recipe, registries)``: problems with the rest of the recipe, as readable sentences
    (a stage that needs another stage's output says which to add). ``produces(recipe)``: the files
    it writes in the cell directory, which later stages read (the runner checks they exist after the
    stage ran). ``run`` returns the cell's metrics.
    """

    order: ClassVar[float]
    summary: ClassVar[str] = ""

    def requires(self, recipe: Recipe, registries: Registries) -> list[str]:
        """What this stage needs of the recipe and is missing (empty: nothing)."""
        return []

    def produces(self, recipe: Recipe) -> list[str]:
        """Files (relative to the cell directory) this stage writes for the stages after it."""
        return []

    @abstractmethod
    def run(self, context: StageContext) -> dict[str, float]:
        """Run on one cell; files go under ``context.cell_dir``; returns metrics (name -> number)."""


class GenerationMode(ABC):
    """A way of producing a clip per prompt in Stage III (``generate.mode``).

    ``finetuned``: the Stage II directions it samples with (it then needs the align and finetune
    stages); ``from_test_videos``: it is given the test clips' real videos instead of making them;
    ``uses_joint_generator``: it samples ``model.joint_generator`` instead of T2V / T2A.
    ``generate(pipeline, prompts, seed, videos)`` returns a dict with ``video`` (B, F, 3, H, W) in
    [0, 1], ``audio`` (B, C, S) in [-1, 1], ``timings`` (seconds by step), and the latent grids
    ``video_grid`` / ``audio_grid`` where the mode samples them.
    """

    finetuned: ClassVar[tuple[str, ...]] = ()
    from_test_videos: ClassVar[bool] = False
    uses_joint_generator: ClassVar[bool] = False

    @abstractmethod
    def generate(self, pipeline: Any, prompts: list[str], seed: int, videos: Any = None) -> dict[str, Any]:
        """Clips for ``prompts`` (and ``videos`` when ``from_test_videos``) under the noise of ``seed``."""
