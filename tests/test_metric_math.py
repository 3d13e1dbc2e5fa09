"""The metric maths against exact values: Fréchet distance, Gaussian statistics (batch and
streaming), FAD-infinity, KL, Inception Score and cosine scores."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from sava_core.metrics import (
    StreamingGaussian,
    cosine_mean,
    fad_infinity,
    framewise_cosine,
    frechet_distance,
    gaussian_stats,
    inception_score,
    kl_divergence,
)

torch.set_num_threads(1)


def random_spd(rng: np.random.Generator, d: int, scale: float = 1.0) -> np.ndarray:
    """A well-conditioned random SPD matrix (d, d) with a random eigenbasis."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return scale * (q * rng.uniform(0.2, 3.0, d)) @ q.T


def fd_sqrtm(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Independent float64 reference: the textbook formula with scipy's sqrtm (real part)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# ----------------------------------------------------------------------------------- Fréchet distance


def test_identical_gaussians_give_zero() -> None:
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(40), random_spd(rng, 40)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-10 * np.trace(s)


@pytest.mark.parametrize("zeros", [0, 3], ids=["definite", "singular"])
def test_diagonal_covariances_closed_form(zeros: int) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 4.0, 16), rng.uniform(0.1, 4.0, 16)
    a[:zeros] = 0.0  # a singular sigma1 takes the eigh route instead of Cholesky
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_one_dimensional_case() -> None:
    # (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s: (1 - 4)^2 + (2 - 3)^2 = 10.
    assert frechet_distance([1.0], [[4.0]], [4.0], [[9.0]]) == pytest.approx(10.0, rel=1e-14)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_non_commuting_spd_matches_sqrtm_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 64
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=2.0)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(fd_sqrtm(mu1, s1, mu2, s2), rel=1e-8)


@pytest.mark.parametrize(("n", "rel"), [(20, 2e-7), (36, 1e-12)], ids=["singular", "ill-conditioned"])
def test_covariances_from_few_samples_match_svd_reference(n: int, rel: float) -> None:
    # With S1 = A^T A and S2 = B^T B (A, B centred data / sqrt(N - 1)), tr sqrt(S1 S2) is exactly
    # the sum of the singular values of A B^T: an independent reference even when N <= D = 32.
    # Singular S1 (eigh route): the D - N + 1 = 13 zero eigenvalues of A come out as rounding noise,
    # up to 4e-15 here (0.6 eps |A|, |A| ~ 30); their square roots (6e-8 each) leave 6e-9 relative.
    # That noise depends on the LAPACK kernels: eigvalsh only promises about D eps |A| (2e-13), and
    # all 13 that large would give 1.3e-7, hence 2e-7 on any CPU; a real error (N vs N - 1, a dropped
    # term, no clipping) is 1e-2 or more. Full rank: 5e-16 seen, so 1e-12 holds there.
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal((n, 32)), rng.standard_normal((n, 32)) * 2 + 0.5
    (mu1, s1), (mu2, s2) = gaussian_stats(x1), gaussian_stats(x2)
    a, b = (x1 - mu1) / np.sqrt(n - 1), (x2 - mu2) / np.sqrt(n - 1)
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=rel)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=rel)


def test_numpy_and_torch_inputs_agree() -> None:
    rng = np.random.default_rng(6)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    s1, s2 = random_spd(rng, 32), random_spd(rng, 32)
    from_numpy = frechet_distance(mu1, s1, mu2, s2)
    as_tensors = [torch.from_numpy(x) for x in (mu1, s1, mu2, s2)]
    assert frechet_distance(*as_tensors) == pytest.approx(from_numpy, rel=1e-12)
    # Mixed inputs, and float32 tensors (upcast to float64 before any maths).
    assert frechet_distance(as_tensors[0], s1, mu2, as_tensors[3]) == pytest.approx(from_numpy, rel=1e-12)
    float32 = [t.float() for t in as_tensors]
    assert frechet_distance(*float32) == pytest.approx(from_numpy, rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu() -> None:
    rng = np.random.default_rng(7)
    stats = [rng.standard_normal(48), random_spd(rng, 48), rng.standard_normal(48), random_spd(rng, 48)]
    on_gpu = [torch.from_numpy(x).cuda() for x in stats]
    assert frechet_distance(*on_gpu) == pytest.approx(frechet_distance(*stats), rel=1e-10)
    mu, sigma = gaussian_stats(torch.from_numpy(rng.standard_normal((100, 8))).cuda())
    assert mu.device.type == "cuda" and sigma.dtype == torch.float64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "differ in shape"),
        ((np.zeros(3), np.eye(4), np.zeros(3), np.eye(3)), "must have shape"),
        ((np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3)), "dimension"),
        ((np.array([0.0, np.nan, 0.0]), np.eye(3), np.zeros(3), np.eye(3)), "NaN or infinite"),
        ((np.zeros(3), np.eye(3), np.zeros(3), np.diag([1.0, np.inf, 1.0])), "NaN or infinite"),
        ((np.zeros(3), np.triu(np.ones((3, 3))), np.zeros(3), np.eye(3)), "not symmetric"),
        ((np.zeros(0), np.eye(0), np.zeros(0), np.eye(0)), "empty"),
        ((["a", "b"], np.eye(2), np.zeros(2), np.eye(2)), "not a numeric array"),
    ],
)
def test_frechet_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frechet_distance(*args)


