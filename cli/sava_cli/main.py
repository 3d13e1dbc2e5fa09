"""The ``sava`` command. Listing and validation never import torch, diffusers or transformers."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from sava_cli.components import block, registries
from sava_cli.data_cmd import cache_app, data_app
from sava_cli.eval_cmd import eval_command
from sava_cli.generate_cmd import generate_command
from sava_core.errors import SavaError

app = typer.Typer(
    name="sava",
    help="SAVA: selective audio-visual alignment for text-to-audio-video generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

app.command("eval")(eval_command)
app.command("generate")(generate_command)
app.add_typer(data_app, name="data")
app.add_typer(cache_app, name="cache")

_state = {"debug": os.environ.get("SAVA_DEBUG", "") not in ("", "0")}

Overrides = Annotated[
    Optional[list[str]], typer.Argument(help="key=value overrides (YAML values), or ~key to delete", show_default=False)
]


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for errors")] = False,
    block_plugin: Annotated[
        Optional[list[str]],
        typer.Option("--block-plugin", help="do not load this plug-in (entry-point name); repeatable"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or progress lines")] = False,
) -> None:
    if debug:
        _state["debug"] = True
    if quiet:
        from sava_core.progress import set_quiet

        set_quiet(True)
    block(block_plugin or [])


def recipes_dir() -> Path:
    """The shipped recipes: ``recipes/`` next to the installed source tree."""
    import sava_core

    return Path(sava_core.__file__).resolve().parent.parent / "recipes"


def shipped_recipes() -> list[str]:
    root = recipes_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml")) if root.is_dir() else []


def resolve_recipe(recipe: str) -> Path:
    """A path, or the name of a shipped recipe (``quickstart``, ``paper/main.yaml``)."""
    path = Path(recipe)
    if path.exists():
        return path
    for candidate in (recipes_dir() / recipe, recipes_dir() / f"{recipe}.yaml"):
        if candidate.is_file():
            return candidate
    names = ", ".join(shipped_recipes()) or "(none found)"
    raise SavaError(f"recipe not found: {recipe}. Give a path, or one of the shipped recipes: {names}")


def _warn_failed_plugins() -> None:
    for p in registries().failures():
        typer.echo(f"warning: plug-in {p.name!r} ({p.distribution} {p.version}) failed to load: {p.reason}", err=True)


@app.command()
def validate(
    recipe: str,
    overrides: Overrides = None,
    build: Annotated[bool, typer.Option(
        "--build", help="also build every component at its configured size on the meta device (no weights, no "
        "memory) and run one step of each stage; print parameter counts and memory estimates")] = False,
) -> None:
    """Check a recipe (structure and every component's parameters) without running it."""
    from sava_core.recipe import plan

    path = resolve_recipe(recipe)
    p = plan(path, overrides or [], registries())
    _warn_failed_plugins()
    typer.echo(f"{path}: valid ({len(p.variants)} variant(s), {len(p.cells)} run(s), hash {p.hash})")
    if build:
        from sava_core.build_check import check_build

        typer.echo(check_build(p.cells[0].recipe, registries()).table())


@app.command()
def run(
    recipe: str,
    overrides: Overrides = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="run directory (default: runs/<name>-<time>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its checkpoints")] = False,
    shard: Annotated[
        Optional[str], typer.Option("--shard", help="I/N: run only the I-th of N disjoint parts of the grid")
    ] = None,
) -> None:
    """Run a recipe: every variant and seed, then print the comparison table.

    Under `accelerate launch` every process trains and the main process writes."""
    from sava_core.progress import is_main_process
    from sava_core.recipe import plan
    from sava_core.runner import default_out, parse_shard, run_plan, shard_cells

    path = resolve_recipe(recipe)
    p = plan(path, overrides or [], registries())
    parts = parse_shard(shard) if shard else None
    _warn_failed_plugins()
    if resume and out is None:
        raise SavaError("--resume needs --out DIR: the run directory to continue")
    out = out or default_out(p.cells[0].recipe.name + (f"-shard{parts[0]}of{parts[1]}" if parts else ""))
    main = is_main_process()  # under accelerate launch, the others print nothing
    if main:
        typer.echo(f"running {path} ({len(shard_cells(p.cells, parts))} of {len(p.cells)} run(s)) into {out}")
    result = run_plan(p, out, resume=resume, shard=parts, registries=registries())
    if main:
        typer.echo("")
        typer.echo(result.table)
        typer.echo(f"results: {out / 'results.md'} and {out / 'results.csv'}")


@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(help="run directories to merge (e.g. the shards of one recipe)")],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="where to write results.md/csv and plots (default: the only DIR)")
    ] = None,
    partial: Annotated[bool, typer.Option("--partial", help="merge even if some runs of the grid are missing")] = False,
) -> None:
    """Merge run directories into one results.md / results.csv and its plots."""
    from sava_core.runner import merge_runs

    if out is None:
        if len(dirs) > 1:
            raise SavaError("sava report: give --out DIR when merging several run directories")
        out = dirs[0]
    result = merge_runs(dirs, out, partial=partial, registries=registries())
    typer.echo(result.table)
    typer.echo(f"results: {out / 'results.md'} and {out / 'results.csv'}")


@app.command("list")
def list_components(
    kind: Annotated[Optional[str], typer.Argument(help="only this kind (adapter, mask, backbone, ...)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List registered components: name, kind, plug-in, distribution and version."""
    rows = [e.as_row() for e in registries().entries(kind)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("kind", "name", "plugin", "distribution", "version", "summary", box=None)
        for r in rows:
            table.add_row(r["kind"], r["name"], r["plugin"], r["distribution"], r["version"], r["summary"])
        Console(width=max(shutil.get_terminal_size().columns, 140)).print(table)
    _warn_failed_plugins()


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """The plug-ins found, and for each: loaded, blocked or failed (with why)."""
    infos = registries().plugins
    if as_json:
        typer.echo(json.dumps([vars(p) for p in infos], indent=2))
    else:
        for p in infos:
            extra = f"{p.components} component(s)" if p.status == "loaded" else p.reason
            typer.echo(f"{p.status:8} {p.name:16} {p.distribution} {p.version}  {extra}")
    if registries().failures():
        raise typer.Exit(1)


@app.command()
def cp(
    recipe: Annotated[str, typer.Argument(help="a shipped recipe, e.g. quickstart or paper/main.yaml")],
    dest: Annotated[Path, typer.Argument(help="file or directory to copy it to")],
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Copy a shipped recipe to edit it."""
    source = None
    for candidate in (recipes_dir() / recipe, recipes_dir() / f"{recipe}.yaml"):
        if candidate.is_file():
            source = candidate
    if source is None:
        raise SavaError(f"no shipped recipe {recipe!r}; shipped: {', '.join(shipped_recipes())}")
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise SavaError(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    typer.echo(f"copied {source.name} to {target}")


def main() -> None:
    """Entry point: user mistakes print one readable message and exit with code 2."""
    try:
        code = app(standalone_mode=False)  # a typer.Exit(code) is returned, not raised, in this mode
        sys.exit(code if isinstance(code, int) else 0)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 1 else exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SavaError as exc:
        if _state["debug"]:
            import traceback

            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
