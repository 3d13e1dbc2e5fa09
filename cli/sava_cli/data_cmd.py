"""``sava data check`` and ``sava cache info / clear``. Torch is imported inside the commands only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sava_core.errors import SavaError

data_app = typer.Typer(help="Real datasets: check manifests and media files.", no_args_is_help=True,
                       add_completion=False, rich_markup_mode=None)
cache_app = typer.Typer(help="The latent cache of frozen-encoder outputs "
                             "($SAVA_CACHE/latents; SAVA_CACHE defaults to ~/.cache/sava).",
                        no_args_is_help=True, add_completion=False, rich_markup_mode=None)

RootOption = Annotated[Optional[Path], typer.Option(
    "--root", help="cache root (default: $SAVA_CACHE/latents; SAVA_CACHE defaults to ~/.cache/sava)")]


@data_app.command()
def check(
    manifest: Annotated[Path, typer.Argument(help="the manifest: folder CSV/JSONL, VGGSound CSV, or AudioCaps CSV(s)")],
    kind: Annotated[str, typer.Option("--kind", help="dataset kind: folder, vggsound or audiocaps")] = "folder",
    media_root: Annotated[Optional[Path], typer.Option(
        "--media-root", help="folder of the media files (default: the manifest's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Decode every file of every split and report every problem, without training.

    Exits with code 2 when there is any problem."""
    from pydantic import ValidationError

    from sava_cli.components import registries

    if kind not in ("folder", "vggsound", "audiocaps"):
        raise SavaError(f"--kind must be folder, vggsound or audiocaps, not {kind!r}")
    params = {"manifest": str(manifest), **({"media_root": str(media_root)} if media_root else {})}
    try:
        dataset = registries()["dataset"].build(kind, params)
    except ValidationError as exc:
        raise SavaError(f"{kind}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                for e in exc.errors())) from None
    files = len({(s.video, s.audio) for split in dataset.splits for s in dataset.sources(split)})
    problems = dataset.check()
    if as_json:
        typer.echo(json.dumps({"manifest": str(manifest), "kind": kind, "clips": files,
                               "problems": [{"path": p.path, "reason": p.reason} for p in problems]}, indent=2))
    else:
        for p in problems:
            typer.echo(f"{p.path}: {p.reason}")
        bad = len({p.path for p in problems})
        typer.echo(f"{files} clip(s) checked: {files - bad} usable, {bad} with problems ({len(problems)} problem(s))")
    if problems:
        raise typer.Exit(2)


@cache_app.command()
def info(
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the cache entries: key, split, dataset, encoders, items, size."""
    from sava_core.cache import cache_info, resolve_root

    rows = cache_info(root)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no cache entries in {resolve_root(root)}")
        return
    for r in rows:
        state = "complete" if r["complete"] else "partial"
        typer.echo(f"{r['key']}  {r['split']:5}  {r['items']:7d} item(s)  {r['shards']:3d} shard(s)  "
                   f"{r['bytes'] / 2**20:8.1f} MiB  {state:8}  skipped {r['skipped']}  {r['updated']}\n"
                   f"    dataset {r['dataset']}  video {r['video_encoder']}  audio {r['audio_encoder']}")


@cache_app.command()
def clear(
    root: RootOption = None,
    key: Annotated[Optional[str], typer.Option("--key", help="only this entry (a unique key prefix)")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Delete one cache entry (--key) or all of them."""
    from sava_core.cache import cache_clear, resolve_root

    what = f"cache entry {key}" if key else f"every cache entry in {resolve_root(root)}"
    if not yes and not typer.confirm(f"delete {what}?"):
        raise typer.Exit(1)
    removed = cache_clear(root, key)
    typer.echo(f"deleted {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}"
               + (f": {', '.join(removed)}" if removed else ""))