# ----------------------------------------------------------------------------------- Gaussian statistics


def test_gaussian_stats_matches_numpy() -> None:
    x = np.random.default_rng(8).standard_normal((50, 6)).astype(np.float32)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    # float64 sums of 50 terms in another order (torch's BLAS vs numpy's): at worst 50 eps times the
    # terms' magnitude, 7e-13 of the smallest covariance entry here (1e-15 seen), so rtol=1e-12 holds
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
    mu_t, sigma_t = gaussian_stats(torch.from_numpy(x))
    assert isinstance(sigma_t, torch.Tensor) and sigma_t.dtype == torch.float64
    np.testing.assert_allclose(sigma_t.numpy(), sigma, rtol=1e-12)


def test_gaussian_stats_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        gaussian_stats(np.ones((1, 4)))


def test_streaming_equals_batch_statistics(tmp_path: Path) -> None:
    # A large common offset: accumulating sum x x^T would lose the covariance; Chan's update does not.
    rng = np.random.default_rng(9)
    x = 1e6 + rng.standard_normal((1000, 12)) @ rng.standard_normal((12, 12))
    mu, sigma = gaussian_stats(x)
    acc = StreamingGaussian()
    for batch in np.split(x, [1, 7, 300, 301, 650]):
        acc.update(batch)
    assert acc.n == 1000
    # float64 rounding of means near 1e6 in another order: a few ulps (1 seen); rtol=1e-14 is 45 ulps.
    # The covariances' rounding follows the centred values (3e-11 seen vs atol 2e-8), while summing
    # x x^T without centring would lose about 1e6^2 eps = 2e-4.
    np.testing.assert_allclose(acc.mean.numpy(), mu, rtol=1e-14)
    np.testing.assert_allclose(acc.cov.numpy(), sigma, rtol=1e-9, atol=1e-9 * np.abs(sigma).max())

    left = StreamingGaussian().update(x[:400])
    right = StreamingGaussian().update(torch.from_numpy(x[400:]))
    merged = left.merge(right).merge(StreamingGaussian())
    assert merged.n == 1000
    np.testing.assert_allclose(merged.cov.numpy(), sigma, rtol=1e-9, atol=1e-9 * np.abs(sigma).max())

    acc.save(tmp_path / "stats.safetensors")
    loaded = StreamingGaussian.load(tmp_path / "stats.safetensors")
    assert loaded.n == 1000
    assert torch.equal(loaded.mean, acc.mean) and torch.equal(loaded.cov, acc.cov)
    assert [p.name for p in tmp_path.iterdir()] == ["stats.safetensors"]  # no temporary left behind


def test_streaming_rejects_bad_use(tmp_path: Path) -> None:
    acc = StreamingGaussian()
    with pytest.raises(ValueError, match="empty"):
        acc.mean
    with pytest.raises(ValueError, match="empty"):
        acc.save(tmp_path / "empty.safetensors")
    acc.update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        acc.cov
    with pytest.raises(ValueError, match="feature width"):
        acc.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.full((2, 3), np.nan))


# ----------------------------------------------------------------------------------- FAD-infinity


def test_fad_infinity_recovers_the_true_distance() -> None:
    # N(0, I) vs N(m, diag(v)): FD = |m|^2 + sum (1 - sqrt v)^2 = 9 + 1 = 10. Over 40 data seeds
    # the relative error has std 1.2% and never exceeds 3.5%.
    rng = np.random.default_rng(10)
    d, n = 8, 5000
    m = np.zeros(d)
    m[0] = 3.0
    v = np.ones(d)
    v[1] = 4.0
    reference = rng.standard_normal((n, d))
    generated = m + rng.standard_normal((n, d)) * np.sqrt(v)
    result = fad_infinity(reference, generated, seed=0)
    assert result["fad_inf"] == pytest.approx(10.0, rel=0.04)
    assert result["n_points"] == 25 and result["n_min"] == 500 and result["n_max"] == n
    assert len(result["points"]) == 25 and result["points"][-1][0] == n
    assert 0 <= result["r2"] <= 1
    assert fad_infinity(reference, generated, seed=0) == result  # seeded
    assert fad_infinity(torch.from_numpy(reference), generated, seed=0)["fad_inf"] == pytest.approx(
        result["fad_inf"], rel=1e-10
    )


def test_fad_infinity_removes_the_small_n_bias() -> None:
    # With D = 32 the 1/n bias is visible: FD of 500 resampled rows is well above the intercept,
    # which lands on the FD of the full sets (resampling cannot remove the bias of those).
    rng = np.random.default_rng(11)
    reference = rng.standard_normal((2000, 32))
    generated = 0.3 + 1.5 * rng.standard_normal((2000, 32))
    result = fad_infinity(reference, generated, n_min=250, seed=0)
    full = frechet_distance(*gaussian_stats(reference), *gaussian_stats(generated))
    assert result["slope"] > 0 and result["r2"] > 0.5
    assert result["points"][0][1] > 1.05 * full
    assert result["fad_inf"] == pytest.approx(full, rel=0.02)


