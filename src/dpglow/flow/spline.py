"""Monotone rational-quadratic splines with identity tails (Durkan et al., 2019, "Neural Spline
Flows"): the elementwise transform of the spline coupling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Lower bounds of a bin's width and height (as fractions of the interval) and of a knot's
# derivative: they keep every bin's slope away from 0 and infinity (the inverse's local gain is
# at most about 1 / MIN_DERIVATIVE, its range that of the interval).
MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
# The offset that makes a zero unnormalised derivative a derivative of 1 (softplus(offset) +
# MIN_DERIVATIVE = 1): the end knots' (so the spline meets its identity tails smoothly) and, at
# zero parameters, every knot's.
_UNIT_DERIVATIVE = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def num_spline_params(bins: int) -> int:
    """Unnormalised parameters per element of a ``bins``-bin spline: widths, heights and the
    ``bins - 1`` inner knots' derivatives."""
    return 3 * bins - 1


def _knots(unnormalised: torch.Tensor, bound: float, minimum: float) -> torch.Tensor:
    """``[..., K] -> [..., K + 1]``: knot positions from -bound to bound, each bin at least
    ``minimum`` of the interval; equal bins for equal (e.g. zero) inputs."""
    bins = unnormalised.shape[-1]
    fractions = minimum + (1.0 - minimum * bins) * torch.softmax(unnormalised, dim=-1)
    inner = torch.cumsum(fractions[..., :-1], dim=-1) * (2.0 * bound) - bound
    # Exact end points: the cumulative sum of all the fractions is 1 only up to rounding.
    return F.pad(F.pad(inner, (1, 0), value=-bound), (0, 1), value=bound)


def rational_quadratic_spline(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    bound: float,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The monotone spline ``[-bound, bound] -> [-bound, bound]`` that ``params`` describes,
    identity outside, and the log of its derivative at each element.

    ``params [..., 3K - 1]`` (the trailing dimension; the rest is ``x``'s shape) holds, for each
    element, ``K`` unnormalised bin widths, ``K`` unnormalised bin heights (softmax, with the
    bounds above) and ``K - 1`` unnormalised derivatives at the inner knots (softplus of the
    value plus an offset, + :data:`MIN_DERIVATIVE`); the end knots have derivative 1. All-zero
    parameters give the identity. With ``inverse=True`` it returns the inverse map of ``x`` and
    the log-derivative of that inverse (minus the forward's at the result), from the root of the
    bin's quadratic (Durkan et al., eq. 6-8) in its cancellation-free form.
    """
    if params.shape[:-1] != x.shape:
        raise ValueError(
            f"params {list(params.shape)} must be x's shape {list(x.shape)} plus one dimension"
        )
    bins = (params.shape[-1] + 1) // 3
    if bins < 2 or num_spline_params(bins) != params.shape[-1]:
        raise ValueError(
            f"params' last dimension must be 3K - 1 for K >= 2 bins, got {params.shape[-1]}"
        )
    widths, heights, inner = params.split([bins, bins, bins - 1], dim=-1)
    xs = _knots(widths, bound, MIN_BIN_WIDTH)
    ys = _knots(heights, bound, MIN_BIN_HEIGHT)
    slopes = MIN_DERIVATIVE + F.softplus(F.pad(inner, (1, 1)) + _UNIT_DERIVATIVE)

    inside = (x > -bound) & (x < bound)
    v = x.clamp(-bound, bound).unsqueeze(-1)
    # The bin of each element: the last knot at or below it (x or y knots), never the last one.
    index = torch.searchsorted((ys if inverse else xs)[..., 1:-1].contiguous(), v, right=True)
    x0, x1 = xs.gather(-1, index), xs.gather(-1, index + 1)
    y0, y1 = ys.gather(-1, index), ys.gather(-1, index + 1)
    d0, d1 = slopes.gather(-1, index), slopes.gather(-1, index + 1)
    width, height = x1 - x0, y1 - y0
    s = height / width
    curve = d0 + d1 - 2.0 * s  # the rational quadratic's departure from the bin's chord
    if inverse:
        rel = v - y0
        a = rel * curve + height * (s - d0)
        b = height * d0 - rel * curve
        c = -s * rel
        disc = (b * b - 4.0 * a * c).clamp_min(0.0)
        theta = ((2.0 * c) / (-b - torch.sqrt(disc))).clamp(0.0, 1.0)
        out = x0 + theta * width
    else:
        theta = (v - x0) / width
    mix = theta * (1.0 - theta)
    denom = s + curve * mix
    if not inverse:
        out = y0 + height * (s * theta * theta + d0 * mix) / denom
    slope_num = s * s * (d1 * theta * theta + 2.0 * s * mix + d0 * (1.0 - theta) ** 2)
    log_slope = (torch.log(slope_num) - 2.0 * torch.log(denom)).squeeze(-1)
    out = out.squeeze(-1)
    if inverse:
        log_slope = -log_slope
    return torch.where(inside, out, x), torch.where(inside, log_slope, torch.zeros_like(x))
