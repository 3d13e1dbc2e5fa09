"""Stage III: generation (App. C) in the recipe's ``generate.mode`` with classifier-free guidance,
the samples, and the checks of the generated clips.

The clips come from :class:`sava_core.pipeline.SavaPipeline` (the modes are in
:mod:`sava_core.modes`). Prompts: a world with ground truth (:class:`sava_core.contracts.GroundTruthWorld`)
samples test prompts whose factors it knows, and every sample's video and audio are checked against
them; otherwise the test clips' captions are the prompts. A mode that takes the test clips' real
videos (``v2a``) gets their captions, shifted by ``generate.caption_shift`` (counterfactual
captions: does the audio follow the video or the text?), and the real test segments are written
beside the generated ones as the paired reference of ``generate.metrics`` unless
``generate.reference`` is set. Fréchet distances of the generated clips' VAE latents against the
test split are reported per modality (FVD- and FAD-like: the world's own encoders, not I3D or VGGish).

Under ``accelerate launch`` every process samples its share of the batches (the pipeline gathers
them); the main process alone computes the checks and metrics and writes the samples and clips,
then hands its metrics to the others, so the cell's results are those of one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sava_core.config import Recipe
from sava_core.registry import Registries
from sava_core.stage import GenerationMode, Stage, StageContext

if TYPE_CHECKING:
    from sava_core.contracts import Dataset
    from sava_core.encoding import MediaSplit
    from sava_core.pipeline import SavaPipeline


class Generate(Stage):
    """Generate the test prompts, write samples and return the checks."""

    order: ClassVar[float] = 40
    summary: ClassVar[str] = "Stage III: T2V -> P_theta -> TV2A (or another generation mode), samples and checks"

    def requires(self, recipe: Recipe, registries: Registries) -> list[str]:
        cfg = recipe.generate
        mode: GenerationMode = registries["generation_mode"].build(cfg.mode)
        problems = []
        if mode.finetuned:
            missing = [s for s in ("align", "finetune") if s not in recipe.stages]
            if missing:
                problems.append(f"generate.mode {cfg.mode} samples with the fine-tuned {', '.join(mode.finetuned)}: "
                                f"add {' and '.join(missing)} to stages")
            directions = [d for d in mode.finetuned if d not in recipe.finetune.directions]
            if directions:
                problems.append(f"generate.mode {cfg.mode} needs {', '.join(d.upper() for d in directions)}: add "
                                f"{', '.join(directions)} to finetune.directions")
        if mode.uses_joint_generator:
            if recipe.model.joint_generator is None:
                problems.append(f"generate.mode {cfg.mode} needs model.joint_generator "
                                "(e.g. {name: ltx2, params: {preset: tiny}})")
            if cfg.sensitivity:
                problems.append(f"generate.sensitivity compares latents of the cascade's backbones; it is not "
                                f"available with mode {cfg.mode}")
        if cfg.caption_shift and not mode.from_test_videos:
            problems.append(f"generate.caption_shift pairs real test videos with other clips' captions; it needs "
                            f"a mode that takes the test videos (v2a), not {cfg.mode}")
        return problems

    def produces(self, recipe: Recipe) -> list[str]:
        return ["samples/prompts.json"]

    def run(self, context: StageContext) -> dict[str, float]:
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        from sava_core.contracts import GroundTruthWorld
        from sava_core.encoding import load_media, media_dataset
        from sava_core.pipeline import SavaPipeline

        recipe, cell_dir, registries = context.recipe, context.cell_dir, context.registries
        cfg = recipe.generate
        data = media_dataset(recipe, registries)
        mode: GenerationMode = registries["generation_mode"].build(cfg.mode)
        test, truth = None, None
        if isinstance(data, GroundTruthWorld) and not mode.from_test_videos:
            pairs = data.prompts(cfg.prompts, cfg.prompt_seed)
            prompts, truth = [p for p, _ in pairs], [f for _, f in pairs]
        else:
            test = load_media(data, "test", cfg.prompts)
            shifted = [(i + cfg.caption_shift) % len(test.captions) for i in range(len(test.captions))]
            prompts = [test.captions[j] for j in shifted]
            # on a world with ground truth: the real video's events and class against the generated
            # audio, and the caption's clip's factors as what the text asked for
            if isinstance(data, GroundTruthWorld):
                truth = [data.factors("test", j) for j in shifted]
        pipe = SavaPipeline.from_cell(recipe, cell_dir, registries)
        # sampling is shared by every process (each samples its batches, all get all of them) ...
        out = pipe(prompts, videos=test.video if (mode.from_test_videos and test is not None) else None)
        grids = "video_grid" in out and "audio_grid" in out
        sensitivity = pipe.sensitivity(data) if grids and cfg.sensitivity else {}
        # ... the checks and the files are the main process's
        metrics = _check_and_write(context, data, pipe, prompts, truth, test, out, sensitivity) \
            if PartialState().is_main_process else {}
        return broadcast_object_list([metrics])[0]


def _check_and_write(context: StageContext, data: Dataset, pipe: SavaPipeline, prompts: list[str],
                     truth: list[Any] | None, test: MediaSplit | None, out: dict[str, Any],
                     sensitivity: dict[str, float]) -> dict[str, float]:
    """The checks and metrics of the samples ``out`` (see :meth:`SavaPipeline.__call__`), and the
    samples, ``samples/prompts.json`` and the clips written."""
    from sava_core.contracts import GroundTruthWorld
    from sava_core.io import atomic_write_json
    from sava_core.media_io import save_samples, write_clips

    recipe, cell_dir, registries = context.recipe, context.cell_dir, context.registries
    cfg = recipe.generate
    clip = data.media("test")[0]
    video, audio, timings = out["video"], out["audio"], out["timings"]
    metrics: dict[str, float] = {}
    if "video_grid" in out and "audio_grid" in out:
        metrics |= pipe.frechet_to_test(data, out["video_grid"], out["audio_grid"]) | sensitivity
    if truth is not None and isinstance(data, GroundTruthWorld):
        metrics |= data.ground_truth_metrics(video, audio, truth, cfg.event_tolerance)
    metrics["seconds_per_clip"] = sum(timings.values()) / len(prompts)
    metrics |= {f"seconds_per_clip_{k}": v / len(prompts) for k, v in timings.items()}
    save_samples(cell_dir / "samples", prompts, video, audio, clip.fps, clip.sample_rate, cfg.save_media)
    listing: list[dict[str, Any]] = [{"index": i, "prompt": p} for i, p in enumerate(prompts)]
    if truth is not None and isinstance(data, GroundTruthWorld):  # each saved clip's own checks
        for i, entry in enumerate(listing[: cfg.save_media]):
            entry["checks"] = data.ground_truth_metrics(video[i : i + 1], audio[i : i + 1], truth[i : i + 1],
                                                        cfg.event_tolerance)
    atomic_write_json(cell_dir / "samples" / "prompts.json", listing)
    if cfg.metrics:
        reference: str | Path | None = cfg.reference
        if reference is None and pipe.mode.from_test_videos and test is not None:
            reference = write_clips(cell_dir / "eval" / "reference", test.captions, test.video, test.audio,
                                    clip.fps, clip.sample_rate)
        folder = write_clips(cell_dir / "eval" / "clips", prompts, video, audio, clip.fps, clip.sample_rate)
        metrics |= _evaluate(cell_dir, folder, cfg.metrics, reference, registries)
    return metrics


def _evaluate(cell_dir: Path, folder: Path, metrics: list[str], reference: str | Path | None,
              registries: Registries) -> dict[str, float]:
    """``generate.metrics`` on the clips in ``folder``, as ``sava eval`` would compute them; the full
    document goes to ``eval/results.json``."""
    from sava_core.evaluation import evaluate

    result = evaluate(
        folder, metrics, reference=reference, out=cell_dir / "eval" / "results.json", registries=registries
    )
    return {f"{s['label']}_{key}" if key != s["label"] else key: float(v)
            for s in result.scores for key, v in s["values"].items()}
