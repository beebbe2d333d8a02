"""Acquisition changes: identities, directions, validation, and the training augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpglow.data import AcquisitionAugment
from dpglow.data import acquisition as A


def _images() -> torch.Tensor:
    ramp = torch.arange(64, dtype=torch.float64) * 4
    image = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).round().to(torch.uint8)
    return torch.stack([image, image.flip(1)])[:, None]


def test_neutral_strengths_are_identities() -> None:
    x = _images()
    assert torch.equal(A.gamma(x, 1.0), x)
    assert torch.equal(A.contrast(x, 1.0), x)
    assert torch.equal(A.blur(x, 0.0), x)
    assert torch.equal(A.zoom(x, 1.0), x)
    assert torch.equal(A.noise(x, 0.0, generator=torch.Generator().manual_seed(0)), x)


def test_directions_of_each_change() -> None:
    x = _images()
    assert A.gamma(x, 1.5).double().mean() < x.double().mean() < A.gamma(x, 0.67).double().mean()
    assert A.contrast(x, 0.5).double().std() < x.double().std()
    rough = (x.double().diff(dim=-1) ** 2).mean()
    assert (A.blur(x, 1.5).double().diff(dim=-1) ** 2).mean() < rough
    noisy = A.noise(x, 8.0, generator=torch.Generator().manual_seed(0))
    assert 5 < (noisy.double() - x.double()).std() < 9
    assert A.zoom(x, 1.3).shape == A.zoom(x, 0.8).shape == x.shape
    assert x.dtype == A.zoom(x, 0.8).dtype == torch.uint8


def test_inputs_are_never_changed_and_bad_strengths_refused() -> None:
    x = _images()
    before = x.clone()
    A.gamma(x, 2.0), A.contrast(x, 0.1), A.blur(x, 2.0), A.zoom(x, 1.5)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="gamma"):
        A.gamma(x, 0.0)
    with pytest.raises(ValueError, match="uint8"):
        A.blur(x.float(), 1.0)


def test_augment_is_seeded_and_keeps_shape() -> None:
    augment = AcquisitionAugment(source_size=64, probability=1.0)
    image = _images()[0, 0].numpy()
    one = augment(image, 32, np.random.default_rng(3))
    two = augment(image, 32, np.random.default_rng(3))
    assert one.shape == (32, 32) and one.dtype == np.uint8
    assert np.array_equal(one, two)
    assert not np.array_equal(one, augment(image, 32, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="range"):
        AcquisitionAugment(source_size=64, gamma=(1.5, 1.0))
