"""Analytic Gaussian calibration (Balle & Wang 2018) against Theorem 8 and Algorithm 1."""

from __future__ import annotations

import math

import pytest

from dpglow.privacy import analytic_gaussian_sigma, classical_gaussian_sigma, gaussian_delta


def _phi(t: float) -> float:
    return 0.5 * math.erfc(-t / math.sqrt(2))


def _algorithm1(epsilon: float, delta: float, sensitivity: float) -> float:
    """Balle & Wang's Algorithm 1, transcribed plainly (fine for moderate epsilon)."""
    delta0 = _phi(0) - math.exp(epsilon) * _phi(-math.sqrt(2 * epsilon))

    def b_plus(v: float) -> float:
        return _phi(math.sqrt(epsilon * v)) - math.exp(epsilon) * _phi(
            -math.sqrt(epsilon * (v + 2))
        )

    def b_minus(u: float) -> float:
        return _phi(-math.sqrt(epsilon * u)) - math.exp(epsilon) * _phi(
            -math.sqrt(epsilon * (u + 2))
        )

    plus = delta >= delta0
    f = b_plus if plus else b_minus  # b_plus increases, b_minus decreases in its argument
    lo, hi = 0.0, 1.0
    while (f(hi) <= delta) == plus:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (f(mid) <= delta) == plus:
            lo = mid
        else:
            hi = mid
    v = 0.5 * (lo + hi)
    alpha = math.sqrt(1 + v / 2) + (-1 if plus else 1) * math.sqrt(v / 2)
    return alpha * sensitivity / math.sqrt(2 * epsilon)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-9])
def test_smaller_than_classical(epsilon: float, delta: float) -> None:
    analytic = analytic_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=2.0)
    classical = classical_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=2.0)
    assert 0 < analytic < classical


@pytest.mark.parametrize(
    ("epsilon", "delta"), [(0.05, 1e-6), (0.5, 1e-5), (1.0, 1e-5), (3.0, 1e-3), (8.0, 1e-8)]
)
def test_theorem8_tight_and_algorithm1(epsilon: float, delta: float) -> None:
    sigma = analytic_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=1.0)
    # The privacy-loss condition holds, with equality up to the bisection tolerance.
    achieved = gaussian_delta(sigma, epsilon=epsilon, sensitivity=1.0)
    assert achieved <= delta
    assert achieved == pytest.approx(delta, rel=1e-6)
    assert gaussian_delta(sigma * (1 - 1e-6), epsilon=epsilon, sensitivity=1.0) > delta
    assert sigma == pytest.approx(_algorithm1(epsilon, delta, 1.0), rel=1e-6)


def test_known_value_and_scaling() -> None:
    # sigma = 3.7306 for Delta = 1, epsilon = 1, delta = 1e-5 (the classical formula gives 4.845).
    assert analytic_gaussian_sigma(epsilon=1.0, delta=1e-5, sensitivity=1.0) == pytest.approx(
        3.7306, abs=1e-4
    )
    one = analytic_gaussian_sigma(epsilon=0.7, delta=1e-6, sensitivity=1.0)
    assert analytic_gaussian_sigma(epsilon=0.7, delta=1e-6, sensitivity=6.0) == pytest.approx(
        6 * one
    )


def test_extreme_parameters() -> None:
    for epsilon, delta in [(200.0, 1e-12), (1e-4, 0.5), (50.0, 1e-15)]:
        sigma = analytic_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=1.0)
        assert math.isfinite(sigma) and sigma > 0
        assert gaussian_delta(sigma, epsilon=epsilon, sensitivity=1.0) <= delta
    assert analytic_gaussian_sigma(epsilon=math.inf, delta=1e-6, sensitivity=1.0) == 0.0
    with pytest.raises(ValueError):
        analytic_gaussian_sigma(epsilon=1.0, delta=0.0, sensitivity=1.0)
