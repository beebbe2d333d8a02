"""The whole model: exact inverse, log-density, bits/dim, safety of decoding."""

from __future__ import annotations

import math

import pytest
import torch

from dpglow.flow import (
    Glow,
    bits_per_dim,
    flatten_latents,
    level_slices,
    to_flow_input,
    to_uint8,
    unflatten_latents,
)
from dpglow.flow.level import squeeze


def _tiny(**kw) -> Glow:
    torch.manual_seed(0)
    args = dict(image_size=8, num_levels=2, depth=2, hidden_channels=16) | kw
    model = Glow(**args)
    model.initialize(torch.rand(32, args.get("in_channels", 1), 8, 8) - 0.5)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # leave the identity-at-init regime
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


@pytest.mark.parametrize("split_prior", ["fixed", "learned"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_glow_encode_decode_is_exact(split_prior, in_channels):
    model = _tiny(split_prior=split_prior, in_channels=in_channels)
    x = torch.rand(4, in_channels, 8, 8) - 0.5
    latents = model.encode(x)
    assert [tuple(u.shape[1:]) for u in latents] == model.latent_shapes
    assert sum(u[0].numel() for u in latents) == model.num_dims
    torch.testing.assert_close(model.decode(latents), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("split_prior", ["fixed", "learned"])
def test_log_prob_equals_change_of_variables_by_brute_force(split_prior):
    """log p(x) = sum log N(u) + log|det du/dx|, with the Jacobian computed by autograd."""
    model = _tiny(split_prior=split_prior).double()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64) - 0.5

    def flat_u(v):
        return flatten_latents(model.encode(v.view(1, 1, 8, 8)))[0]

    jac = torch.autograd.functional.jacobian(flat_u, x.flatten())
    u = flat_u(x.flatten())
    expected = (-0.5 * (u**2 + math.log(2 * math.pi))).sum() + torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(model.log_prob(x)[0], expected, atol=1e-6, rtol=1e-8)


def test_input_squeezes_are_a_flow_of_the_squeezed_image():
    """input_squeezes=1 is exactly the flow of ``squeeze(x)`` with 4x the channels at half the
    size (a 2x2 squeeze is a permutation: no logdet), and stays exactly invertible."""
    torch.manual_seed(0)
    squeezed = Glow(image_size=16, num_levels=2, depth=2, hidden_channels=16, input_squeezes=1)
    torch.manual_seed(0)
    plain = Glow(in_channels=4, image_size=8, num_levels=2, depth=2, hidden_channels=16)
    assert squeezed.latent_shapes == plain.latent_shapes == [(8, 4, 4), (32, 2, 2)]
    assert squeezed.config["input_squeezes"] == 1 and "input_squeezes" not in plain.config
    plain.load_state_dict(squeezed.state_dict())
    x = torch.rand(4, 1, 16, 16) - 0.5
    squeezed.initialize(x)
    plain.initialize(squeeze(x))
    torch.testing.assert_close(squeezed.log_prob(x), plain.log_prob(squeeze(x)))
    latents = squeezed.encode(x)
    for u, v in zip(latents, plain.encode(squeeze(x)), strict=True):
        torch.testing.assert_close(u, v)
    torch.testing.assert_close(squeezed.decode(latents), x, atol=1e-5, rtol=0)
    assert squeezed.decode(latents).shape == x.shape


def test_logdet_forward_plus_reverse_is_zero():
    model = _tiny().double()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64) - 0.5
    latents = model.encode(x)

    def flat_x(v):
        return model.decode(unflatten_latents(v.view(1, -1), model.latent_shapes)).flatten()

    jac_rev = torch.autograd.functional.jacobian(flat_x, flatten_latents(latents)[0])
    _, logdet, _ = model(x)
    torch.testing.assert_close(
        logdet[0] + torch.linalg.slogdet(jac_rev)[1],
        torch.tensor(0.0, dtype=torch.float64),
        atol=1e-6,
        rtol=0,
    )


def test_bits_per_dim_known_case():
    # A uniform density on [-0.5, 0.5]^D has log p = 0, so every 8-bit image costs exactly 8 bits
    # per dimension; 4-bit inputs cost 4.
    log_px = torch.zeros(3)
    torch.testing.assert_close(bits_per_dim(log_px, num_dims=64 * 64), torch.full((3,), 8.0))
    torch.testing.assert_close(bits_per_dim(log_px, num_dims=10, n_bits=4), torch.full((3,), 4.0))
    # Twice the density everywhere saves exactly one bit per image, 1/D bits per dimension.
    torch.testing.assert_close(
        bits_per_dim(torch.tensor([math.log(2.0)]), num_dims=4), torch.tensor([8.0 - 0.25])
    )


def test_untrained_glow_bpd_on_uniform_noise_is_near_its_gaussian_cost():
    # At init the flow is ActNorm (standardises) + near-identity maps: log p(x) is the N(0,1)
    # density of standardised data plus log(1/std). For U(-0.5, 0.5) data, std = 1/sqrt(12).
    torch.manual_seed(0)
    model = Glow(image_size=16, num_levels=2, depth=1, hidden_channels=8)
    images = torch.randint(0, 256, (256, 1, 16, 16), dtype=torch.uint8)
    x = to_flow_input(images, dequantize=True)
    model.initialize(x)
    bpd = bits_per_dim(model.log_prob(x), num_dims=256).mean().item()
    gaussian_nats = 0.5 * math.log(2 * math.pi * math.e / 12)  # per dim, entropy of N(0, 1/12)
    expected = (gaussian_nats + 8 * math.log(2)) / math.log(2)
    assert abs(bpd - expected) < 0.05, (bpd, expected)


def test_quantisation_roundtrip_and_range():
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = to_flow_input(images)
    assert x.min() > -0.5 and x.max() < 0.5
    assert torch.equal(to_uint8(x), images)
    deq = to_flow_input(images, dequantize=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_uint8(deq), images)  # noise stays inside each bin
    five = to_uint8(to_flow_input(images, n_bits=5), n_bits=5)
    assert torch.equal(five, (images // 8) * 8)
    assert torch.equal(
        to_uint8(torch.tensor([float("nan"), 9.0, -9.0])),
        torch.tensor([128, 255, 0], dtype=torch.uint8),
    )
    with pytest.raises(TypeError, match="uint8"):
        to_flow_input(images.float())


def test_huge_latents_decode_to_finite_images():
    model = _tiny()
    gen = torch.Generator().manual_seed(0)
    for scale in (10.0, 1e2, 1e3):
        latents = [torch.randn((4, *s), generator=gen) * scale for s in model.latent_shapes]
        out = model.decode(latents)
        assert torch.isfinite(out).all(), scale
    extreme = [torch.full((1, *s), 1e3) for s in model.latent_shapes]
    assert torch.isfinite(model.decode(extreme)).all()


def test_flatten_unflatten_latents():
    model = _tiny()
    latents = model.encode(torch.rand(2, 1, 8, 8) - 0.5)
    flat = flatten_latents(latents)
    assert flat.shape == (2, 64)
    slices = level_slices(model.latent_shapes)
    assert [s.stop - s.start for s in slices] == [32, 32]
    for u, v in zip(latents, unflatten_latents(flat, model.latent_shapes), strict=True):
        assert torch.equal(u, v)
    with pytest.raises(ValueError, match="latent vector"):
        unflatten_latents(flat[:, :10], model.latent_shapes)


def test_initialize_only_touches_uninitialised_layers():
    model = _tiny()
    assert model.actnorm_initialized()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.initialize(torch.rand(8, 1, 8, 8) * 3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_per_level_widths_build_those_couplings_and_stay_invertible():
    model = _tiny(hidden_channels=[8, 24])
    for level, width in zip(model.levels, [8, 24], strict=True):
        assert {step.coupling.net[0].out_channels for step in level.steps} == {width}
    assert model.config["hidden_channels"] == [8, 24]
    x = torch.rand(2, 1, 8, 8) - 0.5
    torch.testing.assert_close(model.decode(model.encode(x)), x, atol=1e-5, rtol=0)
    same = _tiny(hidden_channels=[16, 16])  # a list of equal widths is the int's model
    assert same.state_dict().keys() == _tiny().state_dict().keys()
    assert all(torch.equal(v, _tiny().state_dict()[k]) for k, v in same.state_dict().items())


def test_per_level_depths_build_that_many_steps_and_stay_invertible():
    model = _tiny(depth=[1, 3])
    assert [len(level.steps) for level in model.levels] == [1, 3]
    assert model.config["depth"] == [1, 3]
    x = torch.rand(2, 1, 8, 8) - 0.5
    torch.testing.assert_close(model.decode(model.encode(x)), x, atol=1e-5, rtol=0)
    log_p, logdet, _ = model(x)
    assert torch.isfinite(log_p + logdet).all()
    same, plain = _tiny(depth=[3, 3]), _tiny(depth=3)  # equal depths are the int's model
    assert same.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in same.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_levels=2, hidden_channels=[8, 8, 8]), "3 widths for num_levels=2"),
        (dict(num_levels=2, depth=[2, 2, 2]), "3 depths for num_levels=2"),
        (dict(num_levels=2, depth=[2, 0]), "depth must be positive integers"),
        (dict(depth=[2.0, 2, 2, 2]), "depth must be positive integers"),
        (dict(depth="16"), "depth must be an int or a list"),
        (dict(num_levels=2, hidden_channels=[8, 0]), "positive integers"),
        (dict(num_levels=2, hidden_channels=[8, 8.0]), "positive integers"),
        (dict(hidden_channels=True), "int or a list"),
        (dict(hidden_channels="128"), "int or a list"),
        (dict(hidden_channels=0), "positive integers"),
        (dict(image_size=12, num_levels=3), "divisible"),
        (dict(image_size=16, num_levels=4, input_squeezes=1), "input_squeezes"),
        (dict(input_squeezes=-1), "input_squeezes must be >= 0"),
        (dict(depth=0), "depth must be positive integers"),
        (dict(num_levels=0), "num_levels and in_channels must be positive"),
        (dict(split_prior="gaussian"), "split_prior"),
        (dict(spline_bins=1), "spline_bins must be 0"),
        (dict(spline_bins=-2), "spline_bins must be 0"),
        (dict(spline_bins=4.0), "spline_bins must be 0"),
    ],
)
def test_glow_rejects_impossible_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Glow(**kwargs)


def test_glow_rejects_wrong_input_shape():
    model = Glow(image_size=8, num_levels=2, depth=1, hidden_channels=8)
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.zeros(1, 3, 8, 8))
