"""Runs a validated :class:`~sava_core.recipe.Plan`: every variant x seed cell (or one shard of
them), then the comparison table. Works under ``accelerate launch``: every process trains, the
main process writes."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sava_core.errors import SavaError
from sava_core.io import atomic_write_json, atomic_write_text
from sava_core.recipe import Cell, Plan
from sava_core.registry import Registries, get_registries
from sava_core.rundir import (
    LOCK_FILE,
    cell_dir,
    collapse_flags,
    environment,
    read_metrics,
    read_resolved_hash,
    run_lock,
    write_resolved,
    write_results,
)
from sava_core.stage import Stage, StageContext

if TYPE_CHECKING:
    from accelerate import PartialState

log = logging.getLogger("sava")


@dataclass
class RunResult:
    out: Path
    table: str
    cells: list[tuple[str, int, dict[str, float]]]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) -> (I, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SavaError(f"--shard {text!r}: expected I/N, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise SavaError(f"--shard {text!r}: I must be between 1 and N")
    return i, n


def shard_cells(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """The I-th of N disjoint parts of the grid (round-robin, so each part mixes variants)."""
    if shard is None:
        return cells
    i, n = shard
    return [c for k, c in enumerate(cells) if k % n == i - 1]


def check_out(out: Path, plan: Plan, resume: bool) -> None:
    """Refuse to overwrite a run; on resume, insist on the same resolved recipe."""
    if resume:
        if not out.exists():
            raise SavaError(f"--resume: {out} does not exist; run without --resume to start it")
        previous = read_resolved_hash(out)
        if previous != plan.hash:
            raise SavaError(
                f"--resume: {out} holds a run of a different recipe (hash {previous}, now {plan.hash}); "
                "use the same recipe and overrides, or a new --out"
            )
    elif out.exists() and not out.is_dir():
        raise SavaError(f"--out {out} is a file; give a directory")
    elif out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise SavaError(f"--out {out} already holds files; pass --resume to continue that run or choose another --out")


def _claim(out: Path, plan: Plan, resume: bool, stack: ExitStack, main: bool) -> None:
    """Check ``out`` (:func:`check_out`) and lock it for the run's lifetime (:func:`run_lock`, held
    by ``stack``) on the main process; every process raises the main process's SavaError."""
    from accelerate.utils import broadcast_object_list

    failure: SavaError | None = None
    if main:
        try:
            check_out(out, plan, resume)
            out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(run_lock(out))
        except SavaError as exc:
            failure = exc
    message = broadcast_object_list([str(failure) if failure else None])[0]
    if failure:
        raise failure
    if message:
        raise SavaError(message)


