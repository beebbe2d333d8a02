"""The detail channel: directions per epsilon, orthogonality, release and splice."""

from __future__ import annotations

import math

import pytest
import torch

from dpglow.privacy import DiscreteLaplaceL1, noise_generator
from dpglow.privatizers.basis import energy_basis
from dpglow.privatizers.detail import DetailChannel, detail_directions, orthogonal_rows


def _energy(d: int = 12, k: int = 8) -> object:
    g = torch.Generator().manual_seed(0)
    rows = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0].T[:k]
    latents = torch.randn(50, d, generator=g)
    return energy_basis(
        rows,
        torch.arange(k, 0, -1, dtype=torch.float64),
        latents,
        torch.zeros(50, 1),
        pathologies=["x"],
        levels=[0],
        flow_sha256="f" * 64,
        images=50,
    )


def test_directions_grow_with_epsilon_and_stay_in_range() -> None:
    ks = [detail_directions(e, per_epsilon=0.25, available=100) for e in (1, 4, 10, 100, 1e4)]
    assert ks == [1, 1, 3, 25, 100]
    assert detail_directions(math.inf, per_epsilon=0.25, available=7) == 7
    with pytest.raises(ValueError, match="directions_per_epsilon"):
        detail_directions(3, per_epsilon=0, available=5)


def test_orthogonal_rows_avoid_the_excluded_span() -> None:
    g = torch.Generator().manual_seed(1)
    exclude = torch.linalg.qr(torch.randn(10, 2, generator=g, dtype=torch.float64))[0].T
    rows = orthogonal_rows(torch.randn(4, 10, generator=g), exclude)
    assert torch.allclose(rows @ rows.T, torch.eye(4, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(rows @ exclude.T, torch.zeros(4, 2, dtype=torch.float64), atol=1e-10)


def _channel(epsilon: float, exclude=None) -> DetailChannel:
    return DetailChannel(
        basis=_energy(),
        mechanism=lambda epsilon: DiscreteLaplaceL1(epsilon=epsilon),
        epsilon=epsilon,
        directions_per_epsilon=0.5,
        exclude=exclude,
    )


def test_the_record_is_the_mechanism_on_k_directions() -> None:
    channel = _channel(6.0)
    record = channel.record(noise_source="os_entropy")
    assert channel.k == 3 and record.d == 3 and record.epsilon_per_image == 6.0
    assert record.grid is not None and record.private
    assert channel.describe()["detail_k"] == 3


def test_release_estimates_the_projections_and_apply_splices_them() -> None:
    channel = _channel(1e6)  # nearly no noise: the estimate is the projection itself
    g = torch.Generator().manual_seed(3)
    u = torch.randn(5, 12, generator=g) * 0.3
    generator, source = noise_generator(noise_seed=0)
    estimate = channel.release(u, generator=generator, noise_source=source)
    assert torch.allclose(estimate, u @ channel.rows.T, atol=1e-2)
    other = torch.randn(5, 12, generator=g)
    spliced = channel.apply(other, estimate)
    rows = channel.rows
    assert torch.allclose(spliced @ rows.T, estimate, atol=1e-5)  # inside: the release
    outside = spliced - (spliced @ rows.T) @ rows
    assert torch.allclose(outside, other - (other @ rows.T) @ rows, atol=1e-5)  # outside: kept


def test_the_channel_needs_an_energy_basis() -> None:
    basis = _energy()
    basis.kind = "supervised"
    with pytest.raises(ValueError, match="energy"):
        DetailChannel(
            basis=basis,
            mechanism=lambda epsilon: DiscreteLaplaceL1(epsilon=epsilon),
            epsilon=3.0,
            directions_per_epsilon=1.0,
        )


def _conditional_glow(m: int = 2):
    from dpglow.flow import Glow

    torch.manual_seed(0)
    flow = Glow(image_size=8, num_levels=2, depth=2, hidden_channels=16, num_conditions=m)
    flow.initialize(torch.rand(16, 1, 8, 8) - 0.5)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return flow.eval()


def test_decoder_energy_is_the_jacobian_gram_given_each_images_labels() -> None:
    from dpglow.flow import flatten_latents, unflatten_latents
    from dpglow.privatizers.energy import decoder_energy

    flow = _conditional_glow()
    labels = torch.tensor([[1.0, 0.0], [0.0, float("nan")]])
    y = labels.nan_to_num(0.0)
    with torch.no_grad():
        latents = flatten_latents(flow.encode(torch.rand(2, 1, 8, 8) - 0.5, y=y))
    top = flow.latent_shapes[1]
    start, d = latents.shape[1] - torch.Size(top).numel(), torch.Size(top).numel()

    def decode_top(i: int):
        def f(v):
            u = latents[i : i + 1].clone()
            u[0, start:] = v
            return flow.decode(unflatten_latents(u, flow.latent_shapes), y=y[i : i + 1]).flatten()

        return torch.autograd.functional.jacobian(f, latents[i, start:])

    exact = sum(decode_top(i).double().T @ decode_top(i).double() for i in range(2)) / 2
    estimate = decoder_energy(flow, latents, levels=[1], probes=1000, labels=labels)
    assert estimate.shape == (d, d)
    assert torch.allclose(estimate, exact, atol=0.15 * exact.diagonal().max())
    with pytest.raises(ValueError, match="labels"):
        decoder_energy(flow, latents, levels=[1], probes=1)
