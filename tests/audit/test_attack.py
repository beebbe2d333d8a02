"""The held-out distinguishing event: valid bounds, and it finds what is there."""

from __future__ import annotations

import math

import torch

from dpglow.audit.attack import held_out_bound
from dpglow.audit.bounds import clopper_pearson, ratio_bound


def _flat(values: torch.Tensor) -> torch.Tensor:
    """uint8 releases [N, 1, 4, 4] whose every pixel is ``values``."""
    return values.clamp(0, 255).to(torch.uint8)[:, None, None, None].expand(-1, 1, 4, 4)


def test_identical_distributions_give_no_evidence() -> None:
    g = torch.Generator().manual_seed(0)
    a = _flat(torch.randint(0, 256, (400,), generator=g))
    b = _flat(torch.randint(0, 256, (400,), generator=g))
    mean = {"mean": lambda x: x.double().flatten(1).mean(1)}
    result = held_out_bound(a, b, mean, alpha=0.05)
    assert result["epsilon_lower_bound"] < 0.5


def test_deterministic_releases_are_caught() -> None:
    a, b = _flat(torch.zeros(400)), _flat(torch.full((400,), 255.0))
    result = held_out_bound(a, b, {}, alpha=0.05)  # the thumbnail regression alone
    # 200 held-out runs with no error: e^eps >= (1 - lower tail) / upper(0 of 200)
    assert result["epsilon_lower_bound"] > 3.5


def test_randomized_response_bits_are_bounded_below_their_epsilon() -> None:
    eps = 1.0
    keep = math.exp(eps) / (1 + math.exp(eps))
    g = torch.Generator().manual_seed(2)
    a = _flat((torch.rand(4000, generator=g) < keep).double() * 255)
    b = _flat((torch.rand(4000, generator=g) < 1 - keep).double() * 255)
    result = held_out_bound(a, b, {"bit": lambda x: x.double().flatten(1)[:, 0]}, alpha=0.05)
    assert 0.6 < result["epsilon_lower_bound"] <= eps


def test_clopper_pearson_and_ratio_bound() -> None:
    lower, upper = clopper_pearson(50, 100, 0.025)
    assert lower < 0.5 < upper
    assert ratio_bound(100, 100, 0, 100, alpha=0.025) > 3
    assert ratio_bound(0, 100, 50, 100, alpha=0.025) == -math.inf
