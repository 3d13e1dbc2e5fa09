"""Stage III: cascaded generation (App. C) with classifier-free guidance, outputs and checks.

Modes (``generate.mode``):

* ``two_stream``: T2V and T2A independently from the same text (Table 1's "Two-Streams");
* ``cascade``: T2V, then P_theta on the f_v latent of the generated video, then TV2A (unidirectional);
* ``cascade_bidirectional``: as ``cascade``, then the video generated again by TA2V from the text and
  the masked aligned latent of the generated audio (the audio is the same as in ``cascade``).
  Generated clips are decoded and encoded again before P_theta and Stage I read them (as any clip is),
  not read from the sampled grids, which can lie off the encoder's manifold (docs/generation.md);
* ``joint``: a model that generates both streams at once (``model.joint_generator``, e.g. LTX-2),
  the joint-generation baseline;
* ``v2a``: video-to-audio (Table 2): TV2A conditioned on P_theta of the test clips' *real* video and
  on their captions; the real test segments are written beside the generated ones as the paired
  reference of ``generate.metrics`` (KL, ISc, FD, FAD) unless ``generate.reference`` is set.
  ``generate.caption_shift`` gives clip i the caption of clip i + shift instead (counterfactual
  captions: does the audio follow the video or the text?).

Every sample's video and audio are checked against the prompt's ground truth when the dataset
knows it (``prompts`` / ``ground_truth_metrics``); Fréchet distances of the generated clips'
encoder embeddings against the test split are reported per modality (FVD- and FAD-like: they use
the world's own encoders, not I3D or VGGish).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sava_core.config import Recipe
from sava_core.contracts import Condition
from sava_core.io import atomic_write_json, atomic_write_text
from sava_core.metrics import frechet_distance, gaussian_stats
from sava_core.registry import Registries
from sava_core.stages.finetune import load_conditioned, load_stage1, stage1_sequences, video_sequence
from sava_core.stages.generation import (
    Generators,
    TextBatch,
    build_generators,
    encode_grids,
    encode_text,
    generation_device,
    load_media,
    media_dataset,
    module_device,
    uses_pretrain_stage,
)
from sava_core.stages.pretrain import recorded_weights

log = logging.getLogger("sava")


def _conditions(text: TextBatch, extra: Tensor | None = None) -> tuple[Condition, Condition]:
    """(conditional, unconditional) for guidance: the unconditional drops text and extra together."""
    n = text.tokens.shape[0]
    null = text.null_tokens.expand(n, -1, -1), text.null_mask.expand(n, -1)
    if extra is None:
        return Condition(text.tokens, text.mask), Condition(*null)
    on = torch.ones(extra.shape[:2], dtype=torch.bool, device=extra.device)
    return Condition(text.tokens, text.mask, extra, on), Condition(*null, extra, ~on)


@dataclass
class CascadeParts:
    """What the cascade adds to T2V / T2A: the Stage I model, P_theta, TV2A and TA2V (as needed)."""

    model: Any = None
    projector: Any = None
    tv2a: Any = None
    ta2v: Any = None


def load_parts(gen: Generators, recipe: Recipe, cell_dir: Path, registries: Registries) -> CascadeParts:
    mode = recipe.generate.mode
    if mode == "two_stream":
        return CascadeParts()
    model, projector = load_stage1(recipe, cell_dir, registries, gen.video_encoder.latent_dim, gen.audio_encoder.latent_dim)
    device = module_device(gen.t2v)
    ta2v = load_conditioned(gen, "ta2v", recipe, cell_dir) if mode == "cascade_bidirectional" else None
    parts = CascadeParts(model.to(device), projector.to(device), load_conditioned(gen, "tv2a", recipe, cell_dir), ta2v)
    for c in (parts.tv2a, parts.ta2v):
        if c is not None:
            c.backbone.to(device), c.phi.to(device)
    return parts


@torch.no_grad()
def generate(gen: Generators, recipe: Recipe, parts: CascadeParts, prompts: list[str], seed: int) -> dict[str, Any]:
    """Generate a clip per prompt in ``recipe.generate.mode``; returns grids, media and timings (s)."""
    mode = recipe.generate.mode
    texts = gen.text_encoders
    video_text = encode_text(texts["video"], prompts)
    audio_text = video_text if texts["audio"] is texts["video"] else encode_text(texts["audio"], prompts)
    g = torch.Generator().manual_seed(seed)
    n = len(prompts)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    video_grid = gen.sampler.sample(gen.t2v, *_conditions(video_text), n, g)
    timings["t2v"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    video = audio = None
    if mode == "two_stream":
        audio_grid = gen.sampler.sample(gen.t2a, *_conditions(audio_text), n, g)
    else:
        # generated clips are read through their decoded media, as f reads any clip (video_sequence's from_media)
        video = gen.video_vae.decode_grid(video_grid).clamp(0, 1)
        seq_v = video_sequence(gen, video_grid, video, from_media=True)
        cond, uncond = _conditions(audio_text, parts.tv2a.phi(parts.projector(seq_v)))
        audio_grid = gen.sampler.sample(parts.tv2a.backbone, cond, uncond, n, g)
        if mode == "cascade_bidirectional":
            timings["tv2a"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            audio = gen.audio_vae.decode_grid(audio_grid)
            seq = stage1_sequences(gen, video_grid, audio_grid, video, audio, from_media=True)
            ha = parts.model(seq["video"], seq["audio"]).ha
            cond, uncond = _conditions(video_text, parts.ta2v.phi(ha))
            video_grid, video = gen.sampler.sample(parts.ta2v.backbone, cond, uncond, n, g), None
    timings["second" if mode == "two_stream" else ("ta2v" if mode == "cascade_bidirectional" else "tv2a")] = time.perf_counter() - t0
    t0 = time.perf_counter()
    video = (gen.video_vae.decode_grid(video_grid).clamp(0, 1) if video is None else video).float().cpu()
    audio = (gen.audio_vae.decode_grid(audio_grid) if audio is None else audio).float().cpu()
    timings["decode"] = time.perf_counter() - t0
    return {"video_grid": video_grid.cpu(), "audio_grid": audio_grid.cpu(), "video": video, "audio": audio, "timings": timings}


def run(recipe: Recipe, cell_dir: Path, registries: Registries, resume: bool = False) -> dict[str, float]:
    """Generate the test prompts, write samples and return the checks."""
    cfg = recipe.generate
    data = media_dataset(recipe, registries)
    test = None
    if hasattr(data, "prompts") and cfg.mode != "v2a":
        pairs = data.prompts(cfg.prompts, cfg.prompt_seed)
        prompts, truth = [p for p, _ in pairs], [f for _, f in pairs]
    else:
        test = load_media(data, "test", cfg.prompts)
        shifted = [(i + cfg.caption_shift) % len(test.captions) for i in range(len(test.captions))]
        prompts = [test.captions[j] for j in shifted]
        # v2a on a world with ground truth: the real video's events and class against the generated
        # audio, and the caption's clip's factors as what the text asked for
        known = hasattr(data, "factors") and hasattr(data, "ground_truth_metrics")
        truth = [data.factors("test", j) for j in shifted] if known else None
    clip = data.media("test")[0]
    metrics: dict[str, float] = {}
    if cfg.mode == "v2a":
        assert test is not None
        gen = build_generators(recipe, registries, recorded_weights(cell_dir, recipe, required=uses_pretrain_stage(recipe, registries)))
        video, audio, timings = _video_to_audio(gen, recipe, load_parts(gen, recipe, cell_dir, registries), test.video, prompts)
    elif cfg.mode == "joint":
        video, audio, timings = _generate_joint(recipe, registries, prompts, clip.sample_rate, clip.audio.shape[0])
    else:
        gen = build_generators(recipe, registries, recorded_weights(cell_dir, recipe, required=uses_pretrain_stage(recipe, registries)))
        parts = load_parts(gen, recipe, cell_dir, registries)
        outs = _generate_all(gen, recipe, parts, prompts)
        video, audio, timings = outs["video"], outs["audio"], outs["timings"]
        metrics |= _frechet(gen, data, outs["video_grid"], outs["audio_grid"])
        if cfg.sensitivity:
            metrics |= _sensitivity(gen, recipe, parts, data)
    if truth is not None:
        metrics |= data.ground_truth_metrics(video, audio, truth, cfg.event_tolerance)
    metrics["seconds_per_clip"] = sum(timings.values()) / len(prompts)
    metrics |= {f"seconds_per_clip_{k}": v / len(prompts) for k, v in timings.items()}
    _save_samples(cell_dir / "samples", prompts, video, audio, clip.fps, clip.sample_rate, cfg.save_media)
    atomic_write_json(cell_dir / "samples" / "prompts.json", [{"index": i, "prompt": p} for i, p in enumerate(prompts)])
    if cfg.metrics:
        reference = cfg.reference
        if reference is None and cfg.mode == "v2a":
            assert test is not None
            reference = _write_clips(cell_dir / "eval" / "reference", test.captions, test.video, test.audio, clip.fps,
                                     clip.sample_rate)
        folder = _write_clips(cell_dir / "eval" / "clips", prompts, video, audio, clip.fps, clip.sample_rate)
        metrics |= _evaluate(cell_dir, folder, cfg.metrics, reference)
    return metrics


@torch.no_grad()
def _video_to_audio(gen: Generators, recipe: Recipe, parts: CascadeParts, videos: Tensor,
                    captions: list[str]) -> tuple[Tensor, Tensor, dict[str, float]]:
    """``generate.mode: v2a``: audio for real videos (N, F, 3, H, W) and their captions, by TV2A
    conditioned on P_theta of the video's f_v latents; batch b is seeded by (run seed, b)."""
    size, audios = recipe.generate.batch_size, []
    t0 = time.perf_counter()
    for start in range(0, len(captions), size):
        video = videos[start : start + size]
        text = encode_text(gen.text_encoders["audio"], captions[start : start + size])
        device = module_device(parts.projector)
        seq_v = video_sequence(gen, encode_grids(gen.video_vae, video), video).to(device)
        cond, uncond = _conditions(text, parts.tv2a.phi(parts.projector(seq_v)))
        g = torch.Generator().manual_seed(recipe.seed * 100_003 + start)
        grid = gen.sampler.sample(parts.tv2a.backbone, cond, uncond, len(video), g)
        audios.append(gen.audio_vae.decode_grid(grid).float().cpu())
    return videos, torch.cat(audios), {"tv2a": time.perf_counter() - t0}


