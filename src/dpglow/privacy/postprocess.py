"""Denoising after the mechanism: free under DP, as it never looks at the original.

Per element, under the prior u ~ N(0, prior_std^2) (truncated to [-clip, clip] when ``clip`` is
given) and the mechanism's noise density, :func:`posterior_mean` returns E[u | y] and
:func:`posterior_sample` a draw from p(u | y). Both are exact closed forms through the normal CDF:

- Gaussian noise N(0, sigma^2): the posterior is N(y s^2 / (s^2 + sigma^2), s^2 sigma^2 /
  (s^2 + sigma^2)), truncated to [-c, c] where clipped.
- Laplace noise with scale b: splitting at u = y, p(u | y) is a two-component mixture of normals
  N(+s^2 / b, s^2) on (-c, y) and N(-s^2 / b, s^2) on (y, c), with log-weights -y / b and +y / b
  plus the log-masses of the intervals.

Everything is evaluated in log space with log_ndtr and the scaled erfc (erfcx), and each interval
is reflected so that it lies mostly left of zero, where those are accurate; so there is no NaN or
inf for |y| up to 1e6 and scales from 1e-3 to 1e6. Work is in float64, in chunks, so millions of
elements cost seconds and bounded memory. ``scale=0`` (or ``noise="none"``) gives y clipped to
[-c, c]; ``scale=inf`` gives the prior.

The model is exact for ``laplace_elementwise`` (pass its clip). For ``laplace_l1`` and
``gaussian_l2`` it ignores the ball scaling and the dependence between elements (pass
``clip=None``): a good denoiser there, not the exact posterior.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dpglow.privacy.noise import work_dtype
from dpglow.privacy.validation import check_choice, check_positive, check_real

NOISES = ("laplace", "gaussian", "none")
_CHUNK = 1 << 20  # elements per chunk: bounds the float64 temporaries to a few hundred MB
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _log_phi(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x * x - _LOG_SQRT_2PI


def _inverse_mills(x: torch.Tensor) -> torch.Tensor:
    """phi(x) / Phi(x), accurate in the far left tail where both underflow."""
    return _SQRT_2_OVER_PI / torch.special.erfcx(-x / math.sqrt(2.0))


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x <= 0 (Maechler's two branches)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _reflected(
    mu: torch.Tensor, std: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardised interval (lo, hi), reflected where needed so that lo + hi <= 0, and the flag.

    An empty interval (upper < lower) becomes the point lo = hi, whose mass is zero.
    """
    a = (lower - mu) / std
    b = torch.maximum((upper - mu) / std, a)
    flip = (a + b) > 0  # NaN for (-inf, inf): no reflection needed
    return torch.where(flip, -b, a), torch.where(flip, -a, b), flip


