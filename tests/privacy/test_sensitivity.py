"""Clipping bounds the sensitivity, for any finite input (property tests)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dpglow.privacy import DPPix, GaussianL2, LaplaceElementwise, LaplaceL1, PixelLaplace

SETTINGS = settings(max_examples=60, deadline=None)
# Any finite float64: huge (to 1.8e308), subnormal, zero, mixed signs.
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
bounds = st.floats(min_value=1e-3, max_value=1e3)


@st.composite
def latent_pairs(draw: st.DrawFn) -> torch.Tensor:
    d = draw(st.integers(1, 12))
    return torch.from_numpy(draw(arrays("float64", (2, d), elements=finite)))


@st.composite
def image_pairs(draw: st.DrawFn, elements: st.SearchStrategy[float]) -> tuple[torch.Tensor, int]:
    cell = draw(st.sampled_from([1, 2, 4]))
    channels, rows, cols = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shape = (2, channels, rows * cell, cols * cell)
    return torch.from_numpy(draw(arrays("float64", shape, elements=elements))), cell


@SETTINGS
@given(latent_pairs(), bounds)
def test_elementwise_linf(u: torch.Tensor, clip: float) -> None:
    mech = LaplaceElementwise(epsilon=1.0, clip=clip)
    out = mech.statistic(u)
    assert float(out.abs().max()) <= clip
    assert float((out[0] - out[1]).abs().max()) <= mech.record(u.shape[1:]).sensitivity == 2 * clip


@SETTINGS
@given(latent_pairs(), st.one_of(st.none(), bounds))
def test_l1_ball(u: torch.Tensor, radius: float | None) -> None:
    mech = LaplaceL1(epsilon=1.0, radius=radius)
    limit = mech.resolve_radius(u.shape[1])
    out = mech.statistic(u)
    assert bool(torch.isfinite(out).all())
    assert float(out.abs().sum(1).max()) <= limit
    assert float((out[0] - out[1]).abs().sum()) <= mech.record(u.shape[1:]).sensitivity
    # The direction is kept: scaling by a non-negative factor.
    assert bool(((out * u) >= 0).all())


@SETTINGS
@given(latent_pairs(), st.one_of(st.none(), bounds))
def test_l2_ball(u: torch.Tensor, radius: float | None) -> None:
    mech = GaussianL2(epsilon=1.0, delta=1e-6, radius=radius)
    limit = mech.resolve_radius(u.shape[1])
    out = mech.statistic(u)
    assert bool(torch.isfinite(out).all())
    assert float(torch.linalg.vector_norm(out, dim=1).max()) <= limit
    assert float(torch.linalg.vector_norm(out[0] - out[1])) <= mech.record(u.shape[1:]).sensitivity
    assert bool(((out * u) >= 0).all())


@SETTINGS
@given(image_pairs(st.floats(0.0, 1.0)))
def test_dp_pix_cell_means(pair: tuple[torch.Tensor, int]) -> None:
    images, cell = pair
    mech = DPPix(epsilon=1.0, cell=cell)
    means = mech.statistic(images)
    record = mech.record(images.shape[1:])
    assert means[0].numel() == record.d == record.sensitivity
    assert float((means[0] - means[1]).abs().sum()) <= record.sensitivity


@SETTINGS
@given(image_pairs(finite))
def test_image_statistics_bounded_for_any_input(pair: tuple[torch.Tensor, int]) -> None:
    """Even out-of-range inputs cannot exceed the sensitivity: both mechanisms clamp first."""
    images, cell = pair
    pixels = math.prod(images.shape[1:])
    pixel = PixelLaplace(epsilon=1.0)
    out = pixel.statistic(images)
    assert pixel.record(images.shape[1:]).sensitivity == pixels
    assert float((out[0] - out[1]).abs().sum()) <= pixels
    means = DPPix(epsilon=1.0, cell=cell).statistic(images)
    assert float((means[0] - means[1]).abs().sum()) <= means[0].numel()
