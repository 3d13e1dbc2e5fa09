"""Run directories: the resolved recipe, the environment, per-cell metrics and the comparison table.

Layout of ``--out DIR``::

    .lock                      held (flock) while a run or ``sava report`` writes DIR; its last holder
    resolved.yaml              the fully resolved recipe (after overrides) and its hash
    environment.json           Python, torch, CUDA, platform and every plug-in's version
    sava.log                   the run's log
    runs/<variant>/seed-<k>/   recipe.yaml, log.jsonl, checkpoints/, model.safetensors, metrics.json
    results.csv                one row per variant and seed (a ``flags`` column when a run collapsed)
    results.md                 mean and spread (sample std over seeds) per variant, and any flags
    plots/*.png                one plot per metric (per swept key for a sweep)
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import io
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sava_core import __version__
from sava_core.errors import SavaError
from sava_core.io import atomic_write_json, atomic_write_text, atomic_write_with
from sava_core.registry import Registries
from sava_core.results_page import mean_and_spread, write_results_page

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


LOCK_FILE = ".lock"


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, from what it wrote there."""
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory ``out`` (``fcntl.flock`` on ``out/.lock``, which
    records the holder's pid, host and start time) while a run or ``sava report`` writes it. The
    operating system releases it when the holding process exits, even when it is killed. Raises a
    SavaError naming the holder when another process holds it."""
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise SavaError(f"cannot create the lock file {path}: {err.strerror}; make {out} writable") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SavaError(
                f"{out} is in use by {_holder(path)}: wait for that run to finish or stop it, or use another --out. "
                f"The lock is released when its process exits, even if killed; only if that process is gone and "
                f"this persists (a file system without working locks) delete {path}") from None
        except OSError as err:
            raise SavaError(f"cannot lock {path}: {err.strerror}; put the run directory on a file system with "
                            "file locks (flock)") from None
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode())
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------- collapse

#: An R^2 below this is no worse-than-useless fit but a prediction off the target's scale.
R2_FLOOR = -10.0
#: Metrics (by base name, without a ``_v`` / ``_a`` side) that are fractions in [0, 1].
FRACTIONS = frozenset({"density", "mask_mean", "support_jaccard", "l0_expected", "closed_exact", "open_exact"})
_SLACK = 1e-6  # audit values are rounded to 6 decimals

_CLOSED = ("every mask entry is closed, so the masked latents carry nothing: lower the sparsity weight "
           "(align.loss.lam) or the learning rate (align.train.lr)")


@dataclass(frozen=True)
class Flag:
    """A metric value that says a run collapsed or broke: the metric, its value, the problem, what to try."""

    metric: str
    value: float
    problem: str
    hint: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.metric} {_fmt(self.value)}"


def collapse_flags(metrics: Mapping[str, float]) -> list[Flag]:
    """The values of one run's ``metrics`` that mean it collapsed or broke, in their order. Rules (a
    metric's base name is its name without a ``_v`` / ``_a`` side suffix):

    * a non-finite value (NaN or infinite);
    * a fraction (base name in :data:`FRACTIONS`) outside [0, 1];
    * ``density`` exactly 0 with a ``mask_mean`` of the same side at 0 too (a soft mask whose weights
      all sit below the threshold but above 0 is shrunk, not closed), or ``closed_exact`` exactly 1
      (both or one side): every mask entry closed; a side's flag is left out when their mean has it;
    * an R^2 (a name with an ``r2`` part, e.g. ``proj_r2``, ``shared_r2_v``) above 1 or below
      :data:`R2_FLOOR`: a prediction off the target's scale, e.g. of a latent a closed mask made
      (nearly) constant.
    """
    flags = []
    for name, value in metrics.items():
        base = name[:-2] if name.endswith(("_v", "_a")) else name
        if not math.isfinite(value):
            flags.append(Flag(name, value, "non-finite", "the model or its audit produced NaN or infinity: check the "
                              "losses in log.jsonl; lower the learning rate or set max_grad_norm"))
        elif base in FRACTIONS and not -_SLACK <= value <= 1 + _SLACK:
            flags.append(Flag(name, value, "impossible", "a fraction outside [0, 1]: the component that reports it "
                              "is wrong"))
        elif (base == "density" and value == 0 and metrics.get(name.replace("density", "mask_mean"), 0) <= _SLACK
              or base == "closed_exact" and value == 1):
            flags.append(Flag(name, value, "collapsed", _CLOSED))
        elif "r2" in name.split("_") and value > 1 + _SLACK:
            flags.append(Flag(name, value, "impossible", "an R^2 above 1: the metric is computed wrongly"))
        elif "r2" in name.split("_") and value < R2_FLOOR:
            flags.append(Flag(name, value, "collapsed", "a prediction far off the target's scale, typically of a "
                              "masked latent that collapsed to a near-constant: look at density and log.jsonl"))
    both = {(f.metric, f.problem) for f in flags}  # a side is not repeated when the two sides' mean says it
    return [f for f in flags if not (f.metric.endswith(("_v", "_a")) and (f.metric[:-2], f.problem) in both)]


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


def spread_note(seeds: list[int]) -> str:
    """The sentence under a results table that says what its cells are."""
    if len(seeds) < 2:
        return f"One seed ({seeds[0] if seeds else '-'}): single runs, no spread across seeds; n = runs per variant."
    return f"Mean ± sample standard deviation over seeds {seeds}; n = runs per variant."


def markdown_table(summary: list[dict[str, Any]], columns: list[str], flags: Mapping[str, str] | None = None) -> str:
    """A Table-3-style Markdown table: ``mean ± std`` per variant and metric (the value alone for a
    variant with one run); with ``flags`` (variant -> text, see :func:`collapse_flags`), a last
    ``flags`` column."""
    head = "| variant | n | " + " | ".join(columns) + " |" + (" flags |" if flags else "")
    sep = "|---|---:|" + "---:|" * len(columns) + ("---|" if flags else "")
    lines = [head, sep]
    for s in summary:
        cells = [mean_and_spread(s, c, _fmt) for c in columns]
        if flags:
            cells.append(flags.get(s["variant"], ""))
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
    cell_dirs: Mapping[tuple[str, int], Path] | None = None,
) -> str:
    """Write results.csv, results.md, plots and results.html (with the samples of the runs' cell
    directories: ``cell_dirs``, default ``out/runs/<variant>/seed-<k>``); return the Markdown table.
    Runs with :func:`collapse_flags` get a ``flags`` column in the tables (only when some run has one)."""
    rows, all_columns = results_rows(cells)
    shown = [c for c in (columns or all_columns) if c in all_columns] or all_columns
    run_flags = {(variant, seed): "; ".join(map(str, collapse_flags(metrics))) for variant, seed, metrics in cells}
    flagged = any(run_flags.values())

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ID_COLUMNS) + all_columns + (["flags"] if flagged else []),
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**r, "flags": run_flags[(r["variant"], r["seed"])]} for r in rows)
    atomic_write_text(out / "results.csv", buf.getvalue())

    summary = summarise(rows, all_columns)
    by_variant: dict[str, list[str]] = {}
    for (variant, seed), text in run_flags.items():
        if text:
            by_variant.setdefault(variant, []).append(f"seed {seed}: {text}")
    table = markdown_table(summary, shown, {v: "; ".join(t) for v, t in by_variant.items()} if flagged else None)
    seeds = sorted({r["seed"] for r in rows})
    text = f"# {title}\n\n{spread_note(seeds)}\n\n{table}"
    if set(shown) != set(all_columns):
        text += f"\nAll columns are in results.csv: {', '.join(all_columns)}.\n"
    if flagged:
        text += "\nflags: values that mean a run collapsed or broke (what to try: sava.log, docs/recipes.md).\n"
    atomic_write_text(out / "results.md", text)
    atomic_write_json(out / "summary.json", summary)
    if plot and len(summary) > 1:
        plot_results(out / "plots", summary, shown, sweep or {})
    dirs = cell_dirs or {(variant, seed): cell_dir(out, variant, seed) for variant, seed, _ in cells}
    write_results_page(out, title, summary, shown, {v: "; ".join(t) for v, t in by_variant.items()}, dirs,
                       note=spread_note(seeds))
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
