"""Metrics of the evaluation protocol (docs/evaluation.md): utility, privacy and fidelity.

All functions are pure: tensors in, Python numbers (or dicts of them) out. Inputs are validated and
a bad shape or value raises ``ValueError`` saying what was expected.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

log = logging.getLogger(__name__)

Metric = Literal["l2", "cosine"]
_METRICS = ("l2", "cosine")


# --------------------------------------------------------------------------- validation helpers


def _matrix(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D tensor [N, F], got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; clean or drop those rows first")
    return x


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")


def _check_chunk(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def _similarity(a: Tensor, b: Tensor, metric: str) -> Tensor:
    """Similarity ``[len(a), len(b)]``, larger = closer (callers pass float64: near-duplicates)."""
    if metric == "cosine":
        # eps keeps an all-zero row from producing NaN; it is then equally far from everything.
        a = torch.nn.functional.normalize(a, dim=1, eps=1e-12)
        b = torch.nn.functional.normalize(b, dim=1, eps=1e-12)
        return a @ b.T
    # Negative squared L2 via the expansion: one matmul instead of an [n, m, F] difference tensor.
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * (a @ b.T)
    return -sq.clamp_min(0.0)


# --------------------------------------------------------------------------- utility (U1, U2)


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


# --------------------------------------------------------------------------- privacy (P1, P2)


def linkage_topk(
    private: Tensor,
    original: Tensor,
    *,
    ks: Sequence[int] = (1, 5),
    metric: Metric = "l2",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """P1 linkage: for each private row i, rank all N originals; is original i in the top k?

    Rows are paired: ``private[i]`` was made from ``original[i]``. Ties are broken at random in
    expectation (a constant output scores chance, not 1). Returns ``top{k}`` and ``chance_top{k}``
    (= k/N) for each k, and ``n``. Distances are computed ``chunk_size`` private rows at a time.
    """
    private = _matrix(private, "private")
    original = _matrix(original, "original")
    if private.shape != original.shape:
        raise ValueError(
            f"private and original must be paired [N, F] tensors of the same shape, "
            f"got {tuple(private.shape)} and {tuple(original.shape)}"
        )
    _check_metric(metric)
    _check_chunk(chunk_size)
    n = private.shape[0]
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or not 1 <= k <= n for k in ks):
        raise ValueError(f"ks must be ints in [1, N={n}], got {ks}")

    original = original.double()
    hits = torch.zeros(len(ks), dtype=torch.float64)
    kt = torch.tensor(ks, dtype=torch.float64)
    for start in range(0, n, chunk_size):
        block = private[start : start + chunk_size].double()
        sim = _similarity(block, original, metric)
        rows = torch.arange(block.shape[0])
        true = sim[rows, rows + start].unsqueeze(1)
        better = (sim > true).sum(1, dtype=torch.float64)
        tied = (sim == true).sum(1, dtype=torch.float64) - 1  # others tied with the true original
        # Random tie-breaking: the true original's rank is uniform on better+1 .. better+tied+1.
        p_hit = ((kt.unsqueeze(0) - better.unsqueeze(1)) / (tied.unsqueeze(1) + 1)).clamp(0, 1)
        hits += p_hit.sum(0)

    out: dict[str, float] = {"n": float(n)}
    for k, h in zip(ks, hits.tolist(), strict=True):
        out[f"top{k}"] = h / n
        out[f"chance_top{k}"] = k / n
    return out


def _expected_random_ap(n_relevant: Tensor, n_candidates: int) -> Tensor:
    """Expected AP of a uniformly random ranking of M candidates, R of them relevant.

    E[AP] = (1/M) [H_M + (R-1)/(M-1) (M - H_M)], from E[precision at a relevant item's rank k]
    = (1 + (k-1)(R-1)/(M-1)) / k summed over k.
    """
    m = n_candidates
    r = n_relevant.double()
    if m == 1:
        return torch.ones_like(r)
    h_m = sum(1.0 / k for k in range(1, m + 1))
    return (h_m + (r - 1) / (m - 1) * (m - h_m)) / m


def reidentification(
    query: Tensor,
    patients: Sequence[str],
    *,
    gallery: Tensor | None = None,
    metric: Metric = "l2",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """P2 re-identification: rank the *other* images of all patients; find the same patient.

    ``query[i]`` and ``gallery[i]`` are the same image (e.g. privatized and original) of patient
    ``patients[i]``; ``gallery`` defaults to ``query`` itself. Gallery row i is always excluded for
    query i, so a query is only ever matched to other images. Queries whose patient has no other
    image are skipped. Returns ``top1`` (the best candidate is the same patient) and ``map`` (AP as
    in scikit-learn: tied scores form one threshold), the chance levels of a random ranking
    ``chance_top1`` and ``chance_map``, ``n_queries`` evaluated and ``n_skipped``. Top-1 breaks ties
    at random in expectation.
    """
    query = _matrix(query, "query")
    gallery = query if gallery is None else _matrix(gallery, "gallery")
    if gallery.shape != query.shape:
        raise ValueError(
            f"gallery must be paired with query (same [N, F] shape), "
            f"got {tuple(gallery.shape)} and {tuple(query.shape)}"
        )
    n = query.shape[0]
    if len(patients) != n:
        raise ValueError(f"got {len(patients)} patient ids for {n} query rows")
    _check_metric(metric)
    _check_chunk(chunk_size)

    index = {p: j for j, p in enumerate(dict.fromkeys(str(p) for p in patients))}
    pid = torch.tensor([index[str(p)] for p in patients])
    counts = torch.bincount(pid)
    n_rel_all = counts[pid] - 1  # other images of the same patient
    evaluated = n_rel_all > 0
    n_queries = int(evaluated.sum())
    result = {"n_queries": float(n_queries), "n_skipped": float(n - n_queries)}
    if n_queries == 0:
        log.warning("re-identification: no patient has two images; all metrics are NaN")
        return result | dict.fromkeys(("top1", "map", "chance_top1", "chance_map"), math.nan)

    gallery = gallery.double()
    top1_sum = 0.0
    ap_sum = 0.0
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        keep = evaluated[start:stop]
        if not keep.any():
            continue
        rows = torch.arange(start, stop)[keep]
        sim = _similarity(query[rows].double(), gallery, metric)
        relevant = pid[rows].unsqueeze(1) == pid.unsqueeze(0)
        local = torch.arange(rows.numel())
        # Features are finite, so -inf puts self alone at the end, in a group with no relevant item.
        sim[local, rows] = -math.inf
        relevant[local, rows] = False
        n_rel = n_rel_all[rows].double()

        best = sim.max(1, keepdim=True).values
        top = sim == best
        top1_sum += float(((top & relevant).sum(1) / top.sum(1)).sum())

        s, order = torch.sort(sim, dim=1, descending=True, stable=True)
        tp = relevant.gather(1, order).double().cumsum(1)
        ranks = torch.arange(1, n + 1, dtype=torch.float64)
        # Precision/recall are only read at the end of each group of tied scores.
        group_end = torch.ones_like(s, dtype=torch.bool)
        group_end[:, :-1] = s[:, :-1] != s[:, 1:]
        tp_end = torch.where(group_end, tp, torch.zeros_like(tp))
        prev_tp = torch.zeros_like(tp)
        # tp at the previous group end: running max of tp_end shifted by one (tp is monotone).
        prev_tp[:, 1:] = torch.cummax(tp_end, 1).values[:, :-1]
        gain = torch.where(group_end, tp - prev_tp, torch.zeros_like(tp))
        ap = (gain * tp / ranks).sum(1) / n_rel
        ap_sum += float(ap.sum())

    n_rel_eval = n_rel_all[evaluated]
    result["top1"] = top1_sum / n_queries
    result["map"] = ap_sum / n_queries
    result["chance_top1"] = float((n_rel_eval.double() / (n - 1)).mean())
    result["chance_map"] = float(_expected_random_ap(n_rel_eval, n - 1).mean())
    return result


# --------------------------------------------------------------------------- fidelity


def _image_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.ndim != 4 or a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(
            f"expected two non-empty [N, C, H, W] tensors of equal shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(f"expected float images, got {a.dtype} and {b.dtype}")
    return a.double(), b.double()


def _check_range(data_range: float) -> None:
    if not data_range > 0 or math.isinf(data_range):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")


def psnr(a: Tensor, b: Tensor, *, data_range: float = 1.0) -> float:
    """Mean over images of the per-image PSNR in dB; inf if any image pair is identical."""
    a, b = _image_pair(a, b)
    _check_range(data_range)
    # Per image (dim=C,H,W), then averaged: the protocol reports image-level fidelity, and a
    # global MSE would let a few bad images hide in the batch.
    values = peak_signal_noise_ratio(a, b, data_range=data_range, dim=(1, 2, 3), reduction="none")
    return float(values.mean())


def ssim(a: Tensor, b: Tensor, *, data_range: float = 1.0) -> float:
    """Mean SSIM over images (torchmetrics defaults: 11x11 Gaussian window, sigma 1.5)."""
    a, b = _image_pair(a, b)
    _check_range(data_range)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM's 11x11 window needs images of at least 11x11, got {a.shape[-2:]}")
    # float32 is ample for a similarity in [-1, 1] and the Gaussian filtering is ~10x faster.
    return float(structural_similarity_index_measure(a.float(), b.float(), data_range=data_range))


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, F]`` and ``[M, F]``.

    ``||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^{1/2})`` in float64. With centred
    data ``A``, ``B``, the non-zero eigenvalues of ``S_a S_b`` are the squared singular values of
    ``A B^T / sqrt((N-1)(M-1))``, so when there are fewer images than features (the usual case
    for embeddings) the trace term is the nuclear norm of that ``[N, M]`` matrix: exact, and no
    ``F x F`` eigendecomposition. Otherwise the eigenvalues of the symmetric PSD
    ``sqrt(S_a) S_b sqrt(S_a)`` (same spectrum as ``S_a S_b``) avoid the unstable general ``sqrtm``.
    """
    a = _matrix(features_a, "features_a").double()
    b = _matrix(features_b, "features_b").double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance")
    n, m, f = a.shape[0], b.shape[0], a.shape[1]
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b
    trace_a = ca.square().sum() / (n - 1)
    trace_b = cb.square().sum() / (m - 1)
    if min(n, m) <= f:
        tr_sqrt = torch.linalg.svdvals(ca @ cb.T).sum() / math.sqrt((n - 1) * (m - 1))
    else:
        cov_a, cov_b = ca.T @ ca / (n - 1), cb.T @ cb / (m - 1)
        # Rounding can leave tiny negative eigenvalues in a PSD matrix; clamp them before sqrt.
        eval_a, evec_a = torch.linalg.eigh(cov_a)
        sqrt_a = (evec_a * eval_a.clamp_min(0).sqrt()) @ evec_a.T
        inner = sqrt_a @ cov_b @ sqrt_a
        inner = (inner + inner.T) / 2  # re-symmetrise what rounding broke
        tr_sqrt = torch.linalg.eigvalsh(inner).clamp_min(0).sqrt().sum()

    dist = (mu_a - mu_b).square().sum() + trace_a + trace_b - 2 * tr_sqrt
    # The true value is >= 0; a tiny negative is rounding.
    return max(float(dist), 0.0)
