"""Per-layer invertibility and log-determinants (normflows' pattern)."""

from __future__ import annotations

import pytest
import torch

from dpglow.flow import ActNorm, AffineCoupling, FlowStep, InvConv2dLU, squeeze, unsqueeze


def _perturb(module: torch.nn.Module, scale: float = 0.1) -> None:
    # Zero-initialised layers are the identity; perturb them so the tests see a real map.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def _jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of fn at a single input, by brute force."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).flatten(), x.flatten())
    return torch.linalg.slogdet(jac.double())[1]


LAYERS = [
    pytest.param(lambda: ActNorm(4), id="actnorm"),
    pytest.param(lambda: InvConv2dLU(4), id="invconv"),
    pytest.param(lambda: AffineCoupling(4, 16), id="affine_coupling"),
    pytest.param(lambda: AffineCoupling(4, 16, affine=False), id="additive_coupling"),
    pytest.param(lambda: AffineCoupling(4, 16, spline_bins=5), id="spline_coupling"),
    pytest.param(lambda: AffineCoupling(4, 16, affine=False, spline_bins=3), id="spline_additive"),
    pytest.param(lambda: FlowStep(4, 16, affine=True, scale_floor=0.1), id="flow_step"),
]


@pytest.mark.parametrize("make", LAYERS)
def test_layer_inverts_and_logdet_matches_jacobian(make):
    torch.manual_seed(0)
    layer = make()
    _perturb(layer)
    x = torch.randn(3, 4, 4, 4)
    y, logdet = layer(x)
    assert logdet.shape == (3,)
    torch.testing.assert_close(layer.reverse(y), x, atol=1e-5, rtol=1e-5)
    for i in range(2):
        expected = _jacobian_logdet(lambda v: layer(v)[0], x[i : i + 1])
        torch.testing.assert_close(logdet[i].double(), expected, atol=1e-3, rtol=1e-4)


def test_squeeze_roundtrip_and_layout():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    s = squeeze(x)
    assert s.shape == (2, 4, 2, 2)
    # Each output pixel holds its own 2x2 block of the input.
    assert s[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    torch.testing.assert_close(unsqueeze(s), x)


def test_actnorm_initialisation_standardises_and_sticks():
    layer = ActNorm(3)
    x = torch.randn(64, 3, 8, 8) * torch.tensor([1.0, 5.0, 0.2]).view(1, 3, 1, 1) + 3.0
    layer._init_pending = True
    y, _ = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    loc = layer.loc.detach().clone()
    layer(x * 10)  # no pending init: parameters unchanged
    torch.testing.assert_close(layer.loc.detach(), loc)


def test_actnorm_state_survives_save_and_load(tmp_path):
    layer = ActNorm(2)
    layer._init_pending = True
    layer(torch.randn(16, 2, 4, 4) * 3 + 1)
    torch.save(layer.state_dict(), tmp_path / "actnorm.pt")
    restored = ActNorm(2)
    assert not restored.initialized
    restored.load_state_dict(torch.load(tmp_path / "actnorm.pt", weights_only=True))
    assert bool(restored.initialized)
    torch.testing.assert_close(restored.log_scale, layer.log_scale)


def test_coupling_scale_floor_bounds_inverse_gain():
    layer = AffineCoupling(4, 8, scale_floor=0.2)
    with torch.no_grad():
        layer.net[-1].conv.bias.fill_(-1e4)  # drive the raw scale to -inf
    y = torch.randn(2, 4, 3, 3)
    x = layer.reverse(y)
    assert torch.isfinite(x).all()
    # With shift bias -1e4 the shift dominates; what matters: gain on y_b is at most 1/floor.
    scale, _, _ = layer._scale_shift(y[:, :2])
    assert scale.min().item() >= 0.2 - 1e-6


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1])
def test_coupling_rejects_bad_floor(bad):
    with pytest.raises(ValueError, match="scale_floor"):
        AffineCoupling(4, 8, scale_floor=bad)
