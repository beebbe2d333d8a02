"""The LDP ceiling of U1, paired cosine fidelity, and the saturated-patch count."""

from __future__ import annotations

import math

import pytest
import torch

from dpglow.metrics import (
    ldp_auc_ceiling,
    paired_cosine,
    released_bit_auc,
    retention_ceiling,
    saturated_patches,
)
from dpglow.metrics.classification import binary_auroc


def test_ldp_ceiling_values_and_limits() -> None:
    assert ldp_auc_ceiling(0.0) == 0.5
    assert ldp_auc_ceiling(3.0) == pytest.approx(math.exp(3) / (1 + math.exp(3)))
    assert ldp_auc_ceiling(math.inf) == 1.0
    assert ldp_auc_ceiling(800.0) == 1.0  # no overflow
    for bad in (-1.0, math.nan, "3", True):
        with pytest.raises(ValueError, match="epsilon"):
            ldp_auc_ceiling(bad)


def test_retention_ceiling_is_capped_at_one_and_undefined_without_skill() -> None:
    # eps 3, AUC_orig 0.996: (0.9526 - 0.5) / 0.496
    assert retention_ceiling(3.0, 0.996) == pytest.approx((ldp_auc_ceiling(3.0) - 0.5) / 0.496)
    assert retention_ceiling(3.0, 0.93) == 1.0  # the release may keep everything there is
    assert math.isnan(retention_ceiling(3.0, 0.5))


def test_one_bit_randomized_response_reaches_the_ceiling_exactly() -> None:
    """A perfect labeler's bit through randomized response: AUC = e^eps / (1 + e^eps)."""
    eps = 1.5
    keep = ldp_auc_ceiling(eps)
    # Expected released bit per class is keep (positives) and 1 - keep (negatives):
    # AUC = P(b_pos > b_neg) + P(b_pos = b_neg) / 2.
    auc = keep * keep + 0.5 * (keep * (1 - keep) + (1 - keep) * keep)
    assert auc == pytest.approx(ldp_auc_ceiling(eps))


def test_released_bit_auc_is_the_expected_auc_of_the_flipped_decisions() -> None:
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(2000, generator=g) < 0.3).float()
    wrong = torch.rand(2000, generator=g) < torch.where(labels == 1, 0.1, 0.05)
    decisions = torch.where(wrong, 1 - labels, labels)
    tpr, fpr = float(decisions[labels == 1].mean()), float(decisions[labels == 0].mean())
    flip = 1 / (1 + math.exp(2.0))
    bound = released_bit_auc(decisions, labels, flip_probability=flip)
    assert bound == pytest.approx(0.5 + 0.5 * (tpr - fpr) * (1 - 2 * flip))
    # Monte Carlo over the randomized response, with ties counted one half by the AUC itself
    draws = []
    for _ in range(200):
        flipped = torch.rand(2000, generator=g) < flip
        released = torch.where(flipped, 1 - decisions, decisions)
        draws.append(float(binary_auroc(released, labels.long())))
    assert sum(draws) / len(draws) == pytest.approx(bound, abs=2e-3)
    # A labeler right about every image reaches the LDP ceiling; flipping half keeps nothing.
    assert released_bit_auc(labels, labels, flip_probability=flip) == pytest.approx(
        ldp_auc_ceiling(2.0)
    )
    assert released_bit_auc(decisions, labels, flip_probability=0.5) == 0.5
    nan_labels = labels.clone()
    nan_labels[:10] = math.nan  # unknown labels are skipped
    kept = released_bit_auc(decisions[10:], labels[10:], flip_probability=flip)
    assert released_bit_auc(decisions, nan_labels, flip_probability=flip) == pytest.approx(kept)
    assert math.isnan(released_bit_auc(decisions, torch.ones(2000), flip_probability=flip))
    with pytest.raises(ValueError, match="flip_probability"):
        released_bit_auc(decisions, labels, flip_probability=0.7)
    with pytest.raises(ValueError, match="0 or 1"):
        released_bit_auc(decisions * 0.5, labels, flip_probability=flip)


def test_paired_cosine_pairs_rows() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert paired_cosine(a, a * 3) == pytest.approx(1.0)
    assert paired_cosine(a, a.flip(0)) == pytest.approx(0.0)
    assert paired_cosine(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equal shapes"):
        paired_cosine(a, a[:1])


def _checker(size: int = 64) -> torch.Tensor:
    image = torch.full((1, 1, size, size), 120, dtype=torch.uint8)
    patch = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 255
    image[0, 0, 8:16, 24:32] = patch.to(torch.uint8)  # one 8x8 checkerboard: 4 blocks of 4x4
    return image


def test_a_saturated_checkerboard_is_counted() -> None:
    # an 8x8 checkerboard: the 4x4 windows with at least 8 of their 16 pixels on it, i.e. the
    # 9 x 9 positions from 2 rows/columns before it to 2 after, less the 3 per corner with fewer
    assert saturated_patches(_checker()).tolist() == [9 * 9 - 4 * 3]
    stripes = torch.full((1, 1, 64, 64), 90, dtype=torch.uint8)
    stripes[0, 0, 40:48, 40:48] = (torch.arange(8) % 2 * 255).to(torch.uint8)[None]
    assert saturated_patches(stripes).tolist() == [9 * 9 - 4 * 3]


def test_a_speck_across_block_borders_is_counted() -> None:
    # a 4x4 black-and-white speck at rows/columns 6-9: no aligned 4x4 block holds half of it,
    # one window holds it all
    speck = torch.full((1, 1, 64, 64), 120, dtype=torch.uint8)
    speck[0, 0, 6:10, 6:10] = ((torch.arange(4)[:, None] + torch.arange(4)[None]) % 2 * 255).to(
        torch.uint8
    )
    assert saturated_patches(speck)[0] >= 1


def test_smooth_saturation_and_mid_gray_texture_are_not() -> None:
    image = torch.full((2, 1, 64, 64), 128, dtype=torch.uint8)
    image[0, :, :, :16] = 0  # a black border, as collimation leaves
    image[0, :, 50:60, 50:60] = 255  # a white marker
    texture = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 60 + 100
    image[1, 0] = texture.to(torch.uint8)  # strong alternation, but nowhere saturated
    assert saturated_patches(image).tolist() == [0, 0]


def test_saturated_patches_validates() -> None:
    with pytest.raises(ValueError, match="uint8"):
        saturated_patches(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="block"):
        saturated_patches(_checker(), block=100)


def test_youden_threshold_maximises_tpr_minus_fpr() -> None:
    from dpglow.metrics import youden_threshold

    scores = torch.tensor([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1.0])
    t = youden_threshold(scores, labels)
    # above 0.35: TPR 1, FPR 1/4 (the negative at 0.6); above 0.65: TPR 3/4, FPR 0
    assert t == pytest.approx(0.35)
    shifted = youden_threshold(scores + 10, labels)
    assert shifted == pytest.approx(10.35)  # prevalence-free, location-equivariant
    with pytest.raises(ValueError, match="positive and negative"):
        youden_threshold(scores, torch.ones(8))
