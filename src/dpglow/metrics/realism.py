"""Realism: can a fixed, simple discriminator tell released images from real ones?

The discriminator is deliberately weak and fully specified (hand-made features, a standardised
logistic regression, cross-validated), so its AUC is comparable across runs and releases: 0.5 means
it cannot tell the two sets apart, 1.0 that it always can. :func:`real_vs_real_auc` is the control,
the AUC two halves of the same real set get.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

THUMBNAIL_SIZE = 32
HISTOGRAM_BINS = 32
# Gradient energy needs two rows and columns at half resolution.
_MIN_SIDE = 4
# Only this many images at a time are converted to float64, so memory does not grow with N.
_CHUNK = 256

# scikit-learn is imported where it is used: it costs ~1.5 s, and importing dpglow.metrics (the
# classifier's validation AUC does) should not pay it.


def _discriminator():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [("scale", StandardScaler()), ("logreg", LogisticRegression(C=1.0, max_iter=2000))]
    )


def _images(images: Tensor | np.ndarray, name: str) -> Tensor:
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty batch of gray images [N, 1, H, W], got {tuple(x.shape)}"
        )
    if x.dtype != torch.uint8:
        raise ValueError(f"{name} must be uint8 (0..255), got {x.dtype}; quantise the images first")
    if min(x.shape[-2:]) < _MIN_SIDE:
        raise ValueError(
            f"{name} must be at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got {tuple(x.shape[-2:])}"
        )
    return x.cpu()


def _gradient_energy(x: Tensor) -> Tensor:
    """``[N, 2]``: mean squared horizontal and vertical forward differences of ``[N, 1, H, W]``."""
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).square().mean(dim=(1, 2, 3))
    vertical = (x[..., 1:, :] - x[..., :-1, :]).square().mean(dim=(1, 2, 3))
    return torch.stack([horizontal, vertical], dim=1)


def _chunk_features(images: Tensor) -> Tensor:
    n, _, h, w = images.shape
    x = images.double() / 255.0
    # Area-average down to 32 on each side that is larger; a side under 32 is kept as is and then
    # repeated (nearest) up to 32, so no pixel values are invented.
    pooled = F.adaptive_avg_pool2d(x, (min(h, THUMBNAIL_SIZE), min(w, THUMBNAIL_SIZE)))
    thumbnail = F.interpolate(pooled, size=(THUMBNAIL_SIZE, THUMBNAIL_SIZE), mode="nearest")
    # 256 / 32 = 8: bin k holds the values 8k .. 8k+7 exactly.
    bins = images.reshape(n, -1).long() // (256 // HISTOGRAM_BINS)
    offsets = torch.arange(n).unsqueeze(1) * HISTOGRAM_BINS
    counts = torch.bincount((bins + offsets).flatten(), minlength=n * HISTOGRAM_BINS)
    histogram = counts.reshape(n, HISTOGRAM_BINS).double() / (h * w)
    gradients = torch.cat([_gradient_energy(x), _gradient_energy(F.avg_pool2d(x, 2))], dim=1)
    return torch.cat([thumbnail.reshape(n, -1), histogram, gradients], dim=1)


def realism_features(images: Tensor | np.ndarray) -> np.ndarray:
    """The discriminator's ``[N, 1060]`` float64 features of uint8 gray images ``[N, 1, H, W]``.

    With ``x`` the image scaled to [0, 1] (``pixel / 255``), the columns are, in order:

    * ``0:1024`` -- a 32x32 thumbnail, row-major: ``adaptive_avg_pool2d(x, (min(H, 32), min(W,
      32)))`` (area averaging) then ``interpolate(mode="nearest")`` to 32x32, so a side of 32 or
      more is area-downsampled and a side under 32 is kept and its pixels repeated.
    * ``1024:1056`` -- the 32-bin intensity histogram of the full-resolution image: bin ``k`` is
      the fraction of pixels with uint8 value in ``8k .. 8k+7`` (the bins sum to 1).
    * ``1056:1060`` -- gradient energy: the mean over pixel pairs of the squared horizontal
      difference ``(x[i, j+1] - x[i, j])^2`` and of the vertical one ``(x[i+1, j] - x[i, j])^2``,
      first of ``x``, then of ``x`` downsampled by 2 (mean of 2x2 blocks, ``avg_pool2d(x, 2)``,
      an odd last row or column dropped).

    Images must be at least 4x4; a torch tensor or a numpy array is accepted.
    """
    x = _images(images, "images")
    chunks = [_chunk_features(x[i : i + _CHUNK]) for i in range(0, x.shape[0], _CHUNK)]
    return torch.cat(chunks).numpy()


def _check_folds(folds: int) -> None:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")


def _check_counts(n_real: int, n_other: int, folds: int) -> None:
    _check_folds(folds)
    for name, n in (("real", n_real), ("other", n_other)):
        if n < folds:
            raise ValueError(f"{name} needs at least folds={folds} images, got {n}")


def _resolve_paired(n_real: int, n_other: int, paired: bool | None) -> bool:
    if paired is None:
        return n_real == n_other
    if paired and n_real != n_other:
        raise ValueError(
            f"paired=True needs as many images in real as in other, got {n_real} and {n_other}"
        )
    return bool(paired)


def discriminator_folds(
    n_real: int, n_other: int, *, folds: int = 5, seed: int = 0, paired: bool | None = None
) -> np.ndarray:
    """The test fold (0 .. folds-1) of each of the ``n_real + n_other`` rows, real rows first.

    Unpaired: ``StratifiedKFold(folds, shuffle=True, random_state=seed)`` on the labels (real 0,
    other 1). Paired (``paired=None`` means ``n_real == n_other``): ``StratifiedGroupKFold`` with
    the same arguments and group ``i`` for real row ``i`` and other row ``i``, so the two versions
    of an image always share a fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    _check_counts(n_real, n_other, folds)
    labels = np.repeat([0, 1], [n_real, n_other])
    if _resolve_paired(n_real, n_other, paired):
        groups = np.tile(np.arange(n_real), 2)
        cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    else:
        groups = None
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    fold_of = np.empty(labels.size, dtype=np.int64)
    for k, (_, test) in enumerate(cv.split(np.zeros((labels.size, 1)), labels, groups)):
        fold_of[test] = k
    return fold_of


