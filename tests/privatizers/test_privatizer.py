"""DP-GLOW over a trained flow: exactness at epsilon=inf, noise sources, levels, safe decoding."""

from __future__ import annotations

import math

import pytest
import torch

from dpglow.flow import flatten_latents, to_flow_input
from dpglow.privacy import LaplaceElementwise, LaplaceL1, noise_generator
from dpglow.privatizers.dp_glow import DPGlowPrivatizer
from dpglow.privatizers.latents import expected_norm, resolve_levels


def _gen(seed=None):
    return noise_generator(noise_seed=seed)


def test_epsilon_inf_reproduces_the_input(flow, xray_batch):
    priv = DPGlowPrivatizer(flow=flow, mechanism=LaplaceL1(epsilon=math.inf), levels="all")
    gen, source = _gen(0)
    out = priv(xray_batch, generator=gen, noise_source=source)
    record = priv.record(noise_source=source)
    assert out.dtype == torch.uint8 and out.shape == xray_batch.shape
    close = (out.int() - xray_batch.int()).abs() <= 1
    assert close.float().mean() >= 0.99
    assert record.noise == "none"


def test_privatized_images_depend_on_noise_source(flow, xray_batch):
    priv = DPGlowPrivatizer(
        flow=flow, mechanism=LaplaceElementwise(epsilon=1e4, clip=3.0), postprocess="clamp"
    )
    a = priv(xray_batch, **_args(None))
    b = priv(xray_batch, **_args(None))
    assert not torch.equal(a, b)
    rec_a = priv.record(noise_source=_args(None)["noise_source"])
    assert rec_a.noise_source == "os_entropy" and rec_a.private
    c = priv(xray_batch, **_args(7))
    d = priv(xray_batch, **_args(7))
    rec_c = priv.record(noise_source=_args(7)["noise_source"])
    assert torch.equal(c, d)
    assert not rec_c.private and "NOT PRIVATE" in rec_c.noise_source


def _args(seed):
    gen, source = _gen(seed)
    return {"generator": gen, "noise_source": source}


@pytest.mark.parametrize("postprocess", ["none", "clamp", "posterior_mean", "posterior_sample"])
def test_large_noise_decodes_to_valid_images(flow, xray_batch, postprocess):
    priv = DPGlowPrivatizer(
        flow=flow, mechanism=LaplaceElementwise(epsilon=1.0, clip=3.0), postprocess=postprocess
    )
    gen, source = _gen(3)
    x = to_flow_input(xray_batch)
    u = flatten_latents(flow.encode(x))
    noisy, record = priv.mechanism(u, generator=gen, noise_source=source)
    assert record.noise_scale > 1e3  # the privatized regime: far off the training distribution
    decoded = flow.decode(flow_latents(flow, noisy))
    assert torch.isfinite(decoded).all()
    out = priv(xray_batch, generator=gen, noise_source=source)
    assert out.dtype == torch.uint8


def flow_latents(flow, flat):
    from dpglow.flow import unflatten_latents

    return unflatten_latents(flat, flow.latent_shapes)


def test_levels_choose_what_is_privatized(flow, xray_batch):
    coarse = DPGlowPrivatizer(flow=flow, mechanism=LaplaceL1(epsilon=1.0), levels=[-1])
    assert coarse.levels == [len(flow.levels) - 1]
    assert coarse.num_private_elements == math.prod(flow.latent_shapes[-1])
    record = coarse.record()
    assert record.d == coarse.num_private_elements < flow.num_dims
    assert coarse.describe()["levels"] == str(len(flow.levels) - 1)
    full = DPGlowPrivatizer(flow=flow, mechanism=LaplaceL1(epsilon=1.0))
    assert full.num_private_elements == flow.num_dims


def test_resolve_levels_validation():
    assert resolve_levels("all", 3) == [0, 1, 2]
    assert resolve_levels([2, 0, -1], 3) == [0, 2]
    with pytest.raises(ValueError, match="does not exist"):
        resolve_levels([3], 3)
    with pytest.raises(TypeError):
        resolve_levels([1.5], 3)
    with pytest.raises(ValueError, match="non-empty"):
        resolve_levels([], 3)
    # Strings a sweeper can pass.
    assert resolve_levels("coarsest", 4) == [3]
    assert resolve_levels("coarsest2", 4) == [2, 3]
    assert resolve_levels("-2,-1", 4) == [2, 3]
    with pytest.raises(ValueError, match="4 levels"):
        resolve_levels("coarsest5", 4)
    with pytest.raises(ValueError, match="coarsest"):
        resolve_levels("finest", 4)


def test_privatizer_rejects_bad_settings(flow):
    with pytest.raises(ValueError, match="postprocess"):
        DPGlowPrivatizer(flow=flow, mechanism=LaplaceL1(epsilon=1.0), postprocess="blur")
    with pytest.raises(ValueError, match="temperature"):
        DPGlowPrivatizer(flow=flow, mechanism=LaplaceL1(epsilon=1.0), temperature=0.0)


def test_expected_norms_match_sampling():
    torch.manual_seed(0)
    u = torch.randn(4000, 64)
    assert abs(u.abs().sum(1).mean().item() / expected_norm(64, "l1") - 1) < 0.01
    assert abs(u.norm(dim=1).mean().item() / expected_norm(64, "l2") - 1) < 0.01
