"""Exact noise on the integers, and ``discrete_laplace_l1``: the L1-ball mechanism of
:class:`~dpglow.privacy.LaplaceL1` on a grid (docs/method.md, "Exact sampling").

:func:`discrete_laplace` and :func:`discrete_gaussian` sample exactly from integer uniforms
(Canonne, Kamath & Steinke 2020, Algorithms 2 and 3, on the Bernoulli(exp(-gamma)) and geometric
samplers of :mod:`dpglow.privacy.exact`), vectorised over the draws still unfinished.

:class:`DiscreteLaplaceL1`: u is scaled into the L1 ball of radius R
(:func:`~dpglow.privacy.scale_into_ball`), each coordinate is snapped TOWARD ZERO to the grid g
(so the L1 norm can only shrink), giving integers q with ||q||_1 <= N = floor(R / g), enforced in
integer arithmetic. Two images give ||q - q'||_1 <= 2N: the sensitivity is 2N grid steps. Discrete
Laplace noise of scale t >= 2N / epsilon grid steps (P(z) proportional to exp(-|z| / t)) is added
to every integer, exactly, and the release is g (q + z) in float64, cast to the input's dtype. The
noise never meets floating point: the only floating point is the deterministic snapping of the
input (a function of the image, not of the noise) and the post-processing of the noisy integers,
so Mironov's attack on the floating-point Laplace (see :mod:`dpglow.privacy.noise`) has nothing
to act on.

Grid and scale. By default g is the power of two with R / 2^21 < g <= R / 2^20
(``GRID_BITS`` = 20), so N = floor(R / g) lies in [2^20, 2^21): snapping moves a coordinate by
less than g ~ 1e-6 R, against a noise scale of 2R / epsilon, a 2^-21 epsilon fraction of it,
invisible at any epsilon that privatises anything; and g (q + z) is exact in float64 (|q + z| <
2^53). t is 2N / epsilon rounded UP to a dyadic rational a / 2^j with a < 2^28 where possible
(j = 0 and a = ceil(2N / epsilon) <= 2^48 otherwise), computed exactly with
:class:`~fractions.Fraction`: the epsilon actually sampled, 2N / t, is at most the claim and below
it by a relative 2^-27 at most. A ``grid`` given explicitly must leave 1 <= N <= 2^30.

Post-processing. The likelihood of a release y given a bounded (snapped) point a is proportional
to exp(-|y - a| / (t g)) on the grid, the continuous Laplace formula with the record's
``noise_scale`` = t g, so a post-processor that weighs candidates by the Laplace likelihood (as
:meth:`dpglow.privatizers.subspace.SubspacePrivatizer._log_weights` does for "laplace") applies
as it is, with :meth:`DiscreteLaplaceL1.statistic` as the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

from dpglow.privacy.accounting import PrivacyRecord
from dpglow.privacy.base import Mechanism
from dpglow.privacy.exact import (
    MAX_SCALE_PART,
    ONE,
    bernoulli_exp_ratio,
    bernoulli_exp_unit,
    check_rational,
    geometric_exp_minus_one,
    shape_numel,
    uniform_bits,
    uniform_mod,
)
from dpglow.privacy.latent import scale_into_ball
from dpglow.privacy.noise import resolve_generator, work_dtype
from dpglow.privacy.validation import check_epsilon, check_positive

# The default grid: R / 2^21 < g <= R / 2^20, a power of two.
GRID_BITS = 20
# At most this many grid steps in the radius, so that the integer clean-up below fits int64.
MAX_STEPS = 1 << 30
# Bits of the scale's numerator where the scale allows it (below 2^29 one draw decides two
# levels of Algorithm 1, which makes the sampler fastest).
SCALE_BITS = 28


# --- exact samplers on the integers (CKS 2020, Algorithms 2 and 3) --------------------------------


def discrete_laplace(
    shape: tuple[int, ...],
    *,
    scale: int | Fraction,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """int64 draws with P(z) = exp(-|z| / scale) (1 - e^(-1/scale)) / (1 + e^(-1/scale)) on the
    integers, exactly (CKS Algorithm 2; OpenDP's ``make_laplace`` on integers has the same
    ``scale``).

    With scale = t / s in lowest terms: U uniform on {0, ..., t - 1} kept with probability
    exp(-U / t), V with P(V >= v) = e^-v, X = U + t V (so P(X = x) is proportional to
    exp(-x / t)), Y = floor(X / s), a fair sign, and (-, 0) rejected so that 0 is not counted
    twice. ``scale`` is an int or a Fraction with numerator and denominator at most 2^48 (a float
    is refused: pass ``Fraction(x)`` to mean its exact binary value). Cost: a few integer uniforms
    per draw whatever the scale.
    """
    value = check_rational("scale", scale)
    count = shape_numel(shape)
    t, s = value.numerator, value.denominator
    limit = ONE // t - 1  # t (V + 1) <= 2^62, so U + t V stays below 2^62
    out = torch.empty(count, dtype=torch.int64, device=device)
    pos = torch.arange(count, device=device)
    while pos.numel():
        if t > 1:
            u = uniform_mod(t, pos.numel(), generator=generator, device=device)
            accept = bernoulli_exp_unit(u, t, pos.numel(), generator=generator, device=device)
            retry, kept = (~accept).nonzero()[:, 0], accept.nonzero()[:, 0]
            retry, pos, u = pos[retry], pos[kept], u[kept]
        else:  # U = 0, always kept
            retry, u = pos[:0], 0
        v = geometric_exp_minus_one(pos.numel(), limit=limit, generator=generator, device=device)
        y = u + t * v if s == 1 else (u + t * v) // s
        negative = uniform_bits((pos.numel(),), bits=1, generator=generator, device=device) == 1
        twice = negative & (y == 0)
        out[pos] = torch.where(negative, -y, y)  # the (-, 0) entries are overwritten later
        pos = torch.cat((retry, pos[twice.nonzero()[:, 0]]))
    return out.view(shape)


def discrete_gaussian(
    shape: tuple[int, ...],
    *,
    variance: int | Fraction,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """int64 draws with P(z) proportional to exp(-z^2 / (2 sigma^2)) on the integers, exactly (CKS
    Algorithm 3; OpenDP's ``make_gaussian`` on integers with ``scale`` = sigma).

    With sigma^2 = a / b and t = floor(sigma) + 1: Y from the discrete Laplace of scale t, kept
    with probability exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)), i.e.
    exp(-(|Y| b t - a)^2 / (2 a b t^2)). The int64 arithmetic needs 2 a b t^2 <= 2^48 and
    (64 b t^2 + a)^2 <= 2^62 (|Y| up to 64 t; a larger |Y| has probability below e^-60 and raises
    OverflowError); other variances are refused.
    """
    value = check_rational("variance", variance)
    count = shape_numel(shape)
    a, b = value.numerator, value.denominator
    t = math.isqrt(a // b) + 1  # floor(sqrt(a / b)) = isqrt(floor(a / b))
    denominator = 2 * a * b * t * t
    if denominator > MAX_SCALE_PART or (64 * b * t * t + a) ** 2 > ONE:
        raise ValueError(
            f"variance={value} is too large, or its terms are, for the int64 arithmetic (need "
            "2 a b t^2 <= 2^48 and (64 b t^2 + a)^2 <= 2^62 for sigma^2 = a / b, "
            "t = floor(sigma) + 1)"
        )
    out = torch.empty(count, dtype=torch.int64, device=device)
    pos = torch.arange(count, device=device)
    while pos.numel():
        y = discrete_laplace((pos.numel(),), scale=t, generator=generator, device=device)
        if pos.numel() and int(y.abs().max()) > 64 * t:
            raise OverflowError("exact discrete Gaussian: |Y| ran past the int64 headroom")
        keep = bernoulli_exp_ratio((y.abs() * (b * t) - a) ** 2, denominator, generator=generator)
        out[pos[keep]] = y[keep]
        pos = pos[~keep]
    return out.view(shape)


# --- the grid mechanism -------------------------------------------------------------------------


@dataclass(frozen=True)
class GridCalibration:
    """What :class:`DiscreteLaplaceL1` samples for one dimension d.

    ``radius`` R, ``grid`` g, ``steps`` N = floor(R / g) (so ||q||_1 <= N for the snapped
    integers), ``scale`` t in grid steps (exact, >= 2N / epsilon).
    """

    radius: float
    grid: float
    steps: int
    scale: Fraction

    @property
    def sensitivity(self) -> float:
        """2 N g <= 2R, the L1 sensitivity in latent units."""
        return 2 * self.steps * self.grid

    @property
    def epsilon(self) -> Fraction:
        """2N / t, the epsilon actually sampled (at most the claim)."""
        return 2 * self.steps / self.scale

    @property
    def noise_scale(self) -> float:
        """t g, the Laplace scale in latent units."""
        return float(self.scale * Fraction(self.grid))


def default_grid(radius: float) -> float:
    """The power of two g with radius / 2^(GRID_BITS + 1) < g <= radius / 2^GRID_BITS."""
    _, exponent = math.frexp(radius)  # radius = f 2^exponent, f in [0.5, 1)
    return math.ldexp(1.0, exponent - 1 - GRID_BITS)


def noise_scale_in_steps(steps: int, epsilon: float) -> Fraction:
    """2 steps / epsilon rounded UP to a / 2^j: the smallest such with j >= 0 and
    a < 2^SCALE_BITS, or j = 0 where 2 steps / epsilon >= 2^SCALE_BITS (see the module note)."""
    target = Fraction(2 * steps) / Fraction(epsilon)
    # e = floor(log2(target)), exactly
    e = target.numerator.bit_length() - target.denominator.bit_length()
    if Fraction(2) ** e > target:
        e -= 1
    j = max(0, SCALE_BITS - 1 - e)
    scale = Fraction(math.ceil(target * (1 << j)), 1 << j)
    if scale.numerator > MAX_SCALE_PART or scale.denominator > MAX_SCALE_PART:
        raise ValueError(
            f"epsilon={epsilon} needs a noise scale of {float(target):.4g} grid steps, beyond the "
            "exact sampler's int64 range (2^-21 to 2^48 steps): choose a moderate epsilon or "
            "another grid"
        )
    return scale


class DiscreteLaplaceL1(Mechanism):
    """``discrete_laplace_l1``: u * min(1, R / ||u||_1) snapped toward zero to the grid g, plus
    exact discrete Laplace noise of scale t >= 2N / epsilon grid steps (see the module note).

    epsilon-LDP per image (L1 sensitivity 2N grid steps <= 2R), exactly: the noise is added to
    integers and sampled from integer uniforms, and the epsilon sampled, 2N / t, is at most the
    claim. Same calling convention and record as :class:`~dpglow.privacy.LaplaceL1`, with
    ``noise`` "discrete_laplace", ``noise_scale`` t g (the Laplace scale in latent units),
    ``sensitivity`` 2Ng and ``grid`` g. ``radius=None`` takes R = d sqrt(2 / pi) as LaplaceL1
    does; ``grid=None`` the largest power of two <= R / 2^20 (:func:`default_grid`).
    """

    name = "discrete_laplace_l1"
    space = "latent"
    noise = "discrete_laplace"
    norm = "l1"
    sample_ndim = 1
    ord = 1

    def __init__(
        self, *, epsilon: float, radius: float | None = None, grid: float | None = None
    ) -> None:
        self.epsilon = check_epsilon(epsilon)
        self.radius = None if radius is None else check_positive("radius", radius)
        self.grid = None if grid is None else check_positive("grid", grid)
        if self.radius is not None:  # refuse a grid or an epsilon that cannot work, now
            self._lattice(1)
            if not math.isinf(self.epsilon):
                self.calibration(1)

    def default_radius(self, d: int) -> float:
        return d * math.sqrt(2.0 / math.pi)

    def resolve_radius(self, d: int) -> float:
        """The configured radius, or the default for dimension ``d``."""
        return self.radius if self.radius is not None else self.default_radius(d)

    def calibration(self, d: int) -> GridCalibration:
        """Radius, grid, steps and scale for inputs of dimension ``d`` (finite epsilon only)."""
        radius, grid, steps = self._lattice(d)
        return GridCalibration(radius, grid, steps, noise_scale_in_steps(steps, self.epsilon))

    def grid_steps(self, x: torch.Tensor) -> torch.Tensor:
        """q, the int64 grid coordinates of the bounded statistic: ||q_row||_1 <= N, exactly."""
        radius, grid, limit = self._lattice(x.shape[1])
        bounded = scale_into_ball(x.to(work_dtype(x.device)), radius, ord=1)
        steps = torch.trunc(bounded / grid).to(torch.int64)  # toward zero
        # The ball's and the division's rounding can leave a row a step or so over N: scale its
        # magnitudes down in integers (floor(|q_i| N / total) sums to <= N; |q_i| N < 2^62).
        total = steps.abs().sum(dim=1, keepdim=True)
        over = total > limit
        if bool(over.any()):
            shrunk = steps.abs() * limit // total.clamp(min=1)
            steps = torch.where(over, steps.sign() * shrunk, steps)
        return steps

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        """g q: the bounded, snapped quantity the noise is added to, in latent units."""
        grid = self._lattice(x.shape[1])[1]
        return self.grid_steps(x).to(work_dtype(x.device)) * grid

    def _lattice(self, d: int) -> tuple[float, float, int]:
        """(R, g, N = floor(R / g)) for dimension ``d``, with 1 <= N <= 2^30 checked."""
        radius = self.resolve_radius(d)
        grid = self.grid if self.grid is not None else default_grid(radius)
        steps = math.floor(Fraction(radius) / Fraction(grid))
        if steps < 1:
            raise ValueError(f"grid={grid} is coarser than the radius {radius}: choose grid <= R")
        if steps > MAX_STEPS:
            raise ValueError(
                f"grid={grid} puts {steps} steps in the radius {radius}, more than 2^30: choose "
                f"grid >= R / 2^30 (or leave grid=None for about R / 2^{GRID_BITS})"
            )
        return radius, grid, steps

    def __call__(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        noise_source: str | None = None,
    ) -> tuple[torch.Tensor, PrivacyRecord]:
        self._check_input(x)
        generator, source = resolve_generator(generator, noise_source, x.device)
        record = self.record(tuple(x.shape[1:]), noise_source=source)
        if record.noise == "none":
            return x.clone(), record
        calibration = self.calibration(x.shape[1])
        steps = self.grid_steps(x)
        scale = calibration.scale
        noise = discrete_laplace(
            tuple(steps.shape), scale=scale, generator=generator, device=x.device
        )
        noisy = (steps + noise).to(work_dtype(x.device)) * calibration.grid
        return noisy.to(x.dtype), record

    def _calibration(self, shape: tuple[int, ...], d: int) -> dict[str, Any]:
        calibration = self.calibration(d)
        return {
            "clip": calibration.radius,
            "sensitivity": calibration.sensitivity,
            "epsilon_per_element": self.epsilon,
            "epsilon_per_image": self.epsilon,
            "noise_scale": calibration.noise_scale,
            "grid": calibration.grid,
        }

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "radius": self.radius, "grid": self.grid}