def _warn(message: str) -> None:
    """A warning in sava.log and on stderr."""
    log.warning("%s", message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _file_logger(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "sava.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run_plan(
    plan: Plan,
    out: Path,
    *,
    resume: bool = False,
    shard: tuple[int, int] | None = None,
    registries: Registries | None = None,
) -> RunResult:
    """Run the cells of ``plan`` (one shard of them if given) under ``out``; skip finished cells on
    resume; write the results of the cells run here. ``out`` is locked while the run lasts (another
    run into it fails at once); a stage's metrics that :func:`~sava_core.rundir.collapse_flags` flags
    are warned about. ``registries``: the components to build from (default:
    :func:`~sava_core.registry.get_registries`; pass the ones the plan was made with)."""
    from accelerate import PartialState

    from sava_core.device import use_cpu

    state = PartialState(cpu=use_cpu(plan.cells[0].recipe.device))
    main = state.is_main_process
    registries = registries or get_registries()
    with ExitStack() as stack:
        _claim(out, plan, resume, stack, main)
        return _run_cells(plan, out, resume, shard, registries, state)


def _run_cells(plan: Plan, out: Path, resume: bool, shard: tuple[int, int] | None, registries: Registries,
               state: PartialState) -> RunResult:
    """The body of :func:`run_plan`, once ``out`` is checked and locked."""
    main = state.is_main_process
    handler = None
    if main:
        handler = _file_logger(out)
        write_resolved(out, plan.resolved, plan.hash)
        atomic_write_json(out / "environment.json", environment(registries) | {"processes": state.num_processes})
        if shard:
            atomic_write_json(out / "shard.json", {"index": shard[0], "count": shard[1]})
    state.wait_for_everyone()
    try:
        cells = shard_cells(plan.cells, shard)
        done: list[tuple[str, int, dict[str, float]]] = []
        for i, cell in enumerate(cells, 1):
            folder = cell_dir(out, cell.variant, cell.seed)
            metrics_path = folder / "metrics.json"
            previous = read_metrics(metrics_path) if resume else None
            if previous is not None:
                log.info("[%d/%d] %s: finished earlier, kept", i, len(cells), cell.key)
                done.append((cell.variant, cell.seed, previous))
                continue
            if main:
                log.info("[%d/%d] %s", i, len(cells), cell.key)
                print(f"[{i}/{len(cells)}] {cell.key}", flush=True)
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_text(
                    folder / "recipe.yaml", yaml.safe_dump(cell.recipe.model_dump(mode="json"), sort_keys=False)
                )
            state.wait_for_everyone()
            metrics: dict[str, float] = {}
            context = StageContext(cell.recipe, folder, registries, resume)
            for name in cell.recipe.stages:
                stage: Stage = registries["stage"].build(name)
                produced = stage.run(context)
                metrics |= produced
                if main:
                    for flag in collapse_flags(produced):
                        _warn(f"{cell.key}: {flag} after the {name} stage; {flag.hint}")
                missing = [f for f in stage.produces(cell.recipe) if main and not (folder / f).is_file()]
                if missing:
                    raise SavaError(f"{cell.key}: the stage {name!r} did not write {', '.join(missing)} (it promises "
                                    "them to the stages after it); see sava.log")
                state.wait_for_everyone()  # the next stage reads what the main process just wrote
            if main:
                atomic_write_json(metrics_path, metrics)
            done.append((cell.variant, cell.seed, metrics))
        table = ""
        if main:
            table = write_report(out, plan, done)
        state.wait_for_everyone()
        return RunResult(out, table, done)
    finally:
        if handler:
            log.removeHandler(handler)
            handler.close()


def write_report(out: Path, plan: Plan, done: list[tuple[str, int, dict[str, float]]],
                 cell_dirs: dict[tuple[str, int], Path] | None = None) -> str:
    """results.csv / results.md / plots / results.html of ``done`` cells, in the plan's order
    (``cell_dirs``: where each cell is, when not under ``out``)."""
    base = plan.cells[0].recipe
    return write_results(out, done, title=base.name, columns=base.report.columns or None,
                         sweep=plan.resolved.get("sweep") or {}, plot=base.report.plot, cell_dirs=cell_dirs)


def default_out(recipe_name: str) -> Path:
    """``runs/<recipe name>-<UTC time>`` under the current directory (or $SAVA_RUNS)."""
    import datetime

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(os.environ.get("SAVA_RUNS", "runs")) / f"{recipe_name}-{stamp}"


GRID_KEYS = ("variants", "sweep", "seeds", "seed")


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def merge_runs(
    dirs: list[Path], out: Path, *, partial: bool = False, registries: Registries | None = None
) -> RunResult:
    """Merge run directories (e.g. shards of one grid) into one results table under ``out``.

    Refuses runs whose resolved recipes differ outside the grid's keys (variants, sweep, seeds).
    Cells are ordered as in the first run's grid; a cell of that grid found in no directory is an
    error unless ``partial``."""
    from sava_core.recipe import plan_data

    recipes = []
    for d in dirs:
        path = d / "resolved.yaml"
        if not path.is_file():
            raise SavaError(f"{d} is not a run directory (no resolved.yaml)")
        recipes.append(yaml.safe_load(path.read_text()))
    core = lambda r: {k: v for k, v in r.items() if k not in GRID_KEYS}  # noqa: E731
    for d, r in zip(dirs[1:], recipes[1:]):
        diff = _differences(core(recipes[0]), core(r))
        if diff:
            raise SavaError(
                f"cannot merge {dirs[0]} and {d}: their recipes differ outside the grid at {', '.join(diff)}"
            )
    plan = plan_data(recipes[0], registries=registries, source=str(dirs[0] / "resolved.yaml"))
    found: dict[tuple[str, int], tuple[Path, dict[str, float]]] = {}
    for d in dirs:
        for metrics_path in sorted((d / "runs").glob("*/seed-*/metrics.json")):
            metrics = read_metrics(metrics_path)
            if metrics is None:
                continue
            key = (metrics_path.parent.parent.name, int(metrics_path.parent.name.removeprefix("seed-")))
            if key in found and found[key][1] != metrics:
                raise SavaError(f"{key[0]}/seed-{key[1]} is in {found[key][0]} and {d} with different metrics")
            found.setdefault(key, (d, metrics))
    order = [(c.variant, c.seed) for c in plan.cells]
    missing = [f"{v}/seed-{s}" for v, s in order if (v, s) not in found]
    if missing and not partial:
        raise SavaError(
            f"missing runs (not finished in any directory): {', '.join(missing)}; pass --partial to merge anyway"
        )
    order += [k for k in found if k not in order]
    done = [(v, s, found[(v, s)][1]) for v, s in order if (v, s) in found]
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        atomic_write_json(out / "merged_from.json", {"runs": [str(d) for d in dirs], "recipe_hash": plan.hash})
        where = {(v, s): cell_dir(found[(v, s)][0], v, s) for v, s, _ in done}
        return RunResult(out, write_report(out, plan, done, where), done)
