"""Variational dequantisation: the offsets stay in their bins, log q is the exact density of the
offsets (checked against the Jacobian of the whole map), and without a dequantiser nothing
changes from uniform noise."""

from __future__ import annotations

import math

import pytest
import torch

from dpglow.flow import VariationalDequantizer, bits_per_dim, dequantize, to_flow_input
from dpglow.flow.dequantization import ConditionalCoupling, logistic_noise


def _images(shape=(3, 1, 8, 8), seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)


def _randomised(dequantizer: VariationalDequantizer, seed: int = 1) -> VariationalDequantizer:
    """Non-zero weights everywhere, so the couplings are not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in dequantizer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return dequantizer


def test_without_a_dequantizer_it_is_uniform_noise_with_log_q_zero():
    images = _images()
    x, log_q = dequantize(images, generator=torch.Generator().manual_seed(5))
    expected = to_flow_input(images, dequantize=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, expected)
    assert torch.equal(log_q, torch.zeros(len(images)))


@pytest.mark.parametrize("n_bits", [8, 5])
def test_offsets_stay_inside_their_bins(n_bits):
    images = _images((4, 1, 16, 16))
    dequantizer = _randomised(VariationalDequantizer(depth=3, hidden_channels=16))
    x, log_q = dequantize(
        images, n_bits=n_bits, generator=torch.Generator().manual_seed(2), dequantizer=dequantizer
    )
    centres = to_flow_input(images, n_bits=n_bits)
    assert (x - centres).abs().max() <= 0.5 / 2**n_bits
    assert torch.isfinite(log_q).all() and log_q.shape == (4,)


def test_log_q_is_the_exact_density_of_the_offsets():
    """log q(u | x) = log logistic(e) - log |det du/de| for the whole map e -> u, brute force
    (a 16x16 Jacobian in float64)."""
    dequantizer = _randomised(VariationalDequantizer(depth=3, hidden_channels=8)).double()
    x = to_flow_input(_images((1, 1, 4, 4), seed=3)).double()
    noise = logistic_noise((1, 1, 4, 4), generator=torch.Generator().manual_seed(6)).double()
    u, log_q = dequantizer(x, noise)
    jac = torch.autograd.functional.jacobian(lambda e: dequantizer(x, e)[0], noise)
    _, logabsdet = torch.linalg.slogdet(jac.reshape(16, 16))
    log_logistic = (-noise - 2 * torch.nn.functional.softplus(-noise)).sum()
    assert log_q.item() == pytest.approx((log_logistic - logabsdet).item(), abs=1e-9)
    assert ((u > 0) & (u < 1)).all()


def test_an_untrained_dequantizer_is_uniform_dequantization():
    """Identity couplings and the sigmoid of logistic noise: the uniform draws themselves, with
    log q = 0, so training starts from the uniform bound."""
    images = _images()
    dequantizer = VariationalDequantizer(depth=2, hidden_channels=8)
    x, log_q = dequantize(
        images, generator=torch.Generator().manual_seed(4), dequantizer=dequantizer
    )
    uniform, _ = dequantize(images, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(x, uniform, rtol=0, atol=1e-7)  # float32 rounding of x
    torch.testing.assert_close(log_q, torch.zeros(len(images)), rtol=0, atol=1e-3)


def test_logistic_noise_is_logistic_and_finite():
    noise = logistic_noise((200_000,), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(noise).all() and noise.abs().max() < 16.2
    # Standard logistic: mean 0, variance pi^2 / 3, and its sigmoid uniform.
    assert abs(noise.mean().item()) < 0.02
    assert noise.var().item() == pytest.approx(math.pi**2 / 3, rel=0.02)
    assert torch.sigmoid(noise).mean().item() == pytest.approx(0.5, abs=0.003)


def test_coupling_alternates_the_half_it_transforms():
    x = torch.randn(2, 4, 3, 3)
    context = torch.randn(2, 5, 3, 3)
    for swap, kept in ((False, slice(0, 2)), (True, slice(2, 4))):
        coupling = ConditionalCoupling(4, 5, 8, swap=swap)
        _randomised(coupling)
        y, _ = coupling(x, context)
        assert torch.equal(y[:, kept], x[:, kept])
        assert not torch.allclose(y, x)


def test_training_q_on_the_bound_tightens_it():
    """A density peaked at the bin centres (N(centre, a quarter bin)): uniform offsets waste
    0.26 bits/dim where the best q costs 0.07 (minus the log of the bin's mass); maximising the
    bound over q, as training does, recovers most of it."""
    images = _images((8, 1, 8, 8), seed=7)
    centres = to_flow_input(images)
    peaked = torch.distributions.Normal(centres, 0.25 / 256)

    def bound(dequantizer=None, seed=9) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        x, log_q = dequantize(images, generator=gen, dequantizer=dequantizer)
        log_px = peaked.log_prob(x).flatten(1).sum(1)
        return bits_per_dim(log_px - log_q, num_dims=64).mean()

    dequantizer = VariationalDequantizer(depth=2, hidden_channels=16)
    opt = torch.optim.Adam(dequantizer.parameters(), lr=1e-2)
    for step in range(150):
        loss = bound(dequantizer, seed=step)
        opt.zero_grad(), loss.backward(), opt.step()
    with torch.no_grad():
        uniform, learned = bound().item(), bound(dequantizer).item()
    mass = torch.special.erf(torch.tensor(2.0 / math.sqrt(2.0))).item()  # P(|z| < 2)
    best = bits_per_dim(torch.tensor(64 * math.log(mass) + 64 * math.log(256)), num_dims=64)
    assert uniform > 0.25 and learned < 0.15  # 0.26 -> 0.12 bits/dim; the best q: 0.07
    assert learned >= best.item() - 1e-6  # a bound: never below log P(x)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="must be positive"):
        VariationalDequantizer(depth=0)
    with pytest.raises(ValueError, match="one shape"):
        VariationalDequantizer()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2))
