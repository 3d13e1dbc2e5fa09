"""``sava generate``: new clips from a finished run, for the user's own prompts or videos.

Register with ``app.command("generate")(generate_command)``. Importing this module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def generate_command(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (what `sava run` wrote)")],
    prompt: Annotated[Optional[list[str]], typer.Option(
        "--prompt", "-p", help="text to make a video with its sound from; repeatable", show_default=False)] = None,
    prompts: Annotated[Optional[list[Path]], typer.Option(
        "--prompts", help="CSV (header) or JSONL file with columns prompt, and optionally id and seed; repeatable",
        show_default=False)] = None,
    video: Annotated[Optional[list[Path]], typer.Option(
        "--video", help="video to make audio for (TV2A): a file, a folder of mp4 (captions in <stem>.txt) or a "
                        "manifest with path, caption, id; repeatable", show_default=False)] = None,
    variant: Annotated[Optional[str], typer.Option(
        "--variant", help="the run's variant to use (default: the only one, or SAVA's first)")] = None,
    run_seed: Annotated[Optional[int], typer.Option(
        "--run-seed", help="which trained seed of the variant (default: the lowest)")] = None,
    mode: Annotated[Optional[str], typer.Option(
        "--mode", help="unidirectional, bidirectional, two-stream, or a registered generation mode "
                       "(default: the run's)")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="noise seed (default: the run's)")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="denoising steps (default: the run's)")] = None,
    guidance: Annotated[Optional[float], typer.Option(
        "--guidance", help="classifier-free guidance scale (default: the run's)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="clips sampled together")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda (default: the run's)")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="folder for the clips (default: RUN_DIR/generated/<variant>-<mode>)")] = None,
) -> None:
    """Make clips with a finished run's SAVA: text to audio-video (--prompt / --prompts) or video to
    audio (--video). Writes <id>.mp4, .wav, .png and .txt per clip; clips already there are kept.

    Under `accelerate launch` the processes share the batches (or videos) out."""
    from sava_cli.components import registries
    from sava_core.errors import SavaError
    from sava_core.inference import (
        GenerateOptions,
        default_out,
        generate_for_videos,
        generate_from_prompts,
        open_run,
        prompt_items,
        video_items,
    )

    texts, files, videos = prompt or [], prompts or [], video or []
    if not (texts or files or videos):
        raise SavaError("sava generate: give --prompt TEXT, --prompts FILE or --video CLIP")
    if videos and (texts or files):
        raise SavaError("sava generate: give prompts or videos, not both (run it twice)")
    if videos and mode is not None:
        raise SavaError("sava generate --video: the mode is video to audio (TV2A); leave --mode out")
    options = GenerateOptions(variant, run_seed, mode, seed, steps, guidance, batch_size, device)
    clips = video_items(videos) if videos else None
    texts_in = None if videos else prompt_items(texts, files)  # inputs are checked before any model loads
    pipe, settings = open_run(run_dir, registries(), options, mode="v2a" if videos else None)
    folder = out or default_out(run_dir, settings)
    if clips is not None:
        total, written = len(clips), generate_for_videos(pipe, settings, clips, folder)
    else:
        assert texts_in is not None
        total, written = len(texts_in), generate_from_prompts(pipe, settings, texts_in, folder)
    from accelerate import PartialState

    kept = total - len(written)
    if PartialState().is_main_process:
        typer.echo(f"{len(written)} clip(s) written to {folder}" + (f" ({kept} already there)" if kept else ""))
