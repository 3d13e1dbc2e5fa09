"""Classifier and embedding scores: KL (av-benchmark), Inception Score, cosine similarities.

Inputs are numpy arrays or torch tensors of any float dtype; the maths runs in float64 on the
device of the first tensor. Bad shapes and non-finite entries raise ValueError.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sava_core.metrics.frechet import ArrayLike, _as_float64, _device

_PROB_SUM_ATOL = 1e-4  # rows given as probabilities must sum to 1 within this


def _check_probs(p: Tensor, name: str) -> Tensor:
    """Rows of ``p`` (N, K) checked to be distributions, then renormalised exactly."""
    if bool((p < 0).any()):
        raise ValueError(f"{name} has negative probabilities")
    sums = p.sum(1, keepdim=True)
    if float((sums - 1).abs().max()) > _PROB_SUM_ATOL:
        raise ValueError(
            f"rows of {name} must sum to 1 (within {_PROB_SUM_ATOL}), "
            f"got {float(sums.min()):.6g}..{float(sums.max()):.6g}"
        )
    return p / sums


def kl_divergence(ref_logits: ArrayLike, gen_logits: ArrayLike, *, from_probs: bool = False) -> float:
    """Mean over clips of KL(reference || generated) in nats, the av-benchmark form.

    ``ref_logits``, ``gen_logits``: (N, K) classifier logits of N paired clips (row i of both is
    the same clip), softmax over K classes; with ``from_probs=True`` rows are probabilities
    instead (a class with generated probability 0 and reference probability > 0 gives +inf).
    Per clip sum_k p_k (log p_k - log q_k), averaged over clips.
    """
    device = _device(ref_logits, gen_logits)
    p = _as_float64(ref_logits, "ref_logits", 2, device)
    q = _as_float64(gen_logits, "gen_logits", 2, device)
    if p.shape != q.shape:
        raise ValueError(f"ref_logits {tuple(p.shape)} and gen_logits {tuple(q.shape)} differ in shape")
    if from_probs:
        p, q = _check_probs(p, "ref_logits"), _check_probs(q, "gen_logits")
        per_clip = (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(1)
    else:
        log_p, log_q = p.log_softmax(1), q.log_softmax(1)
        per_clip = (log_p.exp() * (log_p - log_q)).sum(1)
    return float(per_clip.mean())


def inception_score(logits: ArrayLike, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std over splits) of classifier ``logits`` (N, K).

    As torch-fidelity's ``isc``: rows shuffled by ``numpy.random.RandomState(seed).permutation``,
    softmax in float64, split into ``splits`` contiguous chunks [i N // splits, (i+1) N // splits),
    per chunk exp(mean_x KL(p(y|x) || p(y))) with p(y) the chunk's mean; std with ddof 0.
    Ranges from 1 (uniform or identical predictions) to K (confident, evenly spread).
    """
    x = _as_float64(logits, "logits", 2, _device(logits))
    n = x.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"need 1 <= splits <= N, got splits={splits}, N={n}")
    perm = torch.from_numpy(np.random.RandomState(seed).permutation(n)).to(x.device)
    log_p = x[perm].log_softmax(1)
    scores = []
    for i in range(splits):
        lp = log_p[i * n // splits : (i + 1) * n // splits]
        p = lp.exp()
        log_py = p.mean(0).log()
        kl = torch.where(p > 0, p * (lp - log_py), 0.0).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(correction=0))


def _row_cosines(a: Tensor, b: Tensor, names: str) -> Tensor:
    """Cosine similarity (N,) of the rows of ``a`` and ``b`` (N, D); zero rows raise."""
    na, nb = a.norm(dim=1), b.norm(dim=1)
    if bool((na == 0).any()) or bool((nb == 0).any()):
        raise ValueError(f"{names}: cosine similarity is undefined for a zero vector")
    return (a * b).sum(1) / (na * nb)


def cosine_mean(a: ArrayLike, b: ArrayLike) -> float:
    """Mean over rows of the cosine similarity of paired embeddings ``a``, ``b`` (N, D), in [-1, 1].

    The outer step of AVHScore, CAVP similarity and CLIP/CLAP text-alignment scores.
    """
    device = _device(a, b)
    x = _as_float64(a, "a", 2, device)
    y = _as_float64(b, "b", 2, device)
    if x.shape != y.shape:
        raise ValueError(f"a {tuple(x.shape)} and b {tuple(y.shape)} differ in shape")
    return float(_row_cosines(x, y, "a, b").mean())


def framewise_cosine(frames: ArrayLike, audio: ArrayLike) -> float:
    """Mean over frames of the cosine of each frame embedding (F, D) with one audio embedding (D,).

    The inner step of AVHScore (JavisBench): one clip's score, in [-1, 1].
    """
    device = _device(frames, audio)
    f = _as_float64(frames, "frames", 2, device)
    v = _as_float64(audio, "audio", 1, device)
    if f.shape[1] != v.shape[0]:
        raise ValueError(f"frames {tuple(f.shape)} and audio {tuple(v.shape)} differ in width")
    return float(_row_cosines(f, v.expand_as(f), "frames, audio").mean())
