"""``sava eval``: score generated clips with the paper's metrics, each with its pinned protocol.

Register with ``app.command("eval")(eval_command)``. Importing this module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def eval_command(
    generated: Annotated[Path, typer.Argument(help="folder of generated clips (mp4 with audio, or wav/flac), or a "
                                              "manifest .csv/.jsonl with columns path, caption, id")],
    metric: Annotated[Optional[list[str]], typer.Option(
        "--metric", "-m",
        help="NAME [key=value ...] in one quoted argument, e.g. 'fad extractor_params.checkpoint=/w/vggish.pth'; "
             "dotted keys nest, label=NAME names the scores; repeatable; with --protocol, label=COLUMN replaces "
             "that column",
        show_default=False)] = None,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", "-r", help="reference clips (folder or manifest) or statistics saved with --save-stats")] = None,
    save_stats: Annotated[Optional[Path], typer.Option(
        "--save-stats",
        help="folder to write the reference statistics to (reuse them with --reference FOLDER)")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="write the scores and their protocols as JSON")] = None,
    protocol: Annotated[Optional[str], typer.Option(
        "--protocol", "-p", help="a benchmark's column set with its pinned settings: av-benchmark, javisbench "
                                 "(sava list eval_protocol)")] = None,
    weights: Annotated[Path, typer.Option(
        "--weights", help="with --protocol: the folder of the released weight files it reads (and their "
                          "SHA256SUMS)")] = Path("checkpoints"),
    strict: Annotated[bool, typer.Option(
        "--strict", help="stop at the first clip that cannot be read or lacks what a metric needs "
                         "(by default such clips are listed and left out)")] = False,
) -> None:
    """Score generated clips (FVD, FAD, FD, KL, ISc, CLAP score, AVHScore, CAVP similarity, AV-Align, IB-score,
    DeSync), one by one (--metric) or as a benchmark's column set (--protocol).

    Extractors load their weights only from local files checked by sha256 (docs/metrics.md). Clips
    that cannot be used are listed with the reason and left out (the scores' n_generated /
    n_reference count the rest), unless --strict."""
    from sava_cli.components import registries
    from sava_core.evaluation import evaluate, format_skipped, format_table
    from sava_core.media_io import map_large_allocations

    map_large_allocations()  # frames decoded one by one must not fragment the heap (docs/metrics.md, "Memory")

    result = evaluate(generated, metric or [], reference=reference, save_stats=save_stats, out=out,
                      registries=registries(), strict=strict, protocol=protocol, weights=weights)
    typer.echo(format_table(result.rows))
    preset = result.document["eval_protocol"]
    if preset and preset["not_in_sava"]:
        typer.echo(f"{preset['name']} columns sava does not compute:")
        for column, why in preset["not_in_sava"].items():
            typer.echo(f"  {column}: {why}")
    if result.skipped:
        typer.echo(format_skipped(result.skipped))
    if save_stats is not None:
        typer.echo(f"reference statistics: {save_stats}")
    if out is not None:
        typer.echo(f"scores and protocols: {out}")