def _truncnorm_log_mass_mean(
    mu: torch.Tensor, std: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log P[lower < X < upper] and E[X | lower < X < upper] for X ~ N(mu, std^2)."""
    lo, hi, flip = _reflected(mu, std, lower, upper)
    log_cdf_hi = torch.special.log_ndtr(hi)
    ratio = torch.special.log_ndtr(lo) - log_cdf_hi  # log(Phi(lo) / Phi(hi)) <= 0
    log_mass = log_cdf_hi + _log1mexp(ratio)
    # (phi(lo) - phi(hi)) / (Phi(hi) - Phi(lo)), divided through by Phi(hi).
    mean = (torch.exp(_log_phi(lo) - log_cdf_hi) - _inverse_mills(hi)) / -torch.expm1(ratio)
    mean = torch.where(torch.isfinite(mean), mean, 0.5 * (lo + hi))
    mean = torch.minimum(torch.maximum(mean, lo), hi)
    return log_mass, mu + std * torch.where(flip, -mean, mean)


def _ndtri_log(log_p: torch.Tensor) -> torch.Tensor:
    """Phi^{-1}(exp(log_p)), also where exp(log_p) underflows."""
    x = torch.special.ndtri(torch.exp(log_p))
    tail = log_p < -680.0  # exp(log_p) < ~1e-295: ndtri loses accuracy, then underflows
    if bool(tail.any()):
        t = -2.0 * torch.where(tail, log_p, torch.full_like(log_p, -1000.0))
        z = -torch.sqrt(t - torch.log(t) - 2.0 * _LOG_SQRT_2PI)  # asymptotic start
        for _ in range(4):  # Newton on log Phi(z) = log_p; d/dz log Phi = phi / Phi
            z = z - (torch.special.log_ndtr(z) - log_p) / _inverse_mills(z)
        x = torch.where(tail, z, x)
    return x


def _truncnorm_sample(
    mu: torch.Tensor,
    std: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """X ~ N(mu, std^2) conditioned on (lower, upper), by inversion in log space."""
    lo, hi, flip = _reflected(mu, std, lower, upper)
    uniform = torch.rand(lo.shape, generator=generator, device=lo.device, dtype=lo.dtype)
    uniform = uniform.clamp_min(torch.finfo(lo.dtype).tiny)
    # Phi(lo) (1 - U) + Phi(hi) U: no cancellation, however narrow or far out the interval.
    log_p = torch.logaddexp(
        torch.special.log_ndtr(lo) + torch.log1p(-uniform),
        torch.special.log_ndtr(hi) + torch.log(uniform),
    )
    x = torch.minimum(torch.maximum(_ndtri_log(log_p), lo), hi)
    return mu + std * torch.where(flip, -x, x)


def _laplace_components(
    y: torch.Tensor, b: float, s: float, c: float
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
    """P(first component | y) and (mu, std, lower, upper, log_mass, mean) of both components."""
    shift = torch.full_like(y, s * s / b)
    std = torch.full_like(y, s)
    lower, upper = torch.full_like(y, -c), torch.full_like(y, c)
    left = (shift, std, lower, torch.minimum(y, upper))
    right = (-shift, std, torch.maximum(y, lower), upper)
    mass_left, mean_left = _truncnorm_log_mass_mean(*left)
    mass_right, mean_right = _truncnorm_log_mass_mean(*right)
    p_left = torch.sigmoid((-y / b + mass_left) - (y / b + mass_right))
    return p_left, [(*left, mean_left), (*right, mean_right)]


def _check(
    y: torch.Tensor, noise: str, scale: float, prior_std: float, clip: float | None
) -> tuple[str, float, float, float]:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"y must be a float tensor, got {type(y).__name__}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y has NaN or inf")
    noise = check_choice("noise", noise, NOISES)
    scale = check_real("scale", scale)
    if math.isnan(scale) or scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    prior_std = check_positive("prior_std", prior_std)
    c = math.inf if clip is None else check_positive("clip", clip)
    if noise == "none":
        scale = 0.0
    return noise, scale, prior_std, c


def _chunked(y: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` to flat float64 chunks of ``y``; back in y's shape and dtype."""
    flat = y.reshape(-1).to(work_dtype(y.device))
    out = torch.cat([fn(part) for part in flat.split(_CHUNK)]) if flat.numel() else flat
    return out.reshape(y.shape).to(y.dtype)


def posterior_mean(
    y: torch.Tensor,
    *,
    noise: str,
    scale: float,
    prior_std: float = 1.0,
    clip: float | None = None,
) -> torch.Tensor:
    """E[u | y] per element, for u ~ N(0, prior_std^2) (on [-clip, clip]) and y = u + noise.

    ``noise`` is "laplace" (``scale`` = b) or "gaussian" (``scale`` = sigma), as in a
    :class:`~dpglow.privacy.PrivacyRecord`; "none" returns y clipped.
    """
    noise, scale, s, c = _check(y, noise, scale, prior_std, clip)

    def mean(part: torch.Tensor) -> torch.Tensor:
        if scale == 0.0:
            return part.clamp(-c, c)
        if math.isinf(scale):
            return torch.zeros_like(part)  # the (truncated) prior is symmetric
        if noise == "gaussian":
            shrink = s * s / (s * s + scale * scale)
            if math.isinf(c):
                return part * shrink
            std = torch.full_like(part, s * scale / math.hypot(s, scale))
            bound = torch.full_like(part, c)
            return _truncnorm_log_mass_mean(part * shrink, std, -bound, bound)[1]
        p_left, ((*_, mean_left), (*_, mean_right)) = _laplace_components(part, scale, s, c)
        # An empty component has weight 0 and a placeholder mean; 0 * anything finite is 0.
        return p_left * mean_left + (1.0 - p_left) * mean_right

    return _chunked(y, mean)


def posterior_sample(
    y: torch.Tensor,
    *,
    noise: str,
    scale: float,
    prior_std: float = 1.0,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A draw from p(u | y) per element (same model as :func:`posterior_mean`).

    Post-processing needs no secret randomness: any ``generator`` (on y's device) will do.
    """
    noise, scale, s, c = _check(y, noise, scale, prior_std, clip)

    def sample(part: torch.Tensor) -> torch.Tensor:
        if scale == 0.0:
            return part.clamp(-c, c)
        bound = torch.full_like(part, c)
        if math.isinf(scale) or noise == "gaussian":
            if math.isinf(scale):
                mu, std = torch.zeros_like(part), s
            else:
                mu, std = part * (s * s / (s * s + scale * scale)), s * scale / math.hypot(s, scale)
            if math.isinf(c):
                noise_draw = torch.randn(
                    part.shape, generator=generator, device=part.device, dtype=part.dtype
                )
                return mu + std * noise_draw
            return _truncnorm_sample(mu, torch.full_like(part, std), -bound, bound, generator)
        p_left, (left, right) = _laplace_components(part, scale, s, c)
        pick = torch.rand(part.shape, generator=generator, device=part.device, dtype=part.dtype)
        take_left = pick < p_left
        mu, std, lower, upper = (
            torch.where(take_left, a, b) for a, b in zip(left[:4], right[:4], strict=True)
        )
        return _truncnorm_sample(mu, std, lower, upper, generator)

    return _chunked(y, sample)
