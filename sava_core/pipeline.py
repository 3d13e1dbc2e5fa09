"""Stage III as an object: a trained SAVA (T2V, T2A, Stage I with P_theta, TV2A / TA2V as the
mode needs) that turns prompts (or videos) into clips.

``SavaPipeline.from_run(run_dir)`` loads a finished run's cell; the ``generate`` stage builds it
with :meth:`SavaPipeline.from_cell`. Calling it runs the recipe's generation mode (a registered
:class:`sava_core.stage.GenerationMode`, see :mod:`sava_core.modes`) over the prompts in batches
of ``generate.batch_size``; batch b is seeded by (seed, b), so the same prompt position gets the same
noise in every variant. Under ``accelerate launch`` the batches are dealt out to the processes
(batch k to process k mod n) and gathered, so every process ends with the samples one process makes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from torch import Tensor, nn

from sava_core.alignment import AlignModel, load_alignment
from sava_core.conditioning import Conditioned, guidance_conditions, load_conditioned
from sava_core.config import Recipe
from sava_core.contracts import Dataset, GroundTruthWorld, JointGenerator
from sava_core.device import accelerator_device, module_device
from sava_core.encoding import TextBatch, encode_grids, encode_text, load_media, media_dataset
from sava_core.errors import SavaError
from sava_core.generators import Generators, build_generators, plugin_weights
from sava_core.metrics import frechet_distance, gaussian_stats
from sava_core.progress import progress
from sava_core.recipe import check
from sava_core.registry import Registries
from sava_core.stage import GenerationMode

T = TypeVar("T")


@dataclass
class SavaPipeline:
    """The networks one generation mode samples with; ``generators`` is None for a mode that uses
    only ``joint_generator``."""

    recipe: Recipe
    registries: Registries
    mode: GenerationMode
    generators: Generators | None = None
    alignment: AlignModel | None = None
    projector: nn.Module | None = None
    tv2a: Conditioned | None = None
    ta2v: Conditioned | None = None
    joint_generator: JointGenerator | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_cell(cls, recipe: Recipe, cell_dir: Path, registries: Registries, mode: str | None = None) -> SavaPipeline:
        """The pipeline of one run cell (``runs/<variant>/seed-<n>``) in ``mode`` (default: the recipe's)."""
        name = mode or recipe.generate.mode
        generation_mode: GenerationMode = registries["generation_mode"].build(name)
        if generation_mode.uses_joint_generator:
            ref = recipe.model.joint_generator
            if ref is None:
                raise SavaError(f"generate.mode: {name} needs model.joint_generator "
                                "(e.g. {name: ltx2, params: {preset: tiny}})")
            joint = (
                registries["joint_generator"].build(ref.name, ref.params).eval().to(accelerator_device(recipe.device))
            )
            return cls(recipe, registries, generation_mode, joint_generator=joint)
        gen = build_generators(recipe, registries, plugin_weights(recipe, registries, cell_dir))
        pipe = cls(recipe, registries, generation_mode, gen)
        if not generation_mode.finetuned:
            return pipe
        model, projector = load_alignment(recipe, cell_dir, registries, gen.video_encoder.latent_dim,
                                          gen.audio_encoder.latent_dim)
        device = module_device(gen.t2v)
        loaded = {d: load_conditioned(gen, d, recipe, cell_dir) for d in sorted(generation_mode.finetuned)}
        for c in loaded.values():
            c.backbone.to(device), c.phi.to(device)
        pipe.alignment, pipe.projector = model.to(device), projector.to(device)
        pipe.tv2a, pipe.ta2v = loaded.get("tv2a"), loaded.get("ta2v")
        return pipe

    @classmethod
    def from_run(cls, run_dir: str | Path, registries: Registries, variant: str | None = None,
                 seed: int | None = None, mode: str | None = None) -> SavaPipeline:
        """A finished run's pipeline: the cell of ``variant`` (default: the only one, or SAVA's first
        cascade) and ``seed`` (default: the lowest), in ``mode`` (default: the cell's)."""
        cell, recipe = find_cell(Path(run_dir), registries, variant, seed)
        return cls.from_cell(recipe, cell, registries, mode)

    # ------------------------------------------------------------------ sampling

    def __call__(self, prompts: list[str], videos: Tensor | None = None, seed: int | None = None) -> dict[str, Any]:
        """Clips for ``prompts`` (and ``videos``, (N, F, 3, H, W), for a mode that takes them) in
        batches; ``seed`` defaults to the recipe's. Returns ``video``, ``audio`` (and the latent
        grids where the mode samples them) over all prompts, and ``timings`` (seconds, summed over
        the batches). Under several processes every process must call it (it gathers the batches)."""
        from accelerate import PartialState
        from accelerate.utils import gather_object

        if self.mode.from_test_videos and videos is None:
            raise SavaError(f"generate.mode {self.recipe.generate.mode}: give the videos to make audio for")
        size, base = self.recipe.generate.batch_size, self.recipe.seed if seed is None else seed
        state = PartialState()
        mine = list(range(0, len(prompts), size))[state.process_index :: state.num_processes]
        done = []
        with progress(f"sampling ({self.recipe.generate.mode})", sum(len(prompts[s : s + size]) for s in mine),
                      unit="clip") as bar:
            for s in mine:
                done.append((s, self.mode.generate(self, prompts[s : s + size], batch_seed(base, s),
                                                   None if videos is None else videos[s : s + size])))
                bar.advance(len(done[-1][1]["audio"]))
        if state.num_processes > 1:  # gathered by pickling: CUDA tensors would unpickle onto the sender's device
            done = [(s, {k: v.cpu() if isinstance(v, Tensor) else v for k, v in o.items()}) for s, o in done]
        outs = [o for _, o in sorted(gather_object(done), key=lambda d: d[0])]
        keys = [k for k in ("video_grid", "audio_grid", "video", "audio") if all(k in o for o in outs)]
        merged: dict[str, Any] = {k: torch.cat([o[k] for o in outs]) for k in keys}
        merged["timings"] = {k: sum(o["timings"].get(k, 0.0) for o in outs) for k in outs[0]["timings"]}
        return merged

    def start(self, prompts: list[str], seed: int) -> CascadeSampling:
        """The sampling steps of one batch under one noise generator (what the modes compose)."""
        if self.generators is None:
            raise SavaError("this pipeline holds no T2V / T2A (it was built for a joint generator)")
        return CascadeSampling(self, prompts, seed)

    @torch.no_grad()
    def video_to_audio(self, videos: Tensor, captions: list[str], seed: int) -> dict[str, Any]:
        """TV2A for real videos (B, F, 3, H, W) and their captions, conditioned on P_theta of the
        videos' f_v latents."""
        gen, tv2a, projector = self._cascade()
        t0 = time.perf_counter()
        text = encode_text(gen.text_encoders["audio"], captions)
        device = module_device(projector)
        seq_v = gen.video_sequence(encode_grids(gen.video_vae, videos), videos).to(device)
        cond, uncond = guidance_conditions(text, tv2a.phi(projector(seq_v)))
        g = torch.Generator().manual_seed(seed)
        grid = gen.sampler.sample(tv2a.backbone, cond, uncond, len(videos), g)
        audio = gen.audio_vae.decode_grid(grid).float().cpu()
        return {"video": videos, "audio": audio, "timings": {"tv2a": time.perf_counter() - t0}}

    @torch.no_grad()
    def joint(self, prompts: list[str], seed: int) -> dict[str, Any]:
        """Both streams from the joint generator, at the dataset's frame rate, audio resampled to the
        dataset's rate and downmixed to mono when the dataset is mono."""
        model = self.joint_generator
        if model is None:
            raise SavaError("this pipeline has no joint generator (model.joint_generator)")
        test = self.test_clip()
        if abs(model.fps - test.fps) > 1e-6:
            raise SavaError(f"model.joint_generator generates {model.fps} fps video but the dataset's clips are "
                            f"{test.fps} fps; set the generator's frame_rate or the dataset's fps so they agree")
        t0 = time.perf_counter()
        video, audio = model.generate(prompts, torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - t0
        video, audio = video.float().cpu(), audio.float().cpu()
        if test.audio.shape[0] == 1 and audio.shape[1] > 1:
            audio = audio.mean(1, keepdim=True)
        if model.sample_rate != test.sample_rate:
            import torchaudio

            audio = torchaudio.functional.resample(audio, model.sample_rate, test.sample_rate)
        return {"video": video.clamp(0, 1), "audio": audio.clamp(-1, 1), "timings": {"joint": seconds}}

    def _cascade(self) -> tuple[Generators, Conditioned, nn.Module]:
        if self.generators is None or self.tv2a is None or self.projector is None:
            raise SavaError(f"generate.mode {self.recipe.generate.mode} needs TV2A and P_theta: run align and finetune")
        return self.generators, self.tv2a, self.projector

    def test_clip(self) -> Any:
        """The first test clip of the recipe's dataset (its rates and shapes are the outputs')."""
        return media_dataset(self.recipe, self.registries).media("test")[0]

    # ------------------------------------------------------------------ checks of generated clips

    @torch.no_grad()
    def frechet_to_test(self, data: Dataset, video_grid: Tensor, audio_grid: Tensor) -> dict[str, float]:
        """Fréchet distances between time-pooled VAE latents of generated and (up to 256) test clips
        (FVD- and FAD-like: the world's own encoders, not I3D or VGGish)."""
        gen = self.generators
        assert gen is not None
        test = load_media(data, "test", 256)
        out = {}
        for name, enc, generated, reference in (("video", gen.video_vae, video_grid, test.video),
                                                ("audio", gen.audio_vae, audio_grid, test.audio)):
            ref = enc.grid_to_sequence(encode_grids(enc, reference)).mean(1)
            fake = enc.grid_to_sequence(generated).mean(1)
            if len(fake) < 2:
                continue
            out[f"fd_{name}_ae"] = float(
                frechet_distance(*gaussian_stats(fake.double()), *gaussian_stats(ref.double()))
            )
        return out

    def sensitivity(self, data: Dataset) -> dict[str, float]:
        """Appendix E: relative change of the generated audio (and video) latents when a prompt changes
        one non-audible attribute vs. one audible attribute, under the same seeds."""
        cfg = self.recipe.generate
        if not isinstance(data, GroundTruthWorld) or type(data).prompt_edits is GroundTruthWorld.prompt_edits:
            raise SavaError(f"generate.sensitivity: dataset {self.recipe.data.name!r} cannot make prompt edits")
        edits = data.prompt_edits(cfg.prompts, cfg.prompt_seed)
        grids = {name: self([p for p, _ in pairs]) for name, pairs in edits.items()}

        def change(name: str, key: str) -> float:
            a, b = grids["base"][key].flatten(1), grids[name][key].flatten(1)
            return float(((b - a).norm(dim=1) / a.norm(dim=1).clamp_min(1e-8)).mean())

        return {"audio_change_non_audible": change("non_audible", "audio_grid"),
                "audio_change_audible": change("audible", "audio_grid"),
                "video_change_non_audible": change("non_audible", "video_grid"),
                "video_change_audible": change("audible", "video_grid")}


class CascadeSampling:
    """One batch's sampling steps under one noise generator, in the order a mode calls them."""

    def __init__(self, pipeline: SavaPipeline, prompts: list[str], seed: int):
        assert pipeline.generators is not None
        self.pipeline, self.gen, self.n = pipeline, pipeline.generators, len(prompts)
        texts = self.gen.text_encoders
        self.video_text: TextBatch = encode_text(texts["video"], prompts)
        self.audio_text: TextBatch = (self.video_text if texts["audio"] is texts["video"]
                                      else encode_text(texts["audio"], prompts))
        self.generator = torch.Generator().manual_seed(seed)
        self.timings: dict[str, float] = {}

    def timed(self, name: str, step: Callable[[], T]) -> T:
        """Run ``step`` and record its seconds under ``name``."""
        t0 = time.perf_counter()
        out = step()
        self.timings[name] = time.perf_counter() - t0
        return out

    @torch.no_grad()
    def t2v(self) -> Tensor:
        """Video grids from the text."""
        return self.gen.sampler.sample(self.gen.t2v, *guidance_conditions(self.video_text), self.n, self.generator)

    @torch.no_grad()
    def t2a(self) -> Tensor:
        """Audio grids from the text."""
        return self.gen.sampler.sample(self.gen.t2a, *guidance_conditions(self.audio_text), self.n, self.generator)

    @torch.no_grad()
    def tv2a(self, video_grid: Tensor) -> tuple[Tensor, Tensor]:
        """(audio grids, decoded video) by TV2A from the text and P_theta of the decoded video's f_v latent."""
        _, tv2a, projector = self.pipeline._cascade()
        video = self.gen.video_vae.decode_grid(video_grid).clamp(0, 1)
        seq_v = self.gen.video_sequence(video_grid, video, from_media=True)
        cond, uncond = guidance_conditions(self.audio_text, tv2a.phi(projector(seq_v)))
        return self.gen.sampler.sample(tv2a.backbone, cond, uncond, self.n, self.generator), video

    @torch.no_grad()
    def ta2v(self, video_grid: Tensor, video: Tensor, audio_grid: Tensor) -> tuple[Tensor, Tensor]:
        """(video grids, decoded audio) by TA2V from the text and Stage I's masked audio latent of the
        generated clip (its first video and its audio, read through their media)."""
        p = self.pipeline
        if p.ta2v is None or p.alignment is None:
            raise SavaError("the bidirectional cascade needs TA2V: add ta2v to finetune.directions")
        audio = self.gen.audio_vae.decode_grid(audio_grid)
        seq = self.gen.stage1_sequences(video_grid, audio_grid, video, audio, from_media=True)
        ha = p.alignment(seq["video"], seq["audio"]).ha
        cond, uncond = guidance_conditions(self.video_text, p.ta2v.phi(ha))
        return self.gen.sampler.sample(p.ta2v.backbone, cond, uncond, self.n, self.generator), audio

    @torch.no_grad()
    def finish(self, video_grid: Tensor, audio_grid: Tensor, video: Tensor | None = None,
               audio: Tensor | None = None) -> dict[str, Any]:
        """Decode what is not decoded yet; everything on the CPU in float32."""
        t0 = time.perf_counter()
        video = (self.gen.video_vae.decode_grid(video_grid).clamp(0, 1) if video is None else video).float().cpu()
        audio = (self.gen.audio_vae.decode_grid(audio_grid) if audio is None else audio).float().cpu()
        self.timings["decode"] = time.perf_counter() - t0
        return {"video_grid": video_grid.cpu(), "audio_grid": audio_grid.cpu(), "video": video, "audio": audio,
                "timings": self.timings}


def batch_seed(seed: int, start: int) -> int:
    """The noise seed of the batch that starts at prompt ``start`` of a call seeded ``seed``."""
    return seed * 100_003 + start


def find_cell(run_dir: Path, registries: Registries, variant: str | None, seed: int | None) -> tuple[Path, Recipe]:
    """The cell directory and recipe of ``variant`` / ``seed`` in a finished run directory."""
    cells = sorted(p.parent for p in (run_dir / "runs").glob("*/seed-*/metrics.json"))
    if not cells:
        raise SavaError(f"{run_dir} holds no finished run cell (runs/<variant>/seed-<n>/metrics.json); "
                        "give the directory a finished `sava run` wrote")
    variants = sorted({c.parent.name for c in cells})
    if variant is None:
        cascades = [v for v in variants if v != "two_stream"]
        variant = variants[0] if len(variants) == 1 else (cascades or variants)[0]
    if variant not in variants:
        raise SavaError(f"{run_dir}: no finished variant {variant!r}; finished: {', '.join(variants)}")
    seeds = sorted(int(c.name.removeprefix("seed-")) for c in cells if c.parent.name == variant)
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise SavaError(f"{run_dir}: variant {variant!r} has no finished seed {seed}; finished: {seeds}")
    cell = run_dir / "runs" / variant / f"seed-{seed}"
    recipe, problems = check(yaml.safe_load((cell / "recipe.yaml").read_text()), registries)
    if recipe is None:
        raise SavaError(f"{cell / 'recipe.yaml'} does not validate with the installed components "
                        f"({'; '.join(f'{p.path}: {p.message}' for p in problems[:3])}); "
                        "was it made by another version?")
    return cell, recipe
