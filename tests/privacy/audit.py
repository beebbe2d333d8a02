"""Statistical privacy audit (docs/evaluation.md, "Mechanism audit"): a lower bound on epsilon.

For two neighbouring inputs a and b, the mechanism is sampled n times on each; for every
threshold event E = {stat > t} (and its complement, in both orders) DP requires
P[E | a] <= e^epsilon P[E | b] + delta, so with one-sided Clopper-Pearson bounds
    epsilon >= ln((lower(P[E | a]) - delta) / upper(P[E | b])).
The maximum over events is a lower bound on the true epsilon that holds with probability at least
1 - failure_probability: Bonferroni over the 4 one-sided binomial bounds per threshold (k_a and
k_b, each bounded below and above; complements reuse them). A correct mechanism must never
produce a bound above its claim.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

try:  # scipy comes with scikit-image (a torchxrayvision dependency); the fallback is looser
    from scipy.stats import beta as _beta
except ImportError:  # pragma: no cover
    _beta = None

log = logging.getLogger(__name__)

FAILURE_PROBABILITY = 1e-6


def _kl(p: float, q: float) -> float:
    """Bernoulli KL divergence KL(p || q)."""
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def chernoff_bounds(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided bounds from the Chernoff-Hoeffding tail exp(-n KL): valid, looser than CP."""
    p_hat, budget = k / n, math.log(1 / alpha) / n

    def solve(lo: float, hi: float, inside_at_lo: bool) -> float:
        # bisection for the point where n KL(p_hat || q) crosses log(1 / alpha)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if (_kl(p_hat, mid) <= budget) == inside_at_lo:
                lo = mid
            else:
                hi = mid
        return lo if not inside_at_lo else hi

    lower = 0.0 if k == 0 else solve(0.0, p_hat, inside_at_lo=False)
    upper = 1.0 if k == n else solve(p_hat, 1.0, inside_at_lo=True)
    return lower, upper


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Lower and upper one-sided bounds, each failing with probability <= alpha."""
    if _beta is None:  # pragma: no cover
        return chernoff_bounds(k, n, alpha)
    lower = 0.0 if k == 0 else float(_beta.ppf(alpha, k, n - k + 1))
    upper = 1.0 if k == n else float(_beta.ppf(1 - alpha, k + 1, n - k))
    return lower, upper


def _ratio_bound(p_lower: float, q_upper: float, delta: float) -> float:
    return math.log((p_lower - delta) / q_upper) if p_lower > delta and q_upper > 0 else -math.inf


def epsilon_lower_bound(
    stat_a: torch.Tensor,
    stat_b: torch.Tensor,
    thresholds: Sequence[float],
    *,
    delta: float = 0.0,
    failure_probability: float = FAILURE_PROBABILITY,
) -> float:
    """The largest epsilon lower bound over the threshold events of two 1-D samples."""
    n_a, n_b = stat_a.numel(), stat_b.numel()
    alpha = failure_probability / (4 * len(thresholds))
    best, best_event = -math.inf, ""
    for t in thresholds:
        lo_a, hi_a = clopper_pearson(int((stat_a > t).sum()), n_a, alpha)
        lo_b, hi_b = clopper_pearson(int((stat_b > t).sum()), n_b, alpha)
        candidates = {
            f"P[s>{t}|a] vs b": _ratio_bound(lo_a, hi_b, delta),
            f"P[s>{t}|b] vs a": _ratio_bound(lo_b, hi_a, delta),
            f"P[s<={t}|a] vs b": _ratio_bound(1 - hi_a, 1 - lo_b, delta),
            f"P[s<={t}|b] vs a": _ratio_bound(1 - hi_b, 1 - lo_a, delta),
        }
        for event, bound in candidates.items():
            if bound > best:
                best, best_event = bound, event
    log.info("epsilon lower bound %.4f from %s (n=%d, %d)", best, best_event, n_a, n_b)
    return best
