"""Fidelity metrics of docs/evaluation.md: PSNR, SSIM and the Frechet distance of embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from dpglow.metrics._checks import _matrix


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


def paired_cosine(features_a: Tensor, features_b: Tensor) -> float:
    """Mean cosine similarity of row i of ``[N, F]`` with row i of ``[N, F]`` (each image with its
    own counterpart, e.g. a release with its original in a classifier's embedding)."""
    a = _matrix(features_a, "features_a").double()
    b = _matrix(features_b, "features_b").double()
    if a.shape != b.shape:
        raise ValueError(
            f"paired features need equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12).mean())
