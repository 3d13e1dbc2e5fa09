"""``sava generate``: a finished run's SAVA on the user's own prompts or videos.

Text to audio-video: each prompt (``--prompt``, or a ``--prompts`` CSV / JSONL file with the
columns ``prompt`` and optionally ``id`` and ``seed``) becomes ``<id>.mp4`` (video with its sound),
``<id>.wav``, ``<id>.png`` (keyframes over the spectrogram) and ``<id>.txt`` (the prompt) in the
output folder, the layout ``sava eval`` reads. Prompts without their own seed are sampled in
batches of ``batch_size`` in file order, batch b seeded as the run's generate stage seeds it, so a
resumed call writes exactly what an uninterrupted one would; a prompt with a ``seed`` is sampled
alone under that seed.

Video to audio: each video is cut into windows of the run's clip length, each window resampled to
the run's frame rate and size (centre crop to its aspect, then area-resize), TV2A makes the audio of
every window from P_theta of its frames and the caption, and the windows' audio, trimmed to the
video's duration, is muxed onto the *original* video stream (copied, not re-encoded: its own frame
rate and size).

Resumable: clips already complete in the folder are skipped; ``generate.json`` records the settings
and a second call with other settings into the same folder is refused. ``generated.jsonl`` lists
every clip written (id, prompt or source, seed, files).

Several processes (``accelerate launch ... sava generate``): the batches (for videos: the videos)
are dealt out, k to process k mod n, a round of n at a time; each process writes the clips of its
own batches (each clip's files are its own), and after each round the main process appends every
process's rows to ``generated.jsonl`` and is the one that writes ``generate.json``. A batch gets
the seed it gets in one process, so the clips are the same.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from sava_core.config import path_name_problem
from sava_core.errors import SavaError
from sava_core.io import atomic_path, atomic_write_json, atomic_write_text, require_file
from sava_core.registry import Registries

#: ``--mode`` names of the paper's terms, and the registered generation modes they stand for.
MODE_ALIASES = {"unidirectional": "cascade", "bidirectional": "cascade_bidirectional", "two-stream": "two_stream"}
SETTINGS_FILE = "generate.json"
MANIFEST_FILE = "generated.jsonl"
CLIP_SUFFIXES = (".mp4", ".wav", ".png", ".txt")

T = TypeVar("T")


@dataclass(frozen=True)
class PromptItem:
    """One clip to make from text: its ``id`` (a file name stem), the prompt and an optional own seed."""

    id: str
    prompt: str
    seed: int | None = None


@dataclass(frozen=True)
class VideoItem:
    """One video to make audio for: ``id``, the file and its caption (may be empty)."""

    id: str
    path: Path
    caption: str = ""


@dataclass(frozen=True)
class GenerateOptions:
    """What ``sava generate`` may change of the run's own generation settings (None: the run's)."""

    variant: str | None = None
    run_seed: int | None = None
    mode: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    batch_size: int | None = None
    device: str | None = None


# ------------------------------------------------------------------------------------ inputs


def _check_id(clip_id: str, where: str) -> str:
    problem = path_name_problem(clip_id)
    if problem:
        raise SavaError(f"{where}: id {problem}; ids name the output files")
    return clip_id


def read_prompts(path: Path) -> list[PromptItem]:
    """A ``.csv`` (header) or ``.jsonl`` prompt file: ``prompt``, optional ``id`` and ``seed``."""
    require_file(path, "prompt file")
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise SavaError(f"{path}: a prompt file is .csv (with a header) or .jsonl, with a 'prompt' column")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SavaError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if path.suffix.lower() == ".csv":
        rows: list[Any] = list(csv.DictReader(text.splitlines()))
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise SavaError(f"{path}:{n}: not a JSON object: {err}") from None
    items = []
    for n, row in enumerate(rows, 1):
        where = f"{path}, row {n}"
        if not isinstance(row, dict) or not str(row.get("prompt") or "").strip():
            raise SavaError(f"{where}: no 'prompt' (columns: prompt, and optionally id and seed)")
        seed = row.get("seed")
        if seed not in (None, ""):
            try:
                seed = int(seed)
            except (TypeError, ValueError):
                raise SavaError(f"{where}: seed {seed!r} is not an integer") from None
        clip_id = str(row.get("id") or "").strip() or f"{path.stem}-{n:04d}"
        items.append(PromptItem(_check_id(clip_id, where), str(row["prompt"]).strip(),
                                None if seed in (None, "") else int(seed)))
    if not items:
        raise SavaError(f"{path}: the prompt file lists no prompts")
    return items


def prompt_items(prompts: Sequence[str], files: Sequence[Path]) -> list[PromptItem]:
    """``--prompt`` texts (ids ``prompt-000``, ...) and the rows of ``--prompts`` files, ids unique."""
    items = [PromptItem(f"prompt-{i:03d}", p.strip()) for i, p in enumerate(prompts)]
    if any(not it.prompt for it in items):
        raise SavaError("--prompt: a prompt is empty; give the text to generate from")
    for f in files:
        items += read_prompts(f)
    ids = [it.id for it in items]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise SavaError(f"prompt ids repeat ({', '.join(repeated[:5])}); each id names its output files")
    return items


def video_items(paths: Sequence[Path]) -> list[VideoItem]:
    """``--video`` arguments: video files, folders of ``*.mp4`` (a ``<stem>.txt`` beside a video is
    its caption) or manifests (``.csv`` / ``.jsonl`` with ``path`` and optionally ``caption``, ``id``)."""
    from sava_core.clips import ClipSet

    items: list[VideoItem] = []
    for path in paths:
        if path.is_dir() or path.suffix.lower() in (".csv", ".jsonl"):
            clips = ClipSet.from_path(path)
            items += [VideoItem(_check_id(e.id, str(path)), e.path, e.caption) for e in clips.entries]
        elif path.exists():
            txt = path.with_suffix(".txt")
            items.append(VideoItem(_check_id(path.stem, str(path)), path,
                                   txt.read_text().strip() if txt.is_file() else ""))
        else:
            raise SavaError(f"--video {path}: not found (give a video file, a folder of videos or a manifest)")
    ids = [it.id for it in items]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise SavaError(f"video ids repeat ({', '.join(repeated[:5])}); each id names its output files")
    return items


# ------------------------------------------------------------------------------------ the pipeline


def resolve_mode(name: str, registries: Registries) -> str:
    """A registered generation mode from ``--mode`` (``unidirectional``, ``bidirectional``,
    ``two-stream`` or a registered name)."""
    mode = MODE_ALIASES.get(name, name)
    if mode not in registries["generation_mode"]:
        known = ", ".join([*MODE_ALIASES, *registries["generation_mode"].names()])
        raise SavaError(f"--mode {name!r}: not a generation mode; use one of {known}")
    return mode


def open_run(run_dir: Path, registries: Registries, options: GenerateOptions, mode: str | None = None) -> Any:
    """The pipeline of ``run_dir``'s cell, with the options applied to a copy of its recipe, and
    the settings it will sample with (recorded in ``generate.json``)."""
    from sava_core.pipeline import SavaPipeline, find_cell
    from sava_core.recipe import check

    if not run_dir.is_dir():
        raise SavaError(f"{run_dir}: not a directory; give the run directory `sava run` wrote")
    cell, recipe = find_cell(run_dir, registries, options.variant, options.run_seed)
    data = recipe.model_dump(mode="json")
    sampler = data["model"]["sampler"]
    sampler["params"] = dict(sampler.get("params") or {})
    if options.steps is not None:
        sampler["params"]["steps"] = options.steps
    if options.guidance is not None:
        sampler["params"]["guidance_scale"] = options.guidance
    if options.batch_size is not None:
        data["generate"]["batch_size"] = options.batch_size
    if options.device is not None:
        data["device"] = options.device
    if options.seed is not None:
        data["seed"] = options.seed
    chosen, problems = check(data, registries)
    if chosen is None:
        raise SavaError("the options do not fit the run's recipe: "
                        + "; ".join(f"{p.path}: {p.message}" for p in problems[:3]))
    name = mode or (resolve_mode(options.mode, registries) if options.mode else chosen.generate.mode)
    pipe = SavaPipeline.from_cell(chosen, cell, registries, name)
    settings = {"run": str(run_dir.resolve()), "cell": str(cell.relative_to(run_dir)), "mode": name,
                "seed": chosen.seed, "sampler": chosen.model.sampler.model_dump(mode="json"),
                "batch_size": chosen.generate.batch_size}
    return pipe, settings


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to add clips made with other settings to a folder (a resumed call must match); every
    process checks, the main process records the settings."""
    from accelerate import PartialState

    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        if diff:
            raise SavaError(f"{out} holds clips made with other settings ({', '.join(diff)} differ); "
                            "use another --out, or remove the folder")
    if PartialState().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings)


