"""Utility metrics (U1, U2 of docs/evaluation.md): per-pathology ROC-AUC and its retention."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

log = logging.getLogger(__name__)


def auc_per_pathology(
    scores: Tensor, labels: Tensor, pathologies: Sequence[str]
) -> dict[str, float]:
    """ROC-AUC per pathology column; NaN labels are unknown and skipped, never negatives.

    ``scores`` and ``labels`` are ``[N, P]``; known labels must be 0 or 1. A column without at least
    one positive and one negative among its known labels gets NaN (AUC is undefined there).
    """
    scores = torch.as_tensor(scores)
    labels = torch.as_tensor(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must both be [N, P] with equal shapes, "
            f"got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if len(pathologies) != scores.shape[1]:
        raise ValueError(
            f"got {len(pathologies)} pathology names for {scores.shape[1]} score columns"
        )
    if len(set(pathologies)) != len(pathologies):
        raise ValueError(f"pathology names must be unique, got {list(pathologies)}")
    scores = scores.double()
    labels = labels.double()
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; the classifier output must be finite")
    known = ~torch.isnan(labels)
    if not ((labels[known] == 0) | (labels[known] == 1)).all():
        raise ValueError("known labels must be 0 or 1 (use NaN for unknown)")

    aucs: dict[str, float] = {}
    for j, name in enumerate(pathologies):
        mask = known[:, j]
        y = labels[mask, j].long()
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.numel():
            log.debug("AUC of %r undefined: %d positives of %d known", name, n_pos, y.numel())
            aucs[name] = math.nan
            continue
        s = scores[mask, j]
        # binary_auroc squashes scores outside [0, 1] with a sigmoid, which saturates for large
        # logits and would create false ties; dense ranks in [0, 1] keep the order and true ties.
        _, rank = torch.unique(s, sorted=True, return_inverse=True)
        s01 = rank.double() / max(int(rank.max()), 1)
        aucs[name] = float(binary_auroc(s01, y, thresholds=None))
    return aucs


def mean_auc(aucs: Mapping[str, float] | Iterable[float]) -> float:
    """Mean of the defined AUCs (NaN ones skipped); NaN when none is defined."""
    values = list(aucs.values()) if isinstance(aucs, Mapping) else list(aucs)
    defined = [float(v) for v in values if not math.isnan(float(v))]
    return sum(defined) / len(defined) if defined else math.nan


def _retention(private: float, original: float) -> float:
    private, original = float(private), float(original)
    # The denominator is the classifier's skill above chance on originals. At or below chance there
    # is no skill to retain, and the ratio would explode near 0.5 or flip sign below it.
    if math.isnan(private) or math.isnan(original) or original <= 0.5:
        return math.nan
    return (private - 0.5) / (original - 0.5)


def auc_retention(
    auc_private: float | Mapping[str, float], auc_original: float | Mapping[str, float]
) -> float | dict[str, float]:
    """AUC retention ``(AUC_priv - 0.5) / (AUC_orig - 0.5)``: 1 = all skill kept, 0 = chance.

    Two floats give a float; two dicts (e.g. from :func:`auc_per_pathology`) with the same keys give
    a dict per pathology. NaN where ``AUC_orig <= 0.5`` (no skill to retain) or either AUC is NaN.
    """
    if isinstance(auc_private, Mapping) != isinstance(auc_original, Mapping):
        raise ValueError("pass two floats or two dicts of AUCs, not one of each")
    if isinstance(auc_private, Mapping) and isinstance(auc_original, Mapping):
        if set(auc_private) != set(auc_original):
            raise ValueError(f"pathologies differ: {sorted(auc_private)} vs {sorted(auc_original)}")
        return {k: _retention(auc_private[k], auc_original[k]) for k in auc_original}
    return _retention(auc_private, auc_original)


def ldp_auc_ceiling(epsilon: float) -> float:
    """e^eps / (1 + e^eps): the largest ROC-AUC any classifier reading an eps-LDP release can
    reach between two classes (for every pair of inputs the release's distributions are
    e^eps-close, so every ROC curve lies under the eps-DP trade-off curve, whose area is this).
    1.0 for eps = inf."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
        raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
    return 1.0 / (1.0 + math.exp(-epsilon)) if math.isfinite(epsilon) else 1.0


def retention_ceiling(epsilon: float, auc_original: float) -> float:
    """The largest AUC retention an eps-LDP release can have:
    ``min(1, (ldp_auc_ceiling(eps) - 0.5) / (AUC_orig - 0.5))``; NaN where ``AUC_orig <= 0.5``."""
    if not auc_original > 0.5:
        return math.nan
    return min(1.0, (ldp_auc_ceiling(epsilon) - 0.5) / (auc_original - 0.5))


def released_bit_auc(decisions: Tensor, labels: Tensor, *, flip_probability: float) -> float:
    """The expected ROC-AUC against ``labels`` of a reader that sees, for each image, its binary
    ``decision`` after randomized response flips it with probability ``flip_probability``, and
    nothing else (ties count one half): ``0.5 + 0.5 (TPR - FPR)(1 - 2 p)``, with TPR and FPR the
    decisions' rates on the positives and negatives. It bounds what any rendering of a released
    label can keep: the rendering depends on the image only through the released bit.

    ``decisions`` and ``labels`` are 1-D {0, 1} tensors of the same length (NaN labels skipped);
    NaN when a class is missing."""
    d, y = torch.as_tensor(decisions).double().flatten(), torch.as_tensor(labels).double().flatten()
    if d.shape != y.shape:
        raise ValueError(f"decisions and labels differ in shape: {d.shape} vs {y.shape}")
    if not 0.0 <= flip_probability <= 0.5:
        raise ValueError(f"flip_probability must lie in [0, 0.5], got {flip_probability}")
    known = ~torch.isnan(y)
    d, y = d[known], y[known]
    if not bool(((d == 0) | (d == 1)).all()):
        raise ValueError("decisions must be 0 or 1")
    if not (y == 1).any() or not (y == 0).any():
        return math.nan
    tpr, fpr = float(d[y == 1].mean()), float(d[y == 0].mean())
    return 0.5 + 0.5 * (tpr - fpr) * (1.0 - 2.0 * flip_probability)


def youden_threshold(scores: Tensor, labels: Tensor) -> float:
    """The score threshold t maximising TPR - FPR (Youden's J) of the rule ``score > t`` on
    ``scores`` [N] against binary ``labels`` [N] (NaN labels skipped): the midpoint between the
    two consecutive distinct scores where J peaks (the lowest such t on ties). J does not depend
    on the class frequencies, so neither does t. Needs both classes."""
    s, y = torch.as_tensor(scores).double().flatten(), torch.as_tensor(labels).double().flatten()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in shape: {tuple(s.shape)} vs {tuple(y.shape)}")
    known = ~torch.isnan(y)
    s, y = s[known], y[known]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("youden_threshold needs positive and negative labels")
    values = s.unique(sorted=True)
    cuts = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    # the share of each class scored above each cut, from the sorted scores of the class
    tpr = 1 - torch.searchsorted(s[y == 1].sort().values, cuts, right=True) / n_pos
    fpr = 1 - torch.searchsorted(s[y == 0].sort().values, cuts, right=True) / n_neg
    return float(cuts[int(torch.argmax(tpr - fpr))])
