"""Runs a validated :class:`~sava_core.recipe.Plan`: every variant x seed cell, then the table."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sava_core.errors import SavaError
from sava_core.io import atomic_write_json, atomic_write_text
from sava_core.recipe import Plan
from sava_core.registry import Registries, get_registries, import_target
from sava_core.rundir import cell_dir, environment, read_metrics, read_resolved_hash, write_resolved, write_results
from sava_core.stages import STAGES

log = logging.getLogger("sava")


@dataclass
class RunResult:
    out: Path
    table: str
    cells: list[tuple[str, int, dict[str, float]]]


def prepare_out(out: Path, plan: Plan, resume: bool) -> None:
    """Create ``out``, or check that a resumed one belongs to the same resolved recipe."""
    if resume:
        if not out.exists():
            raise SavaError(f"--resume: {out} does not exist; run without --resume to start it")
        previous = read_resolved_hash(out)
        if previous != plan.hash:
            raise SavaError(
                f"--resume: {out} holds a run of a different recipe (hash {previous}, now {plan.hash}); "
                "use the same recipe and overrides, or a new --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise SavaError(f"--out {out} already holds files; pass --resume to continue that run or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def _file_logger(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "sava.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run_plan(plan: Plan, out: Path, *, resume: bool = False, registries: Registries | None = None) -> RunResult:
    """Run every cell of ``plan`` under ``out`` (skipping finished cells on resume) and write results."""
    registries = registries or get_registries()
    prepare_out(out, plan, resume)
    handler = _file_logger(out)
    try:
        write_resolved(out, plan.resolved, plan.hash)
        atomic_write_json(out / "environment.json", environment(registries))
        done: list[tuple[str, int, dict[str, float]]] = []
        for i, cell in enumerate(plan.cells, 1):
            folder = cell_dir(out, cell.variant, cell.seed)
            metrics_path = folder / "metrics.json"
            previous = read_metrics(metrics_path) if resume else None
            if previous is not None:
                log.info("[%d/%d] %s: finished earlier, kept", i, len(plan.cells), cell.key)
                done.append((cell.variant, cell.seed, previous))
                continue
            log.info("[%d/%d] %s", i, len(plan.cells), cell.key)
            print(f"[{i}/{len(plan.cells)}] {cell.key}", flush=True)
            folder.mkdir(parents=True, exist_ok=True)
            import yaml

            atomic_write_text(folder / "recipe.yaml", yaml.safe_dump(cell.recipe.model_dump(mode="json"), sort_keys=False))
            metrics: dict[str, float] = {}
            for stage in cell.recipe.stages:
                metrics |= import_target(STAGES[stage])(cell.recipe, folder, registries, resume=resume)
            atomic_write_json(metrics_path, metrics)
            done.append((cell.variant, cell.seed, metrics))
        base = plan.cells[0].recipe
        table = write_results(out, done, title=base.name, columns=base.report.columns or None,
                              sweep=plan.resolved.get("sweep") or {}, plot=base.report.plot)
        return RunResult(out, table, done)
    finally:
        log.removeHandler(handler)
        handler.close()


def default_out(recipe_name: str) -> Path:
    """``runs/<recipe name>-<UTC time>`` under the current directory (or $SAVA_RUNS)."""
    import datetime

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(os.environ.get("SAVA_RUNS", "runs")) / f"{recipe_name}-{stamp}"
