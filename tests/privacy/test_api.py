"""Construction, validation, repr, identity cases, records and configs of the mechanisms."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dpglow.privacy import (
    MECHANISMS,
    DPPix,
    GaussianL2,
    LaplaceElementwise,
    LaplaceL1,
    PixelLaplace,
    PrivacyRecord,
    analytic_gaussian_sigma,
)

LATENT = [
    lambda **kw: LaplaceElementwise(**kw),
    lambda **kw: LaplaceL1(**kw),
    lambda **kw: GaussianL2(delta=1e-6, **kw),
]
IMAGE = [lambda **kw: PixelLaplace(**kw), lambda **kw: DPPix(cell=2, **kw)]


@pytest.mark.parametrize("make", LATENT + IMAGE)
@pytest.mark.parametrize(
    ("epsilon", "error"),
    [
        *[("1", TypeError), (None, TypeError), (True, TypeError), (torch.tensor(1.0), TypeError)],
        *[(math.nan, ValueError), (0.0, ValueError), (-1.0, ValueError), (-math.inf, ValueError)],
    ],
)
def test_bad_epsilon(make, epsilon, error) -> None:
    with pytest.raises(error):
        make(epsilon=epsilon)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"clip": True}, TypeError),
        ({"clip": "3"}, TypeError),
        ({"clip": 0.0}, ValueError),
        ({"clip": -1.0}, ValueError),
        ({"clip": math.nan}, ValueError),
        ({"clip": math.inf}, ValueError),
        ({"accounting": "per_pixel"}, ValueError),
        ({"accounting": None}, TypeError),
    ],
)
def test_bad_elementwise_args(kwargs, error) -> None:
    with pytest.raises(error):
        LaplaceElementwise(epsilon=1.0, **kwargs)


@pytest.mark.parametrize("cls", [LaplaceL1, GaussianL2])
@pytest.mark.parametrize(
    ("radius", "error"),
    [(False, TypeError), (0.0, ValueError), (-2.0, ValueError), (math.nan, ValueError)],
)
def test_bad_radius(cls, radius, error) -> None:
    with pytest.raises(error):
        cls(epsilon=1.0, radius=radius, **({"delta": 1e-6} if cls is GaussianL2 else {}))


@pytest.mark.parametrize(
    ("delta", "error"),
    [
        *[(None, ValueError), (0.0, ValueError), (1.0, ValueError), (-1e-9, ValueError)],
        *[(math.nan, ValueError), (True, TypeError), ("1e-6", TypeError)],
    ],
)
def test_bad_delta(delta, error) -> None:
    with pytest.raises(error):
        GaussianL2(epsilon=1.0, delta=delta)
    if delta is None:
        with pytest.raises(ValueError, match="needs delta"):
            GaussianL2(epsilon=1.0)


@pytest.mark.parametrize(("cell", "error"), [(0, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_cell(cell, error) -> None:
    with pytest.raises(error):
        DPPix(epsilon=1.0, cell=cell)


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        LaplaceL1(1.0)  # type: ignore[misc]


def test_repr_shows_parameters() -> None:
    assert repr(LaplaceElementwise(epsilon=2)) == (
        "LaplaceElementwise(epsilon=2.0, clip=3.0, accounting='per_image')"
    )
    assert repr(LaplaceL1(epsilon=1.0, radius=4)) == "LaplaceL1(epsilon=1.0, radius=4.0)"
    assert repr(GaussianL2(epsilon=0.5, delta=1e-6)) == (
        "GaussianL2(epsilon=0.5, delta=1e-06, radius=None)"
    )
    assert repr(PixelLaplace(epsilon=math.inf)) == "PixelLaplace(epsilon=inf)"
    assert repr(DPPix(epsilon=1.0)) == "DPPix(epsilon=1.0, cell=4)"


def test_mechanisms_registry() -> None:
    assert set(MECHANISMS) == {
        "laplace_elementwise",
        "laplace_l1",
        "gaussian_l2",
        "pixel_laplace",
        "dp_pix",
    }
    assert all(cls.name == name for name, cls in MECHANISMS.items())


@pytest.mark.parametrize("make", LATENT + IMAGE)
def test_infinite_epsilon_is_identity(make, seeded) -> None:
    mech = make(epsilon=math.inf)
    x = torch.rand(3, 1, 4, 4) if mech.space == "image" else 10 * torch.randn(3, 7)
    out, record = mech(x, generator=seeded(0))
    assert torch.equal(out, x) and out is not x
    assert record.noise == "none" and record.noise_scale == 0.0 and not record.private
    assert record.epsilon_per_image == record.epsilon_per_element == math.inf


def test_statistic_is_identity_where_nothing_needs_bounding() -> None:
    """Zero distortion inside the clip set: only out-of-range inputs pay for the bound."""
    u = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(LaplaceElementwise(epsilon=1.0, clip=1.0).statistic(u), u)
    assert torch.equal(LaplaceL1(epsilon=1.0, radius=2.0).statistic(u), u)
    assert torch.equal(GaussianL2(epsilon=1.0, delta=1e-6, radius=1.2).statistic(u), u)
    images = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(PixelLaplace(epsilon=1.0).statistic(images), images)
    assert torch.equal(DPPix(epsilon=1.0, cell=1).statistic(images), images)


@pytest.mark.parametrize("make", LATENT + IMAGE)
def test_huge_epsilon_returns_the_bounded_statistic(make, seeded) -> None:
    mech = make(epsilon=1e9)
    x = torch.rand(2, 1, 4, 4) if mech.space == "image" else torch.randn(2, 5)
    out, _ = mech(x, generator=seeded(0))
    assert out.dtype == x.dtype and out.shape == x.shape
    expected = mech._release(mech.statistic(x.double())).float()
    # Gaussian sigma only falls like 1 / sqrt(epsilon): 5e-5 at epsilon = 1e9.
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=0)


def test_bad_inputs(seeded) -> None:
    g = seeded(0)
    with pytest.raises(TypeError):
        LaplaceL1(epsilon=1.0)(torch.ones(2, 3, dtype=torch.int64), generator=g)
    with pytest.raises(ValueError, match=r"\[B, d\]"):
        LaplaceL1(epsilon=1.0)(torch.ones(2, 3, 4), generator=g)
    with pytest.raises(ValueError, match="NaN or inf"):
        LaplaceL1(epsilon=1.0)(torch.tensor([[1.0, math.nan]]), generator=g)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PixelLaplace(epsilon=1.0)(torch.rand(1, 1, 4, 4) - 0.5, generator=g)
    with pytest.raises(ValueError, match="divisible"):
        DPPix(epsilon=1.0, cell=3)(torch.rand(1, 1, 4, 4), generator=g)


def test_records_elementwise(seeded) -> None:
    u = torch.randn(2, 8)
    _, per_image = LaplaceElementwise(epsilon=2.0, clip=1.5)(u, generator=seeded(0))
    assert (per_image.mechanism, per_image.d, per_image.norm) == ("laplace_elementwise", 8, "linf")
    assert per_image.epsilon_per_image == 2.0 and per_image.epsilon_per_element == 2.0 / 8
    assert per_image.noise_scale == pytest.approx(2 * 1.5 * 8 / 2.0)
    assert per_image.sensitivity == 3.0 and per_image.clip == 1.5
    mech = LaplaceElementwise(epsilon=2.0, clip=1.5, accounting="per_element")
    _, per_element = mech(u, generator=seeded(0))
    assert per_element.epsilon_per_element == 2.0 and per_element.epsilon_per_image == 16.0
    assert per_element.noise_scale == pytest.approx(2 * 1.5 / 2.0)
    assert per_element.accounting == "per_element" and per_element.delta == 0.0


def test_records_balls(seeded) -> None:
    u = torch.randn(2, 50)
    _, l1 = LaplaceL1(epsilon=0.5)(u, generator=seeded(0))
    radius = 50 * math.sqrt(2 / math.pi)
    assert (l1.mechanism, l1.d, l1.norm, l1.noise) == ("laplace_l1", 50, "l1", "laplace")
    assert l1.clip == pytest.approx(radius) and l1.sensitivity == pytest.approx(2 * radius)
    assert l1.noise_scale == pytest.approx(2 * radius / 0.5)
    assert l1.epsilon_per_image == l1.epsilon_per_element == 0.5
    _, l2 = GaussianL2(epsilon=0.5, delta=1e-6)(u, generator=seeded(0))
    assert (l2.mechanism, l2.norm, l2.noise, l2.delta) == ("gaussian_l2", "l2", "gaussian", 1e-6)
    assert l2.clip == pytest.approx(math.sqrt(50))
    sigma = analytic_gaussian_sigma(epsilon=0.5, delta=1e-6, sensitivity=2 * math.sqrt(50))
    assert l2.noise_scale == pytest.approx(sigma)
    _, fixed = LaplaceL1(epsilon=0.5, radius=3.0)(u, generator=seeded(0))
    assert fixed.clip == 3.0 and fixed.noise_scale == pytest.approx(12.0)


def test_records_images(seeded) -> None:
    images = torch.rand(2, 3, 8, 8)
    _, pixel = PixelLaplace(epsilon=4.0)(images, generator=seeded(0))
    assert (pixel.mechanism, pixel.d, pixel.norm, pixel.clip) == ("pixel_laplace", 192, "l1", None)
    assert pixel.epsilon_per_element == 4.0 / 192 and pixel.noise_scale == pytest.approx(48.0)
    assert pixel.sensitivity == 192
    out, pix = DPPix(epsilon=4.0, cell=4)(images, generator=seeded(0))
    assert out.shape == images.shape
    assert (pix.mechanism, pix.d, pix.sensitivity) == ("dp_pix", 12, 12)
    assert pix.epsilon_per_element == 4.0 / 12 and pix.noise_scale == pytest.approx(3.0)
    # Nearest upsampling: every cell is constant.
    assert torch.equal(out[:, :, ::4, ::4].repeat_interleave(4, 2).repeat_interleave(4, 3), out)


def test_record_is_frozen_and_serialisable(seeded) -> None:
    _, record = LaplaceL1(epsilon=1.0)(torch.randn(1, 4), generator=seeded(0))
    assert list(record.as_dict()) == [f.name for f in dataclasses.fields(PrivacyRecord)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.epsilon_per_image = 0.0  # type: ignore[misc]
    assert "epsilon/image=1" in record.summary() and "epsilon/element=1" in record.summary()