def _write_clips(folder: Path, captions: list[str], video: Tensor, audio: Tensor, fps: float, sample_rate: int) -> Path:
    """Clips as ``clip-NNNNN.mp4`` (video + audio) with their captions in ``clip-NNNNN.txt``: the
    layout ``sava eval`` reads; generated and reference clips of the same index share a name."""
    from sava_core.media_io import write_mp4

    for i, caption in enumerate(captions):
        write_mp4(folder / f"clip-{i:05d}.mp4", video[i], fps, audio[i], sample_rate)
        atomic_write_text(folder / f"clip-{i:05d}.txt", caption)
    return folder


def _evaluate(cell_dir: Path, folder: Path, metrics: list[str], reference: str | Path | None) -> dict[str, float]:
    """``generate.metrics`` on the clips in ``folder``, as ``sava eval`` would compute them; the full
    document goes to ``eval/results.json``."""
    from sava_core.evaluation import evaluate

    result = evaluate(folder, metrics, reference=reference, out=cell_dir / "eval" / "results.json")
    return {f"{s['label']}_{key}" if key != s["label"] else key: float(v)
            for s in result.scores for key, v in s["values"].items()}


@torch.no_grad()
def _generate_joint(recipe: Recipe, registries: Registries, prompts: list[str], sample_rate: int,
                    channels: int) -> tuple[Tensor, Tensor, dict[str, float]]:
    """``generate.mode: joint``: both streams from ``model.joint_generator`` (e.g. LTX-2), audio
    resampled to the dataset's rate and downmixed to mono if the dataset is mono; the video must come
    at the dataset's frame rate."""
    from sava_core.errors import SavaError

    ref = recipe.model.joint_generator
    if ref is None:
        raise SavaError("generate.mode: joint needs model.joint_generator (e.g. {name: ltx2, params: {preset: tiny}})")
    if recipe.generate.sensitivity:
        raise SavaError("generate.sensitivity compares latents of the cascade's backbones; it is not available with mode joint")
    model = registries["joint_generator"].build(ref.name, ref.params).eval().to(generation_device(recipe))
    clip_fps = media_dataset(recipe, registries).media("test")[0].fps
    if abs(model.fps - clip_fps) > 1e-6:
        raise SavaError(f"model.joint_generator generates {model.fps} fps video but the dataset's clips are {clip_fps} fps; "
                        "set the generator's frame_rate or the dataset's fps so they agree")
    size = recipe.generate.batch_size
    videos, audios = [], []
    t0 = time.perf_counter()
    for start in range(0, len(prompts), size):
        g = torch.Generator().manual_seed(recipe.seed * 100_003 + start)
        video, audio = model.generate(prompts[start : start + size], g)
        videos.append(video.float().cpu())
        audios.append(audio.float().cpu())
    seconds = time.perf_counter() - t0
    audio = torch.cat(audios)
    if channels == 1 and audio.shape[1] > 1:
        audio = audio.mean(1, keepdim=True)
    if model.sample_rate != sample_rate:
        import torchaudio

        audio = torchaudio.functional.resample(audio, model.sample_rate, sample_rate)
    return torch.cat(videos).clamp(0, 1), audio.clamp(-1, 1), {"joint": seconds}


