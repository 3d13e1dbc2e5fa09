"""Run directories: the resolved recipe, the environment, per-cell metrics and the comparison table.

Layout of ``--out DIR``::

    resolved.yaml              the fully resolved recipe (after overrides) and its hash
    environment.json           Python, torch, CUDA, platform and every plug-in's version
    sava.log                   the run's log
    runs/<variant>/seed-<k>/   recipe.yaml, log.jsonl, checkpoints/, model.safetensors, metrics.json
    results.csv                one row per variant and seed
    results.md                 mean and spread (sample std over seeds) per variant
    plots/*.png                one plot per metric (per swept key for a sweep)
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from sava_core import __version__
from sava_core.io import atomic_write_json, atomic_write_text, atomic_write_with
from sava_core.registry import Registries

ID_COLUMNS = ("variant", "seed")


def environment(registries: Registries) -> dict[str, Any]:
    """Versions of everything that can change a result."""
    import torch

    env: dict[str, Any] = {
        "sava": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch_threads": torch.get_num_threads(),
        "plugins": [
            {
                "name": p.name, "distribution": p.distribution, "version": p.version,
                "status": p.status, "reason": p.reason,
            }
            for p in registries.plugins
        ],
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent)
        if commit.returncode == 0:
            env["sava_git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def write_resolved(out: Path, resolved: dict[str, Any], recipe_hash: str) -> None:
    text = f"# recipe hash: {recipe_hash}\n" + yaml.safe_dump(resolved, sort_keys=False)
    atomic_write_text(out / "resolved.yaml", text)


def read_resolved_hash(out: Path) -> str | None:
    path = out / "resolved.yaml"
    if not path.exists():
        return None
    first = path.read_text().splitlines()[0]
    return first.split(":", 1)[1].strip() if first.startswith("# recipe hash:") else None


def cell_dir(out: Path, variant: str, seed: int) -> Path:
    return out / "runs" / variant / f"seed-{seed}"


# ----------------------------------------------------------------------------------- results


def _fmt(x: float) -> str:
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.3f}"
    return f"{x:.3g}"


def results_rows(cells: list[tuple[str, int, dict[str, float]]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per (variant, seed) and the ordered metric columns (first-seen order)."""
    columns: list[str] = []
    rows = []
    for variant, seed, metrics in cells:
        for k in metrics:
            if k not in columns:
                columns.append(k)
        rows.append({"variant": variant, "seed": seed, **metrics})
    return rows, columns


def summarise(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Per variant (in first-seen order): n and, for each column, mean and sample std over seeds."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        group = [r for r in rows if r["variant"] == variant]
        summary: dict[str, Any] = {"variant": variant, "n": len(group)}
        for c in columns:
            vals = [float(r[c]) for r in group if c in r and r[c] is not None and math.isfinite(float(r[c]))]
            summary[c] = (
                statistics.fmean(vals) if vals else math.nan, statistics.stdev(vals) if len(vals) > 1 else 0.0
            )
        out.append(summary)
    return out


def markdown_table(summary: list[dict[str, Any]], columns: list[str]) -> str:
    """A Table-3-style Markdown table: ``mean ± std`` per variant and metric."""
    head = "| variant | n | " + " | ".join(columns) + " |"
    sep = "|---|---:|" + "---:|" * len(columns)
    lines = [head, sep]
    for s in summary:
        cells = [f"{_fmt(s[c][0])} ± {_fmt(s[c][1])}" if not math.isnan(s[c][0]) else "n/a" for c in columns]
        lines.append(f"| {s['variant']} | {s['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    out: Path,
    cells: list[tuple[str, int, dict[str, float]]],
    *,
    title: str,
    columns: list[str] | None = None,
    sweep: dict[str, list[Any]] | None = None,
    plot: bool = True,
) -> str:
    """Write results.csv, results.md and plots; return the Markdown table."""
    rows, all_columns = results_rows(cells)
    shown = [c for c in (columns or all_columns) if c in all_columns] or all_columns

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ID_COLUMNS) + all_columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())

    summary = summarise(rows, all_columns)
    table = markdown_table(summary, shown)
    seeds = sorted({r["seed"] for r in rows})
    text = f"# {title}\n\nMean ± sample standard deviation over seeds {seeds}; n = runs per variant.\n\n{table}"
    if set(shown) != set(all_columns):
        text += f"\nAll columns are in results.csv: {', '.join(all_columns)}.\n"
    atomic_write_text(out / "results.md", text)
    atomic_write_json(out / "summary.json", summary)
    if plot and len(summary) > 1:
        plot_results(out / "plots", summary, shown, sweep or {})
    return table


def plot_results(folder: Path, summary: list[dict[str, Any]], columns: list[str], sweep: dict[str, list[Any]]) -> None:
    """One PNG per metric: against the swept value for a one-key sweep, else a bar per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = next(iter(sweep.values())) if len(sweep) == 1 else []
    one_key = len(values) == len(summary) and all(isinstance(v, (int, float)) for v in values)
    for c in columns:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
        means = [s[c][0] for s in summary]
        stds = [s[c][1] for s in summary]
        if one_key:
            key = next(iter(sweep))
            xs = [float(v) for v in values]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3)
            positive = [x for x in xs if x > 0]
            if positive and min(positive) > 0 and max(xs) / min(positive) >= 100:
                ax.set_xscale("symlog", linthresh=min(positive))
            ax.set_xlabel(key)
        else:
            ax.bar(range(len(summary)), means, yerr=stds, capsize=3)
            ax.set_xticks(range(len(summary)), [s["variant"] for s in summary], rotation=30, ha="right")
        ax.set_ylabel(c)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        atomic_write_with(folder / f"{c}.png", lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)


def read_metrics(path: Path) -> dict[str, float] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
