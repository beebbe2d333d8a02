"""Shared fixtures for the privacy tests: seeded (NOT PRIVATE) generators and mechanism sampling."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dpglow.privacy import Mechanism, noise_generator


@pytest.fixture
def seeded() -> Callable[[int], torch.Generator]:
    """A reproducible generator, registered as "seeded (NOT PRIVATE)"."""

    def make(seed: int = 0) -> torch.Generator:
        return noise_generator(noise_seed=seed)[0]

    return make


@pytest.fixture
def sample_many() -> Callable[..., torch.Tensor]:
    """``n`` independent releases of one input row (``[1, ...]``), in one vectorised call."""

    def sample(
        mech: Mechanism, x: torch.Tensor, n: int, generator: torch.Generator
    ) -> torch.Tensor:
        return mech(x.expand(n, *x.shape[1:]).contiguous(), generator=generator)[0]

    return sample