def _generate_all(gen: Generators, recipe: Recipe, parts: CascadeParts, prompts: list[str]) -> dict[str, Any]:
    """:func:`generate` over all prompts in batches; batch b is seeded by (run seed, b), so the same
    prompt position gets the same noise in every variant. Timings are summed (seconds)."""
    size = recipe.generate.batch_size
    outs = [generate(gen, recipe, parts, prompts[s : s + size], seed=recipe.seed * 100_003 + s)
            for s in range(0, len(prompts), size)]
    merged: dict[str, Any] = {k: torch.cat([o[k] for o in outs]) for k in ("video_grid", "audio_grid", "video", "audio")}
    merged["timings"] = {k: sum(o["timings"].get(k, 0.0) for o in outs) for k in outs[0]["timings"]}
    return merged


def _sensitivity(gen: Generators, recipe: Recipe, parts: CascadeParts, data: Any) -> dict[str, float]:
    """Appendix E: relative change of the generated audio (and video) latents when a prompt changes one
    non-audible attribute vs. one audible attribute, under the same seeds."""
    if not hasattr(data, "prompt_edits"):
        from sava_core.errors import SavaError

        raise SavaError(f"generate.sensitivity: dataset {recipe.data.name!r} cannot make prompt edits")
    edits = data.prompt_edits(recipe.generate.prompts, recipe.generate.prompt_seed)
    grids = {name: _generate_all(gen, recipe, parts, [p for p, _ in pairs]) for name, pairs in edits.items()}

    def change(name: str, key: str) -> float:
        a, b = grids["base"][key].flatten(1), grids[name][key].flatten(1)
        return float(((b - a).norm(dim=1) / a.norm(dim=1).clamp_min(1e-8)).mean())

    return {"audio_change_non_audible": change("non_audible", "audio_grid"),
            "audio_change_audible": change("audible", "audio_grid"),
            "video_change_non_audible": change("non_audible", "video_grid"),
            "video_change_audible": change("audible", "video_grid")}


