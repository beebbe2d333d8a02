"""dpglow.flow.spline: the rational-quadratic spline is monotone, maps its interval onto itself,
is the identity at zero parameters and outside the interval, and its inverse and log-derivative
are exact."""

from __future__ import annotations

import pytest
import torch

from dpglow.flow.spline import num_spline_params, rational_quadratic_spline

BOUND = 3.0


def _inputs(bins: int, scale: float = 1.5, n: int = 4000, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen, dtype=dtype) * 2.0  # a fifth lies outside [-3, 3]
    params = torch.randn(n, 3, num_spline_params(bins), generator=gen, dtype=dtype) * scale
    return x, params


def test_zero_parameters_are_the_identity():
    x, params = _inputs(6)
    y, log_slope = rational_quadratic_spline(x, torch.zeros_like(params), bound=BOUND)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_slope, torch.zeros_like(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("bins", [2, 8])
def test_inverse_and_log_derivative_are_exact(bins):
    x, params = _inputs(bins)
    y, log_slope = rational_quadratic_spline(x, params, bound=BOUND)
    back, inverse_log_slope = rational_quadratic_spline(y, params, bound=BOUND, inverse=True)
    torch.testing.assert_close(back, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(inverse_log_slope, -log_slope, atol=1e-9, rtol=0)
    # The log-derivative is the derivative autograd finds (elementwise map: a diagonal Jacobian).
    leaf = x.clone().requires_grad_()
    (slope,) = torch.autograd.grad(
        rational_quadratic_spline(leaf, params, bound=BOUND)[0].sum(), leaf
    )
    torch.testing.assert_close(torch.log(slope), log_slope, atol=1e-9, rtol=0)


def test_monotone_onto_the_interval_and_identity_outside():
    _, params = _inputs(5, n=1)
    grid = torch.linspace(-5.0, 5.0, 20001, dtype=torch.float64).view(-1, 1)
    y, _ = rational_quadratic_spline(grid, params[:, :1].expand(len(grid), 1, -1), bound=BOUND)
    assert bool((y.diff(dim=0) > 0).all())
    outside = grid.abs() >= BOUND
    torch.testing.assert_close(y[outside], grid[outside], atol=0, rtol=0)
    inside = y[~outside]  # onto (-3, 3): continuous at both ends
    assert inside.abs().max() < BOUND
    torch.testing.assert_close(
        inside[[0, -1]], inside.new_tensor([-BOUND, BOUND]), atol=2e-3, rtol=0
    )


def test_float32_round_trip_of_a_moderate_spline():
    x, params = _inputs(8, scale=0.5, dtype=torch.float32)
    y, _ = rational_quadratic_spline(x, params, bound=BOUND)
    back, _ = rational_quadratic_spline(y, params, bound=BOUND, inverse=True)
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("x_shape", "params_shape", "match"),
    [((4, 3), (4, 2, 23), "x's shape"), ((4, 3), (4, 3, 22), "3K - 1"), ((4,), (4, 2), "3K - 1")],
)
def test_bad_parameter_shapes_are_refused(x_shape, params_shape, match):
    with pytest.raises(ValueError, match=match):
        rational_quadratic_spline(torch.zeros(x_shape), torch.zeros(params_shape), bound=BOUND)
