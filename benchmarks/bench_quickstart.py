"""The quickstart's wall time and peak memory, and the generation time per clip of each mode.

Runs ``sava run recipes/quickstart.yaml`` (two-stream baseline and SAVA's unidirectional cascade)
in a child process, then a bidirectional run (which also fine-tunes TA2V); reads the per-mode
seconds per clip from the runs' metrics. The two-stream mode is the baseline of the same run.
Pretrained world weights must already exist (shipped or cached), as in the quickstart's promise.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from sava_core.io import atomic_write_json  # noqa: E402

REPO = Path(__file__).parent.parent


def _run(args: list[str], out: Path) -> tuple[float, dict[str, dict[str, float]]]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sava_cli.main", "run", "recipes/quickstart.yaml", *args, "--out", str(out)],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    metrics = {p.parent.parent.name: json.loads(p.read_text()) for p in out.glob("runs/*/seed-*/metrics.json")}
    return wall, metrics


def main(out_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        wall, metrics = _run([], Path(tmp) / "quickstart")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        bi_wall, bi = _run(["finetune.directions=[tv2a, ta2v]",
                            "variants={sava_bidirectional: [generate.mode=cascade_bidirectional]}"], Path(tmp) / "bi")
    per_clip = {name: m["seconds_per_clip"] for name, m in {**metrics, **bi}.items()}
    result = {
        "benchmark": "quickstart",
        "quickstart_wall_s": round(wall, 1),
        "quickstart_peak_rss_mb": round(peak_mb, 1),
        "bidirectional_run_wall_s": round(bi_wall, 1),
        "seconds_per_clip": {k: round(v, 3) for k, v in per_clip.items()},
        "ratio_to_two_stream": {k: round(v / per_clip["two_stream"], 2) for k, v in per_clip.items()},
        "machine": machine(),
    }
    atomic_write_json(out_dir / "quickstart.json", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(__file__).parent / "results"), indent=2))