@torch.no_grad()
def _frechet(gen: Generators, data: Any, video_grid: Tensor, audio_grid: Tensor) -> dict[str, float]:
    """Fréchet distances between time-pooled encoder latents of generated and test clips."""
    test = load_media(data, "test", 256)
    out = {}
    for name, enc, generated, reference in (("video", gen.video_vae, video_grid, test.video),
                                            ("audio", gen.audio_vae, audio_grid, test.audio)):
        ref = enc.grid_to_sequence(encode_grids(enc, reference)).mean(1)
        fake = enc.grid_to_sequence(generated).mean(1)
        if len(fake) < 2:
            continue
        out[f"fd_{name}_ae"] = float(frechet_distance(*gaussian_stats(fake.double()), *gaussian_stats(ref.double())))
    return out


def _save_samples(folder: Path, prompts: list[str], video: Tensor, audio: Tensor, fps: float, sample_rate: int,
                  limit: int) -> None:
    """mp4 (video + audio), wav and a keyframes-over-spectrogram PNG for the first ``limit`` samples."""
    from sava_core.media_io import save_av_figure, write_mp4, write_wav

    for i in range(min(limit, len(prompts))):
        stem = folder / f"sample-{i:03d}"
        write_mp4(stem.with_suffix(".mp4"), video[i], fps, audio[i], sample_rate)
        write_wav(stem.with_suffix(".wav"), audio[i], sample_rate)
        save_av_figure(stem.with_suffix(".png"), video[i], audio[i], fps, sample_rate, title=prompts[i])
