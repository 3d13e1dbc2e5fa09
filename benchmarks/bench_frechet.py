"""Benchmark: ``frechet_distance`` (symmetric route) against the ``scipy.linalg.sqrtm`` route.

Both compute FD between the Gaussian statistics of two sets of 10,000 correlated 2048-d features
(FD = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)), in the same run, float64. The sqrtm route
is the common one: ``sqrtm(S1 @ S2)``, real part. Goal: at least 3x faster, same value to 1e-6
relative. ``frechet_distance`` is also timed with tensor input (the same computation) and with a
singular sigma1 (statistics of dim // 2 = 1,024 rows), which takes its slower eigh route instead of Cholesky.
Writes ``frechet.json`` (times in seconds, the speed ratio, the relative difference and the
machine) to ``out_dir``.

    python benchmarks/bench_frechet.py            # -> benchmarks/results/frechet.json
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.linalg
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from sava_core.io import atomic_write_json  # noqa: E402
from sava_core.metrics import frechet_distance, gaussian_stats  # noqa: E402


def fd_sqrtm(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """FD by the common route: tr of ``scipy.linalg.sqrtm(S1 @ S2)``, real part."""
    diff = mu1 - mu2
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def features(rng: np.random.Generator, n: int, dim: int, shift: float) -> np.ndarray:
    """(n, dim) float64 features with a random full covariance: Gaussian rows times a random mixing."""
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return rng.standard_normal((n, dim)) @ mixing + shift


def timed(fn: Any, *args: Any) -> tuple[float, float]:
    """(value, seconds) of one call."""
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main(out_dir: Path, *, n: int = 10_000, dim: int = 2048, seed: int = 0) -> dict[str, Any]:
    """Run the comparison once, write ``out_dir / "frechet.json"`` and return its figures."""
    rng = np.random.default_rng(seed)
    x1 = features(rng, n, dim, 0.0)
    (mu1, s1), stats_s = timed(gaussian_stats, x1)
    mu2, s2 = gaussian_stats(features(rng, n, dim, 0.1))
    mu_few, s_few = gaussian_stats(x1[: dim // 2])

    fd_numpy, t_numpy = timed(frechet_distance, mu1, s1, mu2, s2)
    tensors = [torch.from_numpy(a) for a in (mu1, s1, mu2, s2)]
    fd_torch, t_torch = timed(frechet_distance, *tensors)
    _, t_singular = timed(frechet_distance, mu_few, s_few, mu2, s2)
    fd_ref, t_ref = timed(fd_sqrtm, mu1, s1, mu2, s2)

    result = {
        "n": n,
        "dim": dim,
        "seed": seed,
        "fd": fd_numpy,
        "fd_torch_input": fd_torch,
        "fd_sqrtm": fd_ref,
        "rel_diff": abs(fd_numpy - fd_ref) / abs(fd_ref),
        "seconds": t_numpy,
        "seconds_torch_input": t_torch,
        "seconds_singular_sigma1": t_singular,
        "seconds_sqrtm": t_ref,
        "seconds_gaussian_stats": stats_s,
        "speedup": t_ref / t_numpy,
        "goal": {"speedup_at_least": 3.0, "rel_diff_at_most": 1e-6},
        # The load average shows other work competing for the CPU while the timings ran.
        "machine": {**machine(), "scipy": scipy.__version__, "load_average_1_5_15": list(os.getloadavg())},
    }
    result["goal_met"] = result["speedup"] >= 3.0 and result["rel_diff"] <= 1e-6
    atomic_write_json(Path(out_dir) / "frechet.json", result)
    return result


if __name__ == "__main__":
    figures = main(Path(__file__).resolve().parent / "results")
    print(
        f"frechet_distance {figures['fd']:.6f} in {figures['seconds']:.2f} s "
        f"(torch input {figures['seconds_torch_input']:.2f} s, "
        f"singular sigma1 {figures['seconds_singular_sigma1']:.2f} s); "
        f"sqrtm {figures['fd_sqrtm']:.6f} in {figures['seconds_sqrtm']:.2f} s; "
        f"{figures['speedup']:.2f}x faster, relative difference {figures['rel_diff']:.2e}"
    )
