"""Privacy metrics (P1, P2 of docs/evaluation.md): linking a release to its original, and
re-identifying a patient among the originals."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from dpglow.metrics._checks import Metric, _check_chunk, _check_metric, _matrix, _similarity

log = logging.getLogger(__name__)


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


def _average_precision(sim: Tensor, relevant: Tensor, n_relevant: Tensor) -> Tensor:
    """Per row of similarities ``[q, N]`` with a ``relevant`` mask, the average precision as
    scikit-learn computes it (tied scores form one threshold: precision and recall are read at
    the end of each group of ties), over ``n_relevant`` relevant items per row."""
    s, order = torch.sort(sim, dim=1, descending=True, stable=True)
    tp = relevant.gather(1, order).double().cumsum(1)
    ranks = torch.arange(1, sim.shape[1] + 1, dtype=torch.float64)
    group_end = torch.ones_like(s, dtype=torch.bool)
    group_end[:, :-1] = s[:, :-1] != s[:, 1:]
    tp_end = torch.where(group_end, tp, torch.zeros_like(tp))
    prev_tp = torch.zeros_like(tp)
    # tp at the previous group end: running max of tp_end shifted by one (tp is monotone).
    prev_tp[:, 1:] = torch.cummax(tp_end, 1).values[:, :-1]
    gain = torch.where(group_end, tp - prev_tp, torch.zeros_like(tp))
    return (gain * tp / ranks).sum(1) / n_relevant


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
        ap_sum += float(_average_precision(sim, relevant, n_rel).sum())

    n_rel_eval = n_rel_all[evaluated]
    result["top1"] = top1_sum / n_queries
    result["map"] = ap_sum / n_queries
    result["chance_top1"] = float((n_rel_eval.double() / (n - 1)).mean())
    result["chance_map"] = float(_expected_random_ap(n_rel_eval, n - 1).mean())
    return result
