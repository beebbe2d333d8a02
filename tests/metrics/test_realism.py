"""The realism discriminator: hand-checked features, and its AUC on real pediatric chest X-rays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dpglow.data import read_image
from dpglow.metrics import (
    discriminator_auc,
    discriminator_folds,
    real_vs_real_auc,
    realism_features,
)

SIZE = 64
N_HALF = 200
# Observed with 400 such images: real vs real within 0.5 +- 0.09 over 30 seeds (the control's
# spread at 200 a side is ~0.035); noise ~0.985, blur ~0.935.
CHANCE_BOUND = 0.15


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.uint8))[None, None]


@pytest.fixture(scope="module")
def xrays(pediatric_dir: Path) -> torch.Tensor:
    """400 real pediatric chest X-rays at 64x64, a seeded sample of both classes, [N, 1, H, W]."""
    paths = sorted((pediatric_dir / "images").glob("*.png"))
    pick = np.random.default_rng(0).choice(len(paths), 2 * N_HALF, replace=False)
    return torch.from_numpy(np.stack([read_image(paths[i], SIZE) for i in pick])).unsqueeze(1)


# --------------------------------------------------------------------------- features


def test_constant_image_has_one_hot_histogram_and_no_gradient() -> None:
    features = realism_features(_image(np.full((SIZE, SIZE), 200)))
    assert features.shape == (1, 1060) and features.dtype == np.float64
    np.testing.assert_array_equal(features[0, :1024], 200 / 255)
    histogram = np.zeros(32)
    histogram[200 // 8] = 1.0  # values 200..207 share bin 25
    np.testing.assert_array_equal(features[0, 1024:1056], histogram)
    np.testing.assert_array_equal(features[0, 1056:], 0.0)


def test_checkerboard_gradients_histogram_and_nearest_upsampling() -> None:
    board = (np.indices((8, 8)).sum(0) % 2) * 255
    features = realism_features(_image(board))[0]
    # Every neighbour differs by 1 at full resolution; each 2x2 block averages to 0.5.
    np.testing.assert_allclose(features[1056:], [1.0, 1.0, 0.0, 0.0], atol=1e-15)
    assert features[1024] == 0.5 and features[1055] == 0.5
    assert features[1025:1055].sum() == 0.0
    # 8 < 32: each pixel is repeated into a 4x4 block, not smoothed.
    expected = np.kron(board / 255, np.ones((4, 4)))
    np.testing.assert_array_equal(features[:1024].reshape(32, 32), expected)


def test_stripes_are_area_downsampled() -> None:
    stripes = np.tile([0, 0, 255, 255], (SIZE, SIZE // 4))
    features = realism_features(_image(stripes))[0]
    # Full resolution: 31 of the 63 horizontal steps change; half resolution alternates 0, 1.
    np.testing.assert_allclose(features[1056:], [31 / 63, 0.0, 1.0, 0.0], atol=1e-15)
    np.testing.assert_array_equal(features[:1024].reshape(32, 32), np.tile([0.0, 1.0], (32, 16)))


def test_thumbnail_is_block_mean_and_odd_edge_dropped_at_half_resolution() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 96), dtype=np.uint8)
    thumbnail = realism_features(_image(image))[0, :1024].reshape(32, 32)
    block_mean = image.reshape(32, 3, 32, 3).mean(axis=(1, 3)) / 255
    np.testing.assert_allclose(thumbnail, block_mean, atol=1e-12)

    odd = rng.integers(0, 256, (5, 5), dtype=np.uint8)
    half_odd = realism_features(_image(odd))[0, 1058:]
    half_cropped = realism_features(_image(odd[:4, :4]))[0, 1058:]
    np.testing.assert_array_equal(half_odd, half_cropped)


def test_features_of_numpy_and_torch_agree_on_real_images(xrays: torch.Tensor) -> None:
    batch = xrays[:20]
    features = realism_features(batch)
    np.testing.assert_array_equal(features, realism_features(batch.numpy()))
    np.testing.assert_allclose(features[:, 1024:1056].sum(1), 1.0, atol=1e-12)
    assert (features[:, 1056:] > 0).all()


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.zeros(2, 8, 8, dtype=torch.uint8), r"\[N, 1, H, W\]"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), r"\[N, 1, H, W\]"),
        (torch.zeros(0, 1, 8, 8, dtype=torch.uint8), "non-empty"),
        (torch.zeros(2, 1, 8, 8), "uint8"),
        (np.zeros((2, 1, 8, 8), dtype=np.int64), "uint8"),
        (torch.zeros(2, 1, 3, 8, dtype=torch.uint8), "at least 4x4"),
    ],
)
def test_features_reject_bad_images(images: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        realism_features(images)


# --------------------------------------------------------------------------- discriminator


def test_disjoint_real_sets_are_indistinguishable(xrays: torch.Tensor) -> None:
    for seed in (0, 1):
        auc = discriminator_auc(xrays[:N_HALF], xrays[N_HALF:], seed=seed, paired=False)
        assert abs(auc - 0.5) < CHANCE_BOUND, (seed, auc)
        control = real_vs_real_auc(xrays, seed=seed)
        assert abs(control - 0.5) < CHANCE_BOUND, (seed, control)


def test_gaussian_pixel_noise_is_detected(xrays: torch.Tensor) -> None:
    real = xrays[:N_HALF]
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(0)) * 8
    noisy = (real.float() + noise).round().clamp(0, 255).to(torch.uint8)
    assert discriminator_auc(real, noisy) > 0.95


def test_box_blur_is_detected(xrays: torch.Tensor) -> None:
    real = xrays[:N_HALF]
    padded = F.pad(real.float(), (1, 1, 1, 1), mode="replicate")
    blurred = F.avg_pool2d(padded, 3, stride=1).round().to(torch.uint8)
    assert discriminator_auc(real, blurred) > 0.9


def test_same_seed_same_auc(xrays: torch.Tensor) -> None:
    real, other = xrays[:60], xrays[60:120]
    first = discriminator_auc(real, other, seed=3)
    assert discriminator_auc(real.clone(), other.clone(), seed=3) == first
    assert discriminator_auc(real, other, seed=4) != first
    assert real_vs_real_auc(xrays[:120], seed=3) == real_vs_real_auc(xrays[:120], seed=3)


def test_pairs_never_straddle_folds() -> None:
    n = 50
    folds = discriminator_folds(n, n, folds=5, seed=0)
    np.testing.assert_array_equal(folds[:n], folds[n:])
    assert sorted(np.bincount(folds[:n])) == [10] * 5
    # Without grouping, the same seed does split pairs: the check above can fail.
    unpaired = discriminator_folds(n, n, folds=5, seed=0, paired=False)
    assert (unpaired[:n] != unpaired[n:]).any()
    assert set(discriminator_folds(n, n + 1, folds=5, seed=0)) == set(range(5))


def test_paired_copies_score_chance_but_leak_when_split(xrays: torch.Tensor) -> None:
    images = xrays[:100]
    # A pair in one fold gets one prediction for both labels: an exact tie, AUC 0.5.
    assert discriminator_auc(images, images.clone()) == pytest.approx(0.5, abs=0.01)
    # A split pair's twin is in training with the opposite label, and the AUC collapses.
    assert discriminator_auc(images, images.clone(), paired=False) < 0.3


def test_discriminator_validates_its_inputs() -> None:
    eight = torch.zeros(8, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        discriminator_auc(eight, eight, folds=1)
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        discriminator_auc(eight, eight, folds=True)
    with pytest.raises(ValueError, match="other needs at least folds=5"):
        discriminator_auc(eight, eight[:4])
    with pytest.raises(ValueError, match="same image size"):
        discriminator_auc(eight, torch.zeros(8, 1, 8, 9, dtype=torch.uint8))
    with pytest.raises(ValueError, match="paired=True"):
        discriminator_auc(eight, eight[:6], paired=True)
    with pytest.raises(ValueError, match="uint8"):
        discriminator_auc(eight.float(), eight)
    with pytest.raises(ValueError, match="2 \\* folds = 10"):
        real_vs_real_auc(eight[:9])
