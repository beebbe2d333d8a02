"""Input validation and the similarity matrix shared by the metrics."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Metric = Literal["l2", "cosine"]
_METRICS = ("l2", "cosine")


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