def test_fad_infinity_rejects_bad_input() -> None:
    x = np.random.default_rng(11).standard_normal((100, 4))
    with pytest.raises(ValueError, match="n_min"):
        fad_infinity(x, x, n_min=100)
    with pytest.raises(ValueError, match="n_points"):
        fad_infinity(x, x, n_points=1)
    with pytest.raises(ValueError, match="widths differ"):
        fad_infinity(x, x[:, :3])


# ----------------------------------------------------------------------------------- KL and IS


def test_kl_exact_value() -> None:
    p, q = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    exact = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert exact == pytest.approx(0.510826, abs=1e-6)
    assert kl_divergence(p, q, from_probs=True) == pytest.approx(exact, rel=1e-14)
    # Logits: any per-row offset gives the same softmax.
    assert kl_divergence(np.log(p) + 3.0, torch.from_numpy(np.log(q) - 7.0)) == pytest.approx(exact, rel=1e-12)
    # KL(reference || generated), not the reverse.
    assert kl_divergence(q, p, from_probs=True) != pytest.approx(exact, rel=1e-3)


def test_kl_averages_over_clips_and_handles_zeros() -> None:
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.9, 0.1], [1.0, 0.0]])
    assert kl_divergence(p, q, from_probs=True) == pytest.approx(0.510826 / 2, abs=1e-6)
    assert kl_divergence([[0.5, 0.5]], [[1.0, 0.0]], from_probs=True) == math.inf
    logits = np.random.default_rng(12).standard_normal((20, 527))
    assert kl_divergence(logits, logits) == 0.0


@pytest.mark.parametrize(
    ("ref", "gen", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 4)), "differ in shape"),
        (np.zeros(3), np.zeros(3), "dimension"),
        (np.array([[0.0, np.inf]]), np.zeros((1, 2)), "NaN or infinite"),
    ],
)
def test_kl_rejects_bad_input(ref: np.ndarray, gen: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kl_divergence(ref, gen)


def test_kl_rejects_rows_that_are_not_distributions() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        kl_divergence([[0.5, 0.6]], [[0.5, 0.5]], from_probs=True)
    with pytest.raises(ValueError, match="negative"):
        kl_divergence([[1.5, -0.5]], [[0.5, 0.5]], from_probs=True)


def test_inception_score_uniform_is_one() -> None:
    mean, std = inception_score(np.zeros((100, 10)))
    assert mean == pytest.approx(1.0, abs=1e-14) and std == pytest.approx(0.0, abs=1e-14)


def test_inception_score_confident_even_predictions_give_k() -> None:
    k = 7
    logits = 1000.0 * np.eye(k)[np.arange(70 * k) % k]  # softmax underflows to exact one-hot
    assert inception_score(logits, splits=1) == pytest.approx((k, 0.0), abs=1e-12)
    # Shuffled into splits, each split holds about N/(K splits) of each class: close to K.
    mean, std = inception_score(torch.from_numpy(logits), splits=5)
    assert k * 0.97 < mean <= k and std < 0.1


def test_inception_score_hand_computed_and_seeded() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    marginal = probs.mean(0)
    expected = math.exp(np.mean([np.sum(p * np.log(p / marginal)) for p in probs]))
    assert inception_score(np.log(probs), splits=1)[0] == pytest.approx(expected, rel=1e-12)
    logits = np.random.default_rng(13).standard_normal((200, 5)) * 3
    assert inception_score(logits, seed=1) == inception_score(logits, seed=1)
    assert inception_score(logits, seed=1) != inception_score(logits, seed=2)


def test_inception_score_needs_enough_samples() -> None:
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.zeros((5, 3)), splits=10)


# ----------------------------------------------------------------------------------- cosine scores


def test_cosine_mean_exact_values() -> None:
    a = np.array([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    b = np.array([[1.0, 1.0], [-6.0, -8.0], [-1.0, 1.0]])
    assert cosine_mean(a, b) == pytest.approx((1 / math.sqrt(2) - 1 + 0) / 3, rel=1e-14)
    assert cosine_mean(torch.from_numpy(a).float(), 2 * a) == pytest.approx(1.0, rel=1e-7)


def test_framewise_cosine_exact_value() -> None:
    frames = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    audio = np.array([1.0, 1.0])
    expected = (1 / math.sqrt(2) + 1 / math.sqrt(2) - 1) / 3
    assert framewise_cosine(frames, audio) == pytest.approx(expected, rel=1e-14)
    assert framewise_cosine(torch.from_numpy(frames), torch.from_numpy(audio)) == pytest.approx(expected, rel=1e-14)


def test_cosine_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="zero vector"):
        cosine_mean(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="differ in shape"):
        cosine_mean(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="differ in width"):
        framewise_cosine(np.ones((4, 3)), np.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        framewise_cosine(np.ones((4, 3)), np.array([1.0, np.nan, 1.0]))