def _complete(out: Path, clip_id: str) -> bool:
    return all((out / f"{clip_id}{s}").is_file() for s in CLIP_SUFFIXES)


def _append_manifest(out: Path, rows: list[dict[str, Any]]) -> None:
    path = out / MANIFEST_FILE
    known = {json.loads(line)["id"]: line for line in path.read_text().splitlines() if line} if path.is_file() else {}
    for row in rows:
        known[row["id"]] = json.dumps(row)
    atomic_write_text(path, "".join(line + "\n" for line in known.values()))


def _deal_out(tasks: Sequence[T], make: Callable[[T], list[dict[str, Any]]], size: Callable[[T], int],
              out: Path, bar: Any) -> list[str]:
    """Run ``make`` (which writes one task's clips and returns their manifest rows) on this process's
    tasks, task k on process k mod n, a round of n at a time; after each round the main process
    appends the round's rows, in task order, to the manifest. Every process calls it; returns the
    ids written by all, in task order. ``size``: a task's clips (what ``bar`` advances by)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    written: list[str] = []
    for first in range(0, len(tasks), state.num_processes):
        k = first + state.process_index
        rows = gather_object(make(tasks[k]) if k < len(tasks) else [])
        if rows and state.is_main_process:
            _append_manifest(out, rows)
        written += [row["id"] for row in rows]
        bar.advance(sum(size(t) for t in tasks[first : first + state.num_processes]))
    return written


def _check_prompt_lengths(pipe: Any, items: Sequence[PromptItem]) -> None:
    """A prompt longer than a text encoder reads would be cut silently: refuse it, naming the limit."""
    for encoder in {id(e): e for e in pipe.generators.text_encoders.values()}.values():
        limit = getattr(encoder, "max_tokens", None)
        if limit is None:
            continue
        for it in items:
            n = encoder.token_count(it.prompt)
            if n is not None and n > limit:
                raise SavaError(f"prompt {it.id!r} has {n} tokens; the text encoder {type(encoder).__name__} reads "
                                f"at most {limit} (the rest would be cut off): shorten it")


# ------------------------------------------------------------------------------------ text to audio-video


def generate_from_prompts(pipe: Any, settings: dict[str, Any], items: Sequence[PromptItem], out: Path) -> list[str]:
    """Write the clips of ``items`` into ``out`` (see the module docstring); returns the ids written
    by this call (complete ones are skipped)."""
    from sava_core.media_io import save_av_figure, write_mp4, write_wav
    from sava_core.pipeline import batch_seed
    from sava_core.progress import progress

    if pipe.mode.from_test_videos:
        raise SavaError(f"mode {settings['mode']} makes audio for videos: give --video, not --prompt")
    if pipe.generators is not None:
        _check_prompt_lengths(pipe, items)
    _check_settings(out, settings)
    clip = pipe.test_clip()
    size, base = settings["batch_size"], settings["seed"]
    shared = [it for it in items if it.seed is None]
    batches = [(shared[s : s + size], batch_seed(base, s)) for s in range(0, len(shared), size)]
    batches += [([it], batch_seed(it.seed, 0)) for it in items if it.seed is not None]

    def make(task: tuple[list[PromptItem], int]) -> list[dict[str, Any]]:
        batch, seed = task
        if all(_complete(out, it.id) for it in batch):
            return []
        result = pipe.mode.generate(pipe, [it.prompt for it in batch], seed, None)
        rows = []
        for i, it in enumerate(batch):
            if _complete(out, it.id):
                continue
            video, audio = result["video"][i], result["audio"][i]
            write_mp4(out / f"{it.id}.mp4", video, clip.fps, audio, clip.sample_rate)
            write_wav(out / f"{it.id}.wav", audio, clip.sample_rate)
            save_av_figure(out / f"{it.id}.png", video, audio, clip.fps, clip.sample_rate, title=it.prompt)
            atomic_write_text(out / f"{it.id}.txt", it.prompt + "\n")  # last: the clip is complete
            rows.append({"id": it.id, "prompt": it.prompt, "seed": seed, "batch": [b.id for b in batch],
                         "files": [f"{it.id}{s}" for s in CLIP_SUFFIXES]})
        return rows

    with progress("generate", len(items), unit="clip") as bar:
        return _deal_out(batches, make, lambda task: len(task[0]), out, bar)


# ------------------------------------------------------------------------------------ video to audio


@dataclass(frozen=True)
class ClipSpec:
    """What the run's models take: frames per window, frame rate, frame size, audio rate and channels."""

    frames: int
    fps: float
    height: int
    width: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def read_video_windows(path: Path, spec: ClipSpec) -> tuple[Any, float]:
    """The video at ``path`` as windows (W, spec.frames, 3, H, W) in [0, 1] at the spec's rate and
    size, and its duration in seconds. Frames are decoded one by one and shrunk at once, so a long
    high-resolution video never sits in memory at its own size."""
    import av
    import torch

    require_file(path, "video")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise SavaError(f"cannot read {path} as a video: {err}") from None
    with container:
        if not container.streams.video:
            raise SavaError(f"{path} has no video stream")
        stream = container.streams.video[0]
        times, frames = [], []
        try:
            for frame in container.decode(stream):
                small = frame.reformat(width=max(spec.width, 2) * 2, height=None, format="rgb24") \
                    if frame.width > 4 * spec.width else frame.to_rgb()
                img = torch.from_numpy(small.to_ndarray()).permute(2, 0, 1).float() / 255
                frames.append(_fit(img, spec.height, spec.width))
                times.append(float(frame.time if frame.time is not None else len(times) / float(stream.average_rate)))
        except av.error.FFmpegError as err:
            raise SavaError(f"cannot decode {path}: {err}") from None
    if not frames:
        raise SavaError(f"{path}: the video stream has no frames")
    rate = float(stream.average_rate or stream.guessed_rate or spec.fps)
    duration = times[-1] - times[0] + 1 / rate
    n_windows = max(1, math.ceil(duration / spec.seconds - 1e-6))
    grid = torch.tensor(times) - times[0]
    wanted = torch.arange(n_windows * spec.frames) / spec.fps
    index = (torch.searchsorted(grid, wanted + 1e-6, right=False) - 1).clamp(0, len(frames) - 1)
    video = torch.stack(frames)[index].reshape(n_windows, spec.frames, 3, spec.height, spec.width)
    return video, duration


