"""Noise sources (OS entropy vs seeded), sampler moments, and device handling."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from dpglow.privacy import (
    OS_ENTROPY,
    SEEDED,
    UNVERIFIED,
    GaussianL2,
    LaplaceElementwise,
    LaplaceL1,
    noise_generator,
)
from dpglow.privacy.noise import gaussian_noise, laplace_noise

N = 400_000
# Relative standard deviation of a sample variance: sqrt((kurtosis - 1) / n) with kurtosis 6 for
# Laplace and 3 for Gaussian, i.e. 0.35% and 0.22% at n = 400k; we allow 6 of them (p ~ 2e-9).
LAPLACE_VAR_TOL = 6 * math.sqrt(5 / N)
GAUSS_VAR_TOL = 6 * math.sqrt(2 / N)


def test_os_entropy_generators_differ() -> None:
    u = torch.zeros(2, 16)
    mech = LaplaceL1(epsilon=1.0)
    first, record = mech(u, generator=noise_generator()[0])
    second, _ = mech(u, generator=noise_generator()[0])
    assert not torch.equal(first, second)
    assert record.noise_source == OS_ENTROPY and record.private
    third, default = mech(u)  # generator=None draws a fresh OS-entropy generator
    assert default.noise_source == OS_ENTROPY and default.private
    assert not torch.equal(third, first)


def test_seeded_generators_match_and_are_not_private(caplog) -> None:
    u = torch.randn(3, 10)
    mech = GaussianL2(epsilon=1.0, delta=1e-6)
    with caplog.at_level(logging.WARNING, logger="dpglow.privacy.noise"):
        generator, source = noise_generator(noise_seed=123)
    assert source == SEEDED == "seeded (NOT PRIVATE)"
    assert "NOT private" in caplog.text
    first, record = mech(u, generator=generator)
    second, _ = mech(u, generator=noise_generator(noise_seed=123)[0])
    assert torch.equal(first, second)
    assert record.noise_source == SEEDED and not record.private


def test_noise_source_keyword() -> None:
    u = torch.randn(2, 5)
    mech = LaplaceElementwise(epsilon=1.0)
    plain = torch.Generator().manual_seed(0)
    _, unknown = mech(u, generator=plain)
    assert unknown.noise_source == UNVERIFIED and not unknown.private
    _, stated = mech(u, generator=plain, noise_source="os_entropy")
    assert stated.private
    seeded, source = noise_generator(noise_seed=1)
    _, explicit = mech(u, generator=seeded, noise_source=source)
    assert explicit.noise_source == SEEDED and not explicit.private
    with pytest.raises(ValueError, match="cannot be os_entropy"):
        mech(u, generator=seeded, noise_source="os_entropy")
    with pytest.raises(ValueError, match="noise_source"):
        mech(u, generator=seeded, noise_source="urandom")
    with pytest.raises(TypeError):
        noise_generator(noise_seed=True)


@pytest.mark.parametrize("scale", [0.5, 20.0])
def test_laplace_moments(scale: float) -> None:
    generator = noise_generator(noise_seed=7)[0]
    x = laplace_noise(
        (N,), scale, generator=generator, device=torch.device("cpu"), dtype=torch.float64
    )
    assert bool(torch.isfinite(x).all())
    assert abs(float(x.var()) / (2 * scale**2) - 1) < LAPLACE_VAR_TOL
    assert abs(float(x.mean())) < 6 * math.sqrt(2) * scale / math.sqrt(N)
    # Tail shape: P[|X| > t b] = e^-t; binomial sd sqrt(p (1 - p) / n), 6 sd allowed.
    for t in (1.0, 4.0):
        p = math.exp(-t)
        observed = float((x.abs() > t * scale).double().mean())
        assert abs(observed - p) < 6 * math.sqrt(p * (1 - p) / N)


def test_gaussian_moments() -> None:
    generator = noise_generator(noise_seed=8)[0]
    x = gaussian_noise(
        (N,), 3.0, generator=generator, device=torch.device("cpu"), dtype=torch.float64
    )
    assert abs(float(x.var()) / 9.0 - 1) < GAUSS_VAR_TOL
    assert abs(float(x.mean())) < 6 * 3.0 / math.sqrt(N)


def test_mechanism_noise_variance(seeded) -> None:
    """Inside the clip set the released value is input + noise, with the recorded scale."""
    u = torch.zeros(N // 4, 4)
    lap, record = LaplaceElementwise(epsilon=2.0, clip=1.0)(u, generator=seeded(3))
    assert abs(float(lap.double().var()) / (2 * record.noise_scale**2) - 1) < LAPLACE_VAR_TOL
    gauss, record = GaussianL2(epsilon=1.0, delta=1e-5, radius=1.0)(u, generator=seeded(4))
    assert abs(float(gauss.double().var()) / record.noise_scale**2 - 1) < GAUSS_VAR_TOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device() -> None:
    u = torch.randn(4, 32, device="cuda")
    generator, _ = noise_generator(device="cuda")
    out, record = LaplaceL1(epsilon=1.0)(u, generator=generator)
    assert out.device == u.device and record.private
    with pytest.raises(ValueError, match="generator is on"):
        LaplaceL1(epsilon=1.0)(u, generator=noise_generator()[0])
