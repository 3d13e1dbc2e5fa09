"""Time per generated clip and peak memory of the real backbones at their ``tiny`` presets: every
paper recipe run whole on this machine's device (CUDA when there is one), with the per-variant
seconds per clip from the same run, so that a cascade compares with its two-stream baseline
(t2av_animatediff_audioldm2) and with the joint LTX-2 run.

Peak memory is ``torch.cuda.max_memory_allocated`` during the recipe on a GPU; on a CPU it is the
process's peak resident set so far (it only grows from one recipe to the next). Writes ``backbones.json``
with the device it ran on. Not yet here: a larger random-weight configuration on a GPU (no GPU was
available when this was written).

    python benchmarks/bench_backbones.py          # -> benchmarks/results/backbones.json
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from sava_core.io import atomic_write_json  # noqa: E402

REPO = Path(__file__).parent.parent
RECIPES = ["t2av_cogvideox_audioldm", "t2av_animatediff_audioldm2", "t2av_ltx2_joint", "v2a"]


def _peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_recipes(device: str) -> dict[str, Any]:
    """Seconds per clip of the generate stage (from each run's metrics) and peak memory."""
    import json

    from sava_core.recipe import plan
    from sava_core.runner import run_plan

    out = {}
    for name in RECIPES:
        with tempfile.TemporaryDirectory() as tmp:
            p = plan(REPO / "recipes" / "paper" / f"{name}.yaml",
                     ["preset=tiny", f"device={device}", "report.plot=false"])
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run_plan(p, Path(tmp) / "run")
            seconds = time.perf_counter() - start
            runs = Path(tmp) / "run" / "runs"
            metrics = {c.variant: json.loads((runs / c.variant / f"seed-{c.seed}" / "metrics.json").read_text())
                       for c in p.cells}
            out[name] = {"seconds_whole_recipe": seconds, "peak_mb": _peak_mb(device),
                         "seconds_per_clip": {variant: m["seconds_per_clip"] for variant, m in metrics.items()}}
    return out


def main(out_dir: Path) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)
    result: dict[str, Any] = {"device": device, "tiny": tiny_recipes(device), "machine": machine()}
    atomic_write_json(out_dir / "backbones.json", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(REPO / "benchmarks" / "results"), indent=2))
