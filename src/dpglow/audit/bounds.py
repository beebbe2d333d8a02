"""Clopper-Pearson bounds and the epsilon lower bound of a distinguishing event.

For two inputs a and b and an event E of the release, epsilon-DP requires
P[E | a] <= e^epsilon P[E | b] + delta. With one-sided Clopper-Pearson bounds on the two
probabilities from independent runs, epsilon >= ln((lower(P[E | a]) - delta) / upper(P[E | b]))
holds with probability at least 1 - (the two bounds' failure probabilities). A correct mechanism
must never produce a bound above its claim (beyond that failure probability).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from scipy.stats import beta

log = logging.getLogger(__name__)


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided lower and upper bounds on a binomial probability from k successes in n, each
    failing with probability <= ``alpha``."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    lower = 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))
    return lower, upper


def ratio_bound(k_a: int, n_a: int, k_b: int, n_b: int, *, alpha: float, delta: float = 0.0):
    """ln((lower(k_a / n_a) - delta) / upper(k_b / n_b)), each bound at failure ``alpha``
    (-inf where the lower bound does not clear delta)."""
    lower = clopper_pearson(k_a, n_a, alpha)[0]
    upper = clopper_pearson(k_b, n_b, alpha)[1]
    return math.log((lower - delta) / upper) if lower > delta and upper > 0 else -math.inf


def epsilon_lower_bound(
    stat_a: torch.Tensor,
    stat_b: torch.Tensor,
    thresholds: Sequence[float],
    *,
    delta: float = 0.0,
    failure_probability: float = 1e-6,
) -> float:
    """The largest lower bound over the events {stat > t} and {stat <= t} for every threshold,
    in both orders, with a Bonferroni split of ``failure_probability`` over the 4 one-sided
    binomial bounds per threshold (complements reuse them)."""
    n_a, n_b = stat_a.numel(), stat_b.numel()
    alpha = failure_probability / (4 * len(thresholds))
    best, best_event = -math.inf, ""
    for t in thresholds:
        k_a, k_b = int((stat_a > t).sum()), int((stat_b > t).sum())
        candidates = {
            f"P[s>{t}|a] vs b": ratio_bound(k_a, n_a, k_b, n_b, alpha=alpha, delta=delta),
            f"P[s>{t}|b] vs a": ratio_bound(k_b, n_b, k_a, n_a, alpha=alpha, delta=delta),
            f"P[s<={t}|a] vs b": ratio_bound(
                n_a - k_a, n_a, n_b - k_b, n_b, alpha=alpha, delta=delta
            ),
            f"P[s<={t}|b] vs a": ratio_bound(
                n_b - k_b, n_b, n_a - k_a, n_a, alpha=alpha, delta=delta
            ),
        }
        for event, bound in candidates.items():
            if bound > best:
                best, best_event = bound, event
    log.info("epsilon lower bound %.4f from %s (n=%d, %d)", best, best_event, n_a, n_b)
    return best
