"""A distinguishing event chosen on one half of the runs and bounded on the other.

For every statistic the attacker computes from a release, the events {s > t} and {s <= t}
(thresholds at the quantiles of the first half's values, in both orders) are scored on the first
half by their own Clopper-Pearson bound; the best one is then counted on the second half, whose
runs played no part in choosing it, so its Clopper-Pearson bound (each side at half the failure
probability) is a valid lower bound on epsilon with probability at least 1 - alpha.
A generic statistic joins the attacker's own: a logistic regression on 16 x 16 thumbnails,
fitted on the first half (its event is chosen on out-of-fold decisions of two models fitted on
either fold of the first half, since a model scores its own training data too well).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dpglow.audit.bounds import ratio_bound

THRESHOLDS = 64
THUMBNAIL = "thumbnail_logreg"


def _thumbnails(images: torch.Tensor) -> np.ndarray:
    x = images.double() / 255.0
    side = min(16, x.shape[-1])
    return F.adaptive_avg_pool2d(x, side).flatten(1).numpy()


def thumbnail_classifier(fit_a: torch.Tensor, fit_b: torch.Tensor):
    """A logistic regression on thumbnails separating the first half's releases of b from a
    (standardised, L2-regularised); returns its decision function on released images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([_thumbnails(fit_a), _thumbnails(fit_b)])
    y = np.r_[np.zeros(len(fit_a)), np.ones(len(fit_b))]
    if len(np.unique(x, axis=0)) < 2:  # every release identical: nothing to learn from pixels
        return lambda images: torch.zeros(len(images), dtype=torch.float64)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(x, y)
    return lambda images: torch.from_numpy(model.decision_function(_thumbnails(images)))


def _out_of_fold(fit_a: torch.Tensor, fit_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The thumbnail classifier's decisions on the first half's releases, each from a model
    fitted on the other fold (two folds), so that choosing its event is not fooled by overfit."""
    ha, hb = len(fit_a) // 2, len(fit_b) // 2
    first = thumbnail_classifier(fit_a[:ha], fit_b[:hb])
    second = thumbnail_classifier(fit_a[ha:], fit_b[hb:])
    s_a = torch.cat([second(fit_a[:ha]), first(fit_a[ha:])]).double()
    s_b = torch.cat([second(fit_b[:hb]), first(fit_b[hb:])]).double()
    return s_a, s_b


def _events(stat_a: torch.Tensor, stat_b: torch.Tensor):
    """(threshold, above, favoured) for the quantile thresholds: the event is {s > t} when
    ``above`` else {s <= t}; ``favoured`` is the input it is more likely under."""
    pooled = torch.cat([stat_a, stat_b]).double()
    qs = torch.linspace(0, 1, THRESHOLDS + 2, dtype=torch.float64)[1:-1]
    for t in torch.quantile(pooled, qs).unique().tolist():
        for above in (True, False):
            for favoured in ("a", "b"):
                yield t, above, favoured


def _count(stat: torch.Tensor, t: float, above: bool) -> int:
    return int((stat > t).sum()) if above else int((stat <= t).sum())


def _bound(stat_a, stat_b, t, above, favoured, alpha) -> float:
    k_a, k_b = _count(stat_a, t, above), _count(stat_b, t, above)
    n_a, n_b = len(stat_a), len(stat_b)
    if favoured == "a":
        return ratio_bound(k_a, n_a, k_b, n_b, alpha=alpha)
    return ratio_bound(k_b, n_b, k_a, n_a, alpha=alpha)


def held_out_bound(
    releases_a: torch.Tensor,
    releases_b: torch.Tensor,
    statistics: dict[str, Any],
    *,
    alpha: float,
) -> dict[str, Any]:
    """The epsilon lower bound of the event chosen on the first half of each side's releases
    (uint8 [N, 1, S, S]) and counted on the second half, at failure probability ``alpha``."""
    half_a, half_b = len(releases_a) // 2, len(releases_b) // 2
    if min(half_a, half_b) < 10:
        raise ValueError("an audit needs at least 20 releases of each input")
    fit_a, test_a = releases_a[:half_a], releases_a[half_a:]
    fit_b, test_b = releases_b[:half_b], releases_b[half_b:]
    statistics = {**statistics, THUMBNAIL: thumbnail_classifier(fit_a, fit_b)}
    best: dict[str, Any] = {"fit_bound": -math.inf}
    for name, statistic in statistics.items():
        if name == THUMBNAIL:  # scored out of fold: a model is no judge of its own data
            s_a, s_b = _out_of_fold(fit_a, fit_b)
        else:
            s_a, s_b = statistic(fit_a).double(), statistic(fit_b).double()
        for t, above, favoured in _events(s_a, s_b):
            value = _bound(s_a, s_b, t, above, favoured, alpha / 2)
            if value > best["fit_bound"]:
                best = {
                    "statistic": name,
                    "threshold": t,
                    "event": f"s {'>' if above else '<='} {t:.6g}, more likely under {favoured}",
                    "above": above,
                    "favoured": favoured,
                    "fit_bound": value,
                }
    if "statistic" not in best:  # no event separates anything: the bound is 0
        return {"epsilon_lower_bound": 0.0, "statistic": None, "n_fit": half_a, "n_test": 0}
    statistic = statistics[best["statistic"]]
    s_a, s_b = statistic(test_a).double(), statistic(test_b).double()
    t, above, favoured = best["threshold"], best["above"], best["favoured"]
    bound = _bound(s_a, s_b, t, above, favoured, alpha / 2)
    return {
        "epsilon_lower_bound": max(0.0, bound),
        "statistic": best["statistic"],
        "event": best["event"],
        "fit_bound": best["fit_bound"],
        "test_counts": {"a": _count(s_a, t, above), "b": _count(s_b, t, above)},
        "n_fit": [len(fit_a), len(fit_b)],
        "n_test": [len(test_a), len(test_b)],
    }