def _auc(real: np.ndarray, other: np.ndarray, folds: int, seed: int, paired: bool | None) -> float:
    from sklearn.metrics import roc_auc_score

    fold_of = discriminator_folds(len(real), len(other), folds=folds, seed=seed, paired=paired)
    features = np.concatenate([real, other])
    labels = np.repeat([0, 1], [len(real), len(other)])
    scores = np.empty(labels.size)
    for k in range(folds):
        test = fold_of == k
        model = _discriminator().fit(features[~test], labels[~test])
        scores[test] = model.predict_proba(features[test])[:, 1]
    # Pooled over folds rather than averaged per fold: one AUC of every out-of-fold prediction.
    return float(roc_auc_score(labels, scores))


def _check_sizes(real: Tensor, other: Tensor) -> None:
    if real.shape[-2:] != other.shape[-2:]:
        raise ValueError(
            f"real and other must have the same image size, "
            f"got {tuple(real.shape[-2:])} and {tuple(other.shape[-2:])}"
        )


def discriminator_auc(
    real: Tensor | np.ndarray,
    other: Tensor | np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    paired: bool | None = None,
) -> float:
    """Cross-validated ROC-AUC of a logistic regression telling ``other`` (1) from ``real`` (0).

    Both are uint8 ``[N, 1, H, W]`` of the same H, W, at least ``folds`` images each. The model is
    ``Pipeline([StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)])`` on
    :func:`realism_features`, fitted once per fold of :func:`discriminator_folds`; the AUC
    (``roc_auc_score``) is of the out-of-fold probabilities of all rows pooled. With
    ``paired=None``, sets of equal length are paired (row i of both is the same underlying image,
    e.g. an original and its release) and a pair never straddles train and test. 0.5: the two sets
    cannot be told apart; 1.0: always. Deterministic for a given ``seed``.
    """
    real_images, other_images = _images(real, "real"), _images(other, "other")
    _check_counts(len(real_images), len(other_images), folds)
    _check_sizes(real_images, other_images)
    _resolve_paired(len(real_images), len(other_images), paired)
    return _auc(realism_features(real_images), realism_features(other_images), folds, seed, paired)


def real_vs_real_auc(real: Tensor | np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """The control: :func:`discriminator_auc` (unpaired) of two random halves of ``real``.

    ``np.random.default_rng(seed).permutation(N)`` splits the N images into its first ``N // 2``
    and the remaining ``N - N // 2``; the same ``seed`` then drives the folds. Needs
    ``N >= 2 * folds``. A value near 0.5 is what a release indistinguishable from real images gets.
    """
    _check_folds(folds)
    images = _images(real, "real")
    n = images.shape[0]
    if n // 2 < folds:
        raise ValueError(f"real needs at least 2 * folds = {2 * folds} images, got {n}")
    features = realism_features(images)
    order = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return _auc(features[order[:half]], features[order[half:]], folds, seed, False)


def embedding_discriminator_auc(
    real: Tensor | np.ndarray,
    other: Tensor | np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    paired: bool | None = None,
) -> float:
    """The stronger discriminator: the same cross-validated, standardised logistic regression as
    :func:`discriminator_auc`, on given features ``[N, F]`` (e.g. the evaluation classifier's
    pooled DenseNet embedding, which sees texture and anatomy the hand-made features miss)
    instead of :func:`realism_features`; pairing and folds as there."""
    a, b = np.asarray(torch.as_tensor(real).double()), np.asarray(torch.as_tensor(other).double())
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two [N, F] feature sets, got {a.shape} and {b.shape}")
    _check_counts(len(a), len(b), folds)
    _resolve_paired(len(a), len(b), paired)
    return _auc(a, b, folds, seed, paired)
