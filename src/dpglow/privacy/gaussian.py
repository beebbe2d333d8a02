"""Calibration of the analytic Gaussian mechanism (Balle & Wang 2018, ICML, "Improving the Gaussian
mechanism for differential privacy: analytical calibration and optimal denoising").

Theorem 8: N(0, sigma^2) noise on a query of L2 sensitivity Delta is (epsilon, delta)-DP iff
    Phi(Delta / (2 sigma) - epsilon sigma / Delta)
        - e^epsilon Phi(-Delta / (2 sigma) - epsilon sigma / Delta) <= delta.
Algorithm 1 finds the smallest such sigma through a change of variables and a scalar search; we
solve the same condition directly by bisection on sigma in log space (the left side decreases in
sigma), which stays accurate for large epsilon and tiny delta where e^epsilon Phi(.) over- or
underflows in plain floating point. The result is the smallest sigma up to a relative 1e-12,
rounded up so that the condition holds.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from dpglow.privacy.validation import check_delta, check_epsilon, check_positive


def _log_ndtr(x: float) -> float:
    return float(torch.special.log_ndtr(torch.tensor(x, dtype=torch.float64)))


def gaussian_delta(sigma: float, *, epsilon: float, sensitivity: float) -> float:
    """The smallest delta for which N(0, sigma^2) noise is (epsilon, delta)-DP (Theorem 8)."""
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    return math.exp(_log_ndtr(a - b)) - math.exp(epsilon + _log_ndtr(-a - b))


def classical_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """Dwork & Roth's sigma = Delta sqrt(2 ln(1.25 / delta)) / epsilon (valid for epsilon < 1)."""
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


@lru_cache(maxsize=256, typed=True)
def analytic_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """The smallest sigma making N(0, sigma^2) noise (epsilon, delta)-DP at L2 ``sensitivity``."""
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    sensitivity = check_positive("sensitivity", sensitivity)
    if delta == 0.0:
        raise ValueError("the Gaussian mechanism needs delta > 0")
    if math.isinf(epsilon):
        return 0.0

    def ok(sigma: float) -> bool:
        return gaussian_delta(sigma, epsilon=epsilon, sensitivity=sensitivity) <= delta

    # Bracket: delta(sigma) -> 1 > delta as sigma -> 0 and -> 0 as sigma -> inf.
    hi = sensitivity * max(1.0, math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon)
    while not ok(hi):
        hi *= 2.0
    lo = hi / 2.0
    while ok(lo):
        hi, lo = lo, lo / 2.0
    while hi / lo - 1.0 > 1e-12:
        mid = math.sqrt(lo * hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
