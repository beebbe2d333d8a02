"""The held-out bits/dim's importance-weighted bound: at one draw the training protocol's bound,
with many draws the flow's exact probability of the 8-bit images."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dpglow.benchmark import heldout_bits_per_dim
from dpglow.flow import Glow, VariationalDequantizer

BIN = 1 / 256
CENTRE, SCALE = 0.3, 0.25  # in bins


class LogisticPixels(nn.Module):
    """A density on the flow's range whose bin probabilities are known in closed form:
    independent logistic pixels, each centred 0.3 of a bin above its image's bin edge, with a
    quarter of a bin as scale (peaked inside the bin, so uniform noise is a poor proposal)."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.num_dims = images[0].numel()
        self.centre = nn.Parameter(images.double() * BIN - 0.5 + CENTRE * BIN, requires_grad=False)
        self.scale = SCALE * BIN

    def _z(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() - self.centre[: len(x)]) / self.scale

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = self._z(x)
        log_density = -z - 2 * nn.functional.softplus(-z) - math.log(self.scale)
        return log_density.flatten(1).sum(1)

    def exact_bits_per_dim(self, images: torch.Tensor) -> float:
        low = images.double() * BIN - 0.5
        mass = torch.sigmoid(self._z(low + BIN)) - torch.sigmoid(self._z(low))
        return (-torch.log2(mass).flatten(1).sum(1) / self.num_dims).mean().item()

    @staticmethod
    def single_draw_bits_per_dim() -> float:
        """The single-draw bound's expectation, ``-E_u log2 (p(a + u) * bin)`` for uniform
        ``u`` in a bin starting at ``a``, by the midpoint rule (the same in every pixel)."""
        u = (torch.arange(100_000, dtype=torch.double) + 0.5) / 100_000
        z = (u - CENTRE) / SCALE
        log_density = -z - 2 * nn.functional.softplus(-z) - math.log(SCALE)
        return -log_density.mean().item() / math.log(2)


@pytest.fixture
def pixels():
    # Images of 2x2 pixels: many draws make the importance weights' average converge.
    return torch.randint(
        0, 256, (256, 1, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_many_draws_reach_the_exact_probability_of_the_bins(pixels):
    flow = LogisticPixels(pixels)
    exact = flow.exact_bits_per_dim(pixels)
    one = heldout_bits_per_dim(flow, pixels, batch_size=256)
    # One draw: the uniform-noise bound, 0.12 bits/dim above the exact figure here (its
    # standard error over these 1,024 pixels is 0.02).
    assert LogisticPixels.single_draw_bits_per_dim() == pytest.approx(exact + 0.122, abs=1e-3)
    assert one == pytest.approx(LogisticPixels.single_draw_bits_per_dim(), abs=0.06)
    sixteen = heldout_bits_per_dim(flow, pixels, batch_size=256, draws=16)
    many = heldout_bits_per_dim(flow, pixels, batch_size=256, draws=4096)
    assert many < sixteen < one
    # A bound in expectation: one realisation may land a little below the exact figure.
    assert many == pytest.approx(exact, abs=0.005)


def test_draws_come_in_one_order_from_the_evaluation_generator():
    torch.manual_seed(0)
    flow = Glow(image_size=8, num_levels=2, depth=1, hidden_channels=8)
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    flow.initialize(images.float() / 256 - 0.5)
    # An untrained variational dequantiser is uniform noise drawn from the same generator: the
    # same K draws per image, so the same bound, whichever path draws them.
    untrained = VariationalDequantizer(in_channels=1, depth=2, hidden_channels=8)
    uniform = heldout_bits_per_dim(flow, images, batch_size=2, draws=8)
    assert heldout_bits_per_dim(
        flow, images, batch_size=2, draws=8, dequantizer=untrained
    ) == pytest.approx(uniform, abs=1e-6)


@pytest.mark.parametrize("draws", [0, -1, 2.0, True, "4"])
def test_draws_must_be_a_positive_integer(pixels, draws):
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        heldout_bits_per_dim(LogisticPixels(pixels), pixels, draws=draws)
