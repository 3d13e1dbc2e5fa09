"""Metric maths in float64, for numpy arrays or torch tensors: Fréchet distance and its Gaussian
statistics (batch and streaming), FAD-infinity, KL, Inception Score and cosine scores.

Feature extractors live in plugins; their protocols are in ``docs/metrics.md``.
"""

from sava_core.metrics.frechet import StreamingGaussian, fad_infinity, frechet_distance, gaussian_stats
from sava_core.metrics.scores import cosine_mean, framewise_cosine, inception_score, kl_divergence

__all__ = [
    "StreamingGaussian",
    "cosine_mean",
    "fad_infinity",
    "framewise_cosine",
    "frechet_distance",
    "gaussian_stats",
    "inception_score",
    "kl_divergence",
]
