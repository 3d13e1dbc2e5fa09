"""Run every benchmark; each writes its figures (and the machine) to benchmarks/results/<name>.json.

    python benchmarks/run_all.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

#: bench_real_size runs released sizes only where CUDA is available (elsewhere its tiny presets, and says why).
BENCHMARKS = ["bench_stage1_step", "bench_frechet", "bench_quickstart", "bench_latent_cache", "bench_backbones",
              "bench_real_size"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    for name in args.only or BENCHMARKS:
        print(f"== {name}", flush=True)
        result = importlib.import_module(name).main(args.out)
        print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2), flush=True)


if __name__ == "__main__":
    main()
