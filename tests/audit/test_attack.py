"""The held-out distinguishing event: valid bounds, and it finds what is there."""

from __future__ import annotations

import math

import pytest
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


def test_a_dataset_labelers_pair_is_no_finding_against_the_most_frequent_other_set() -> None:
    from dpglow.audit.pairs import _label_set_sides

    nan = float("nan")
    labels = torch.tensor(
        [[0, 0, 0], [1, 0, 0], [0, 1, 1], [0, 1, 1], [nan, 0, 0], [0, 1, 1], [1, 0, 0]]
    )
    sides = _label_set_sides(labels)
    # no finding (unknown read as absent) on one side, {1, 2} (3 times) on the other
    assert sides[[0, 4]].tolist() == [-1.0, -1.0] and sides[[2, 3, 5]].tolist() == [1.0] * 3
    assert sides[[1, 6]].isnan().all()
    with pytest.raises(ValueError, match="no finding"):
        _label_set_sides(torch.ones(3, 2))


def test_the_conditional_log_ratio_reads_the_labels_a_release_was_rendered_with() -> None:
    from dpglow.audit.pairs import _log_ratio
    from dpglow.flow import Glow, to_uint8

    torch.manual_seed(0)
    flow = Glow(image_size=8, num_levels=2, depth=2, hidden_channels=16, num_conditions=2)
    flow.initialize(torch.rand(16, 1, 8, 8) - 0.5)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if "label_prior" in name:  # zero-initialised: give the labels an effect
                p.add_(torch.randn(p.shape))
    flow.eval()
    y_a, y_b = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    gen = torch.Generator().manual_seed(1)
    a = to_uint8(flow.sample(200, y=y_a.expand(200, -1), generator=gen))
    b = to_uint8(flow.sample(200, y=y_b.expand(200, -1), generator=gen))
    statistic = _log_ratio(flow, y_a, y_b)
    s_a, s_b = statistic(a), statistic(b)
    assert s_a.shape == (200,) and s_a.dtype == torch.float64
    assert (s_b[:, None] > s_a[None]).double().mean() > 0.8  # AUC of the attacker's statistic
