"""Posterior mean and sample under the N(0, s^2) prior, against brute-force integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpglow.privacy import posterior_mean, posterior_sample

CASES = [
    # noise, scale, prior_std, clip, y values
    ("laplace", 0.3, 1.0, None, (-2.0, 0.0, 0.4, 3.5)),
    ("laplace", 2.0, 1.0, 1.5, (-4.0, 0.7, 1.5, 9.0)),
    ("laplace", 5.0, 2.0, None, (-10.0, 1.0, 25.0)),
    ("gaussian", 0.5, 1.0, 2.0, (-3.0, 0.3, 1.9, 6.0)),
    ("gaussian", 3.0, 1.0, None, (-5.0, 0.2, 8.0)),
]


def _brute_force(
    y: float, noise: str, scale: float, s: float, clip: float | None
) -> tuple[float, float]:
    """Posterior mean and variance by the trapezoidal rule on a dense grid (kink included)."""
    lo, hi = (-clip, clip) if clip else (-14 * s, 14 * s)
    u = np.union1d(np.linspace(lo, hi, 400_001), [min(max(y, lo), hi)])
    log_lik = -np.abs(y - u) / scale if noise == "laplace" else -0.5 * ((y - u) / scale) ** 2
    log_w = -0.5 * (u / s) ** 2 + log_lik
    w = np.exp(log_w - log_w.max())
    z = np.trapezoid(w, u)
    mean = np.trapezoid(w * u, u) / z
    return float(mean), float(np.trapezoid(w * (u - mean) ** 2, u) / z)


@pytest.mark.parametrize(("noise", "scale", "s", "clip", "ys"), CASES)
def test_mean_matches_brute_force(noise, scale, s, clip, ys) -> None:
    y = torch.tensor(ys, dtype=torch.float64)
    got = posterior_mean(y, noise=noise, scale=scale, prior_std=s, clip=clip)
    expected = [_brute_force(v, noise, scale, s, clip)[0] for v in ys]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("noise", "scale", "s", "clip", "ys"), CASES[:2] + CASES[3:4])
def test_sample_matches_mean_and_variance(noise, scale, s, clip, ys) -> None:
    n = 50_000
    y = torch.tensor(ys, dtype=torch.float64).repeat_interleave(n)
    generator = torch.Generator().manual_seed(5)
    draws = posterior_sample(
        y, noise=noise, scale=scale, prior_std=s, clip=clip, generator=generator
    ).view(len(ys), n)
    if clip is not None:
        assert float(draws.abs().max()) <= clip
    for row, value in zip(draws, ys, strict=True):
        mean, var = _brute_force(value, noise, scale, s, clip)
        # 6 standard errors of the sample mean; the sample variance within 5%.
        assert abs(float(row.mean()) - mean) < 6 * math.sqrt(var / n)
        assert float(row.var()) == pytest.approx(var, rel=0.05)
    analytic = posterior_mean(
        torch.tensor(ys, dtype=torch.float64), noise=noise, scale=scale, prior_std=s, clip=clip
    )
    empirical = draws.mean(1)
    assert bool(((empirical - analytic).abs() < 6 * draws.std(1) / math.sqrt(n)).all())


@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
def test_limits(noise: str) -> None:
    y = torch.tensor([-7.0, -0.5, 0.0, 1.2, 40.0], dtype=torch.float64)
    # scale -> 0: the observation itself, clipped to [-c, c].
    torch.testing.assert_close(posterior_mean(y, noise=noise, scale=1e-6), y, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        posterior_mean(y, noise=noise, scale=1e-6, clip=2.0), y.clamp(-2, 2), atol=1e-4, rtol=0
    )
    assert torch.equal(posterior_mean(y, noise=noise, scale=0.0, clip=2.0), y.clamp(-2, 2))
    # The sampler's far-tail path (log-CDF ~ -5e11, Newton-inverted) lands on y as well.
    generator = torch.Generator().manual_seed(1)
    draws = posterior_sample(y, noise=noise, scale=1e-6, clip=2.0, generator=generator)
    torch.testing.assert_close(draws, y.clamp(-2, 2), atol=1e-4, rtol=0)
    assert torch.equal(posterior_mean(y, noise="none", scale=5.0), y)
    # scale -> inf: the prior mean.
    assert float(posterior_mean(y, noise=noise, scale=1e8).abs().max()) < 1e-6
    assert float(posterior_mean(y, noise=noise, scale=math.inf, clip=1.0).abs().max()) == 0.0


@pytest.mark.parametrize("noise", ["laplace", "gaussian"])
@pytest.mark.parametrize("clip", [None, 3.0])
def test_symmetric_monotone_finite(noise: str, clip: float | None) -> None:
    magnitudes = torch.tensor([0.0, 1e-3, 0.5, 1.0, 10.0, 1e3, 1e6], dtype=torch.float64)
    y = torch.cat([-magnitudes.flip(0), magnitudes])
    generator = torch.Generator().manual_seed(0)
    for scale in (1e-3, 0.1, 1.0, 100.0, 1e6):
        mean = posterior_mean(y, noise=noise, scale=scale, clip=clip)
        sample = posterior_sample(y, noise=noise, scale=scale, clip=clip, generator=generator)
        assert bool(torch.isfinite(mean).all()) and bool(torch.isfinite(sample).all())
        torch.testing.assert_close(mean, -mean.flip(0), atol=1e-12, rtol=1e-12)
        assert bool((mean.diff() >= -1e-12).all())  # E[u | y] is nondecreasing in y
        if clip is not None:
            assert float(mean.abs().max()) <= clip and float(sample.abs().max()) <= clip


def test_shape_dtype_and_validation() -> None:
    y = torch.randn(2, 3, 4)
    out = posterior_mean(y, noise="laplace", scale=2.0, clip=3.0)
    assert out.shape == y.shape and out.dtype == torch.float32
    assert posterior_sample(y, noise="gaussian", scale=1.0).shape == y.shape
    with pytest.raises(ValueError):
        posterior_mean(y, noise="cauchy", scale=1.0)
    with pytest.raises(ValueError):
        posterior_mean(y, noise="laplace", scale=-1.0)
    with pytest.raises(TypeError):
        posterior_mean(y, noise="laplace", scale="1")
    with pytest.raises(ValueError):
        posterior_mean(y, noise="laplace", scale=1.0, clip=0.0)
