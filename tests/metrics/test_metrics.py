"""Hand-computed cases for the evaluation metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from dpglow.metrics import (
    auc_per_pathology,
    auc_retention,
    frechet_distance,
    linkage_topk,
    mean_auc,
    psnr,
    reidentification,
    ssim,
)


def _col(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


# --------------------------------------------------------------------------- AUC


def test_auc_perfect_reversed_and_one_swapped_pair() -> None:
    labels = _col(0, 0, 0, 1, 1, 1)
    perfect = _col(1, 2, 3, 4, 5, 6)
    assert auc_per_pathology(perfect, labels, ["a"])["a"] == pytest.approx(1.0)
    assert auc_per_pathology(-perfect, labels, ["a"])["a"] == pytest.approx(0.0)
    # The negative scored 4 outranks the positive scored 3: 8 of 9 pairs ordered right.
    swapped = _col(1, 2, 4, 3, 5, 6)
    assert auc_per_pathology(swapped, labels, ["a"])["a"] == pytest.approx(8 / 9)


def test_auc_ties_count_half_and_large_logits_do_not_saturate() -> None:
    assert auc_per_pathology(_col(1, 1), _col(0, 1), ["a"])["a"] == pytest.approx(0.5)
    # sigmoid(40..43) is 1.0 in float64; the ranking must survive anyway.
    assert auc_per_pathology(_col(40, 41, 42, 43), _col(0, 0, 1, 1), ["a"])["a"] == 1.0


def test_auc_nan_labels_skipped_and_degenerate_column_excluded_from_mean() -> None:
    scores = torch.tensor([[1.0, 0.1], [2.0, 0.2], [4.0, 0.3], [3.0, 0.4], [5.0, 0.5], [6.0, 0.6]])
    labels = torch.tensor([[0.0, 1], [0, 1], [0, 1], [1, 1], [1, 1], [1, math.nan]])
    base = auc_per_pathology(scores, labels, ["a", "b"])
    assert base["a"] == pytest.approx(8 / 9)
    assert math.isnan(base["b"])  # only positives among known labels
    assert mean_auc(base) == pytest.approx(8 / 9)

    # Unknown rows scored to wreck the AUC if they were read as negatives (or positives).
    extra_scores = torch.tensor([[100.0, 9.0], [-100.0, -9.0]])
    extra_labels = torch.full((2, 2), math.nan)
    more = auc_per_pathology(
        torch.cat([scores, extra_scores]), torch.cat([labels, extra_labels]), ["a", "b"]
    )
    assert more["a"] == pytest.approx(base["a"])
    assert math.isnan(more["b"])


def test_mean_auc_all_nan_is_nan() -> None:
    assert math.isnan(mean_auc({"a": math.nan, "b": math.nan}))
    assert math.isnan(mean_auc([]))
    assert mean_auc([0.6, math.nan, 0.8]) == pytest.approx(0.7)


def test_auc_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 3, generator=gen)
    labels = (torch.rand(200, 3, generator=gen) < 0.3).double()
    labels[torch.rand(200, 3, generator=gen) < 0.2] = math.nan
    ours = auc_per_pathology(scores, labels, ["a", "b", "c"])
    for j, name in enumerate("abc"):
        known = ~torch.isnan(labels[:, j])
        ref = metrics.roc_auc_score(labels[known, j].numpy(), scores[known, j].numpy())
        assert ours[name] == pytest.approx(ref, abs=1e-6)  # torchmetrics returns float32


@pytest.mark.parametrize(
    ("scores", "labels", "names", "match"),
    [
        (torch.zeros(3, 2), torch.zeros(3, 1), ["a", "b"], "equal shapes"),
        (torch.zeros(3, 2), torch.zeros(3, 2), ["a"], "pathology names"),
        (torch.zeros(3, 1), torch.full((3, 1), 2.0), ["a"], "0 or 1"),
        (torch.full((3, 1), math.nan), torch.zeros(3, 1), ["a"], "NaN"),
    ],
)
def test_auc_validation(scores, labels, names, match) -> None:
    with pytest.raises(ValueError, match=match):
        auc_per_pathology(scores, labels, names)


# --------------------------------------------------------------------------- retention


def test_auc_retention() -> None:
    assert auc_retention(0.8, 0.8) == pytest.approx(1.0)
    assert auc_retention(0.5, 0.8) == pytest.approx(0.0)
    assert auc_retention(0.65, 0.8) == pytest.approx(0.5)
    assert math.isnan(auc_retention(0.7, 0.5))
    assert math.isnan(auc_retention(0.7, 0.4))
    per = auc_retention({"a": 0.9, "b": 0.6}, {"a": 0.9, "b": 0.45})
    assert per["a"] == pytest.approx(1.0)
    assert math.isnan(per["b"])
    with pytest.raises(ValueError, match="differ"):
        auc_retention({"a": 0.9}, {"b": 0.9})
    with pytest.raises(ValueError, match="two floats or two dicts"):
        auc_retention({"a": 0.9}, 0.9)


# --------------------------------------------------------------------------- linkage (P1)


def test_linkage_identical_sets() -> None:
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(1))
    for metric in ("l2", "cosine"):
        out = linkage_topk(x, x.clone(), metric=metric)
        assert out["top1"] == 1.0
        assert out["top5"] == 1.0
        assert out["chance_top1"] == pytest.approx(1 / 20)
        assert out["chance_top5"] == pytest.approx(5 / 20)


def test_linkage_hand_computed_near_duplicates_and_permutation() -> None:
    original = _col(0, 10, 20, 30, 40, 50, 60, 70)
    private = original.clone()
    private[0] = 41  # nearest originals: 40, 50, 30, 60, 20, 70, 10, then its own 0 (rank 8)
    private[1] = 18  # nearest originals: 20, then its own 10 (rank 2)
    out = linkage_topk(private, original, ks=(1, 5))
    assert out["top1"] == pytest.approx(6 / 8)
    assert out["top5"] == pytest.approx(7 / 8)
    # Pairing, not row order, matters: permuting both sets jointly changes nothing.
    perm = torch.tensor([3, 7, 0, 5, 1, 6, 2, 4])
    assert linkage_topk(private[perm], original[perm], ks=(1, 5)) == out


def test_linkage_ties_score_chance() -> None:
    original = torch.randn(10, 4, generator=torch.Generator().manual_seed(2))
    out = linkage_topk(torch.zeros(10, 4), original, ks=(1, 5), metric="cosine")
    assert out["top1"] == pytest.approx(out["chance_top1"])
    assert out["top5"] == pytest.approx(out["chance_top5"])


def test_linkage_random_features_near_chance_and_chunking_invariant() -> None:
    gen = torch.Generator().manual_seed(3)
    private, original = torch.randn(500, 16, generator=gen), torch.randn(500, 16, generator=gen)
    out = linkage_topk(private, original)
    # Expected 1 and 5 hits; >= 10 and >= 20 hits have Poisson tail probabilities below 1e-5.
    assert out["top1"] < 10 / 500
    assert out["top5"] < 20 / 500
    assert linkage_topk(private, original, chunk_size=37) == pytest.approx(out)


def test_linkage_cosine_and_l2_differ_where_built_to() -> None:
    original = torch.tensor([[1.0, 0.0], [10.0, 5.0]])
    # Private 0 points along original 0 (cosine) but lies next to original 1 (L2).
    private = torch.tensor([[10.0, 0.5], [10.0, 5.0]])
    assert linkage_topk(private, original, ks=(1,), metric="l2")["top1"] == 0.5
    assert linkage_topk(private, original, ks=(1,), metric="cosine")["top1"] == 1.0


def test_linkage_validation() -> None:
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="same shape"):
        linkage_topk(x, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="ks"):
        linkage_topk(x, x, ks=(5,))
    with pytest.raises(ValueError, match="metric"):
        linkage_topk(x, x, metric="l1")
    with pytest.raises(ValueError, match="NaN"):
        linkage_topk(torch.full((4, 2), math.nan), x)


# --------------------------------------------------------------------------- re-identification (P2)


def _brute_force_random_ap(n_relevant: int, n_candidates: int) -> float:
    total, count = 0.0, 0
    for positions in itertools.combinations(range(1, n_candidates + 1), n_relevant):
        total += sum((i + 1) / k for i, k in enumerate(positions)) / n_relevant
        count += 1
    return total / count


# Patients A: 0, 1; B: 10, 12, 40; C: 55 (only image, skipped as a query).
REID_FEATURES = _col(0, 1, 10, 12, 40, 55)
REID_PATIENTS = ["A", "A", "B", "B", "B", "C"]


def test_reidentification_hand_built() -> None:
    out = reidentification(REID_FEATURES, REID_PATIENTS)
    # Ranked candidates (self excluded), relevant marked *:
    # A0: A1* ...                  -> hit, AP 1       A1: A0* ...        -> hit, AP 1
    # B10: B12* A1 A0 B40* C       -> hit, AP (1 + 2/4)/2 = 3/4
    # B12: B10* A1 A0 B40* C       -> hit, AP 3/4
    # B40: C B12* B10* A1 A0       -> miss, AP (1/2 + 2/3)/2 = 7/12
    assert out["n_queries"] == 5
    assert out["n_skipped"] == 1
    assert out["top1"] == pytest.approx(4 / 5)
    assert out["map"] == pytest.approx((1 + 1 + 3 / 4 + 3 / 4 + 7 / 12) / 5)
    # Five candidates per query; A queries have one relevant, B queries two.
    assert out["chance_top1"] == pytest.approx((2 * 1 / 5 + 3 * 2 / 5) / 5)
    chance_map = (2 * _brute_force_random_ap(1, 5) + 3 * _brute_force_random_ap(2, 5)) / 5
    assert out["chance_map"] == pytest.approx(chance_map)
    assert reidentification(REID_FEATURES, REID_PATIENTS, chunk_size=2) == pytest.approx(out)


def test_reidentification_excludes_own_gallery_image() -> None:
    # Each query is an exact copy of its gallery image; that copy must never count as a match.
    gallery = REID_FEATURES
    out = reidentification(gallery.clone(), REID_PATIENTS, gallery=gallery)
    assert out == pytest.approx(reidentification(gallery, REID_PATIENTS))
    # Queries that all look alike tie every candidate: top-1 and mAP fall to random ranking's
    # top-1 (both equal the fraction of relevant candidates here).
    flat = reidentification(torch.zeros(6, 1), REID_PATIENTS, gallery=gallery, metric="cosine")
    assert flat["top1"] == pytest.approx(flat["chance_top1"])
    assert flat["map"] == pytest.approx(flat["chance_top1"])


def test_reidentification_all_singletons_is_nan() -> None:
    out = reidentification(torch.randn(3, 2), ["a", "b", "c"])
    assert out["n_queries"] == 0
    assert out["n_skipped"] == 3
    assert math.isnan(out["top1"])
    assert math.isnan(out["map"])


def test_reidentification_map_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(30, 3, generator=gen).round()  # rounding creates ties on purpose
    patients = [str(i % 7) for i in range(30)]
    out = reidentification(feats, patients)
    aps = []
    for i in range(30):
        others = [j for j in range(30) if j != i]
        y = np.array([patients[j] == patients[i] for j in others])
        s = -((feats[others] - feats[i]) ** 2).sum(1).numpy()
        aps.append(metrics.average_precision_score(y, s))
    assert out["map"] == pytest.approx(float(np.mean(aps)))


def test_reidentification_validation() -> None:
    with pytest.raises(ValueError, match="patient ids"):
        reidentification(torch.zeros(3, 2), ["a", "b"])
    with pytest.raises(ValueError, match="paired"):
        reidentification(torch.zeros(3, 2), ["a", "a", "b"], gallery=torch.zeros(4, 2))


# --------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_identical_and_constant_offsets() -> None:
    a = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    assert psnr(a, a.clone()) == math.inf
    # MSE = offset^2, so PSNR = 10 log10(range^2 / offset^2).
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(a, a + 0.1, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.01))
    # Mean of per-image PSNR (20 and 40 dB), not the PSNR of the pooled MSE (~23 dB).
    offsets = torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    assert psnr(a, a + offsets) == pytest.approx(30.0)


def test_ssim_identical_and_degraded() -> None:
    a = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    assert ssim(a, a.clone()) == pytest.approx(1.0, abs=1e-6)
    noisy = a + 0.3 * torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    assert ssim(a, noisy) < 0.9


def test_fidelity_validation() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        psnr(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="float"):
        psnr(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="data_range"):
        psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), data_range=0)
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


# --------------------------------------------------------------------------- Fréchet distance


def _with_exact_moments(n: int, mean: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    """Samples whose sample mean and (unbiased) sample covariance are exactly mean, diag(std^2)."""
    z = torch.randn(n, mean.numel(), generator=torch.Generator().manual_seed(seed)).double()
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(torch.cov(z.T))
    z = torch.linalg.solve_triangular(chol, z.T, upper=False).T  # whitened: covariance = I
    return mean + z * std


def test_frechet_identical_sets_is_zero() -> None:
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(8))
    assert frechet_distance(x, x.clone()) == pytest.approx(0.0, abs=1e-8)
    # Fewer rows than features: singular covariance, still fine.
    y = torch.randn(5, 10, generator=torch.Generator().manual_seed(9))
    assert frechet_distance(y, y.clone()) == pytest.approx(0.0, abs=1e-8)


def test_frechet_diagonal_gaussians_closed_form() -> None:
    mean_a, std_a = torch.tensor([0.0, 1.0, 2.0]).double(), torch.tensor([1.0, 2.0, 0.5]).double()
    mean_b, std_b = torch.tensor([1.0, 1.0, 0.0]).double(), torch.tensor([3.0, 1.0, 0.5]).double()
    a = _with_exact_moments(40, mean_a, std_a, seed=10)
    b = _with_exact_moments(60, mean_b, std_b, seed=11)
    # Diagonal covariances: ||mu_a - mu_b||^2 + sum (std_a - std_b)^2 = 5 + (4 + 1 + 0).
    assert frechet_distance(a, b) == pytest.approx(10.0, rel=1e-9)


def test_frechet_agrees_with_scipy_sqrtm() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    gen = torch.Generator().manual_seed(12)
    mix = torch.randn(6, 6, generator=gen)
    a = torch.randn(80, 6, generator=gen) @ mix
    b = torch.randn(70, 6, generator=gen) @ mix.T + 0.5
    an, bn = a.double().numpy(), b.double().numpy()
    cov_a, cov_b = np.cov(an, rowvar=False), np.cov(bn, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    ref = ((an.mean(0) - bn.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean)
    assert frechet_distance(a, b) == pytest.approx(float(ref), rel=1e-8)


def test_frechet_with_fewer_images_than_features_matches_the_covariance_formula() -> None:
    # Embeddings: N < F, singular covariances; the nuclear-norm path must equal the definition.
    gen = torch.Generator().manual_seed(13)
    a = torch.randn(30, 40, generator=gen, dtype=torch.float64)
    b = torch.randn(25, 40, generator=gen, dtype=torch.float64) * 1.5 + 0.3
    an, bn = a.numpy(), b.numpy()
    cov_a, cov_b = np.cov(an, rowvar=False), np.cov(bn, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    ref = ((an.mean(0) - bn.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt
    # (the reference's sqrt of ~1e-16 rounding eigenvalues of the singular product adds ~1e-8)
    assert frechet_distance(a, b) == pytest.approx(float(ref), rel=1e-7)


def test_frechet_validation() -> None:
    with pytest.raises(ValueError, match="feature sizes"):
        frechet_distance(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(torch.zeros(1, 2), torch.zeros(3, 2))
