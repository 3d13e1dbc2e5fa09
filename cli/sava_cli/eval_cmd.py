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
    metric: Annotated[list[str], typer.Option(
        "--metric", "-m",
        help="NAME [key=value ...] in one quoted argument, e.g. 'fad extractor_params.checkpoint=/w/vggish.pth'; "
             "dotted keys nest, label=NAME names the scores; repeatable",
        show_default=False)],
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", "-r", help="reference clips (folder or manifest) or statistics saved with --save-stats")] = None,
    save_stats: Annotated[Optional[Path], typer.Option(
        "--save-stats",
        help="folder to write the reference statistics to (reuse them with --reference FOLDER)")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="write the scores and their protocols as JSON")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="stop at the first clip that cannot be read or lacks what a metric needs "
                         "(by default such clips are listed and left out)")] = False,
) -> None:
    """Score generated clips (FVD, FAD, FD, KL, ISc, CLAP score, AVHScore, CAVP similarity).

    Extractors load their weights only from local files checked by sha256 (docs/metrics.md). Clips
    that cannot be used are listed with the reason and left out (the scores' n_generated /
    n_reference count the rest), unless --strict."""
    from sava_cli.components import registries
    from sava_core.evaluation import evaluate, format_skipped, format_table

    result = evaluate(generated, metric, reference=reference, save_stats=save_stats, out=out,
                      registries=registries(), strict=strict)
    typer.echo(format_table(result.rows))
    if result.skipped:
        typer.echo(format_skipped(result.skipped))
    if save_stats is not None:
        typer.echo(f"reference statistics: {save_stats}")
    if out is not None:
        typer.echo(f"scores and protocols: {out}")