def _fit(img: Any, height: int, width: int) -> Any:
    """(3, h, w) -> (3, height, width): centre crop to the target aspect, then area-resize."""
    import torch.nn.functional as F

    _, h, w = img.shape
    if h * width > w * height:  # too tall: crop rows
        keep = max(1, round(w * height / width))
        img = img[:, (h - keep) // 2 : (h - keep) // 2 + keep]
    else:
        keep = max(1, round(h * width / height))
        img = img[:, :, (w - keep) // 2 : (w - keep) // 2 + keep]
    return F.interpolate(img[None], size=(height, width), mode="area")[0].clamp(0, 1)


def mux_audio(source: Path, audio: Any, sample_rate: int, target: Path) -> None:
    """Write ``target``: ``source``'s first video stream copied packet by packet (its own codec,
    frame rate and size) with ``audio`` (C, S) in [-1, 1] as AAC; written atomically."""
    import av
    import numpy as np

    from sava_core.media_io import _layout

    samples = np.ascontiguousarray(audio.detach().clamp(-1, 1).float().cpu().numpy())
    with av.open(str(source)) as inp, atomic_path(target) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout: Any = out.add_stream("aac", rate=sample_rate)
        aout.layout = _layout(samples.shape[0])
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
        sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout=aout.layout.name)
        sound.sample_rate, sound.pts, sound.time_base = sample_rate, 0, Fraction(1, sample_rate)
        out.mux(aout.encode(sound))
        out.mux(aout.encode())


def generate_for_videos(pipe: Any, settings: dict[str, Any], items: Sequence[VideoItem], out: Path) -> list[str]:
    """Audio for each video, muxed onto it (see the module docstring); returns the ids written."""
    import torch

    from sava_core.media_io import save_av_figure, write_wav
    from sava_core.pipeline import batch_seed
    from sava_core.progress import progress

    _check_settings(out, settings)
    clip = pipe.test_clip()
    spec = ClipSpec(clip.video.shape[0], clip.fps, clip.video.shape[2], clip.video.shape[3], clip.sample_rate,
                    clip.audio.shape[0])
    size = settings["batch_size"]

    def make(task: tuple[int, VideoItem]) -> list[dict[str, Any]]:
        n, it = task
        if _complete(out, it.id):
            return []
        windows, duration = read_video_windows(it.path, spec)
        seed = batch_seed(settings["seed"], n)
        parts = [pipe.video_to_audio(windows[s : s + size], [it.caption] * len(windows[s : s + size]),
                                     seed + s)["audio"] for s in range(0, len(windows), size)]
        audio = torch.cat(list(torch.cat(parts)), dim=-1)[:, : round(duration * spec.sample_rate)]
        mux_audio(it.path, audio, spec.sample_rate, out / f"{it.id}.mp4")
        write_wav(out / f"{it.id}.wav", audio, spec.sample_rate)
        preview = windows.reshape(-1, *windows.shape[2:])[: round(duration * spec.fps)]
        save_av_figure(out / f"{it.id}.png", preview, audio, spec.fps, spec.sample_rate,
                       title=it.caption or it.path.name)
        atomic_write_text(out / f"{it.id}.txt", it.caption + "\n")
        return [{"id": it.id, "source": str(it.path), "caption": it.caption, "seed": seed,
                 "windows": len(windows), "seconds": round(duration, 6),
                 "files": [f"{it.id}{s}" for s in CLIP_SUFFIXES]}]

    with progress("video to audio", len(items), unit="video") as bar:
        return _deal_out(list(enumerate(items)), make, lambda task: 1, out, bar)


def default_out(run_dir: Path, settings: dict[str, Any]) -> Path:
    """``RUN_DIR/generated/<variant>-<mode>``."""
    variant = Path(settings["cell"]).parent.name
    return run_dir / "generated" / f"{variant}-{settings['mode']}"
