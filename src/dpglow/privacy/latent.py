"""The three latent mechanisms of docs/method.md, acting on u in R^d (one row per image)."""

from __future__ import annotations

import math
from typing import Any

import torch

from dpglow.privacy.base import Mechanism
from dpglow.privacy.gaussian import analytic_gaussian_sigma
from dpglow.privacy.validation import (
    check_choice,
    check_delta,
    check_epsilon,
    check_positive,
)

ACCOUNTING = ("per_image", "per_element")


def scale_into_ball(u: torch.Tensor, radius: float, *, ord: int) -> torch.Tensor:
    """``u * min(1, radius / ||u||_ord)`` per row, for ``ord`` 1 or 2, safe for any finite ``u``.

    Rows are divided by their largest magnitude before the norm, so that huge entries cannot
    overflow it, and the radius is shrunk by a few ulps, so that rounding in the norm cannot
    leave a scaled row outside the ball (the sensitivity bound must hold in floating point).
    Rows inside the ball come back bit-for-bit unchanged.
    """
    largest = u.abs().amax(dim=1, keepdim=True)
    unit = u / torch.where(largest > 0, largest, torch.ones_like(largest))
    norm = torch.linalg.vector_norm(unit, ord=ord, dim=1, keepdim=True)
    safe_radius = radius * (1.0 - 64.0 * torch.finfo(u.dtype).eps)
    inside = largest * norm <= safe_radius
    scaled = unit * (safe_radius / torch.where(norm > 0, norm, torch.ones_like(norm)))
    return torch.where(inside, u, scaled)


class LaplaceElementwise(Mechanism):
    """``laplace_elementwise``: clip each u_i to [-c, c], add Laplace(0, 2c / epsilon_element).

    ``accounting="per_image"`` (default): ``epsilon`` is the guarantee for the whole vector and
    each element gets epsilon / d (basic composition). ``accounting="per_element"``: ``epsilon``
    is the guarantee per element (the paper's reading) and the image gets d * epsilon. Both
    figures are always in the record.
    """

    name = "laplace_elementwise"
    space = "latent"
    noise = "laplace"
    norm = "linf"
    sample_ndim = 1

    def __init__(self, *, epsilon: float, clip: float = 3.0, accounting: str = "per_image") -> None:
        self.epsilon = check_epsilon(epsilon)
        self.clip = check_positive("clip", clip)
        self.accounting = check_choice("accounting", accounting, ACCOUNTING)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-self.clip, self.clip)

    def _calibration(self, shape: tuple[int, ...], d: int) -> dict[str, Any]:
        if self.accounting == "per_image":
            per_element, per_image = self.epsilon / d, self.epsilon
        else:
            per_element, per_image = self.epsilon, self.epsilon * d
        return {
            "clip": self.clip,
            "sensitivity": 2.0 * self.clip,  # per element, |u_i - u'_i| <= 2c
            "epsilon_per_element": per_element,
            "epsilon_per_image": per_image,
            "noise_scale": 2.0 * self.clip / per_element,
        }

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "clip": self.clip, "accounting": self.accounting}


class _BallMechanism(Mechanism):
    """Scale u into a norm ball of radius R (sensitivity 2R in that norm), then add noise."""

    ord: int
    radius: float | None

    def default_radius(self, d: int) -> float:
        raise NotImplementedError

    def resolve_radius(self, d: int) -> float:
        """The configured radius, or the default for dimension ``d``."""
        return self.radius if self.radius is not None else self.default_radius(d)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        return scale_into_ball(x, self.resolve_radius(x.shape[1]), ord=self.ord)

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "radius": self.radius}


class LaplaceL1(_BallMechanism):
    """``laplace_l1``: u * min(1, R / ||u||_1) plus Laplace(0, 2R / epsilon) on every element.

    epsilon-LDP per image (L1 sensitivity 2R); a single element on its own is also epsilon-DP (it
    can move by the whole 2R). ``radius=None`` takes R = d sqrt(2 / pi) = E||u||_1 for
    u ~ N(0, I_d): a typical latent is barely shrunk, and the norm of one is ~0.6 sqrt(d) away
    from it, so any much smaller R distorts most images and any much larger one adds noise for
    nothing.
    """

    name = "laplace_l1"
    space = "latent"
    noise = "laplace"
    norm = "l1"
    sample_ndim = 1
    ord = 1

    def __init__(self, *, epsilon: float, radius: float | None = None) -> None:
        self.epsilon = check_epsilon(epsilon)
        self.radius = None if radius is None else check_positive("radius", radius)

    def default_radius(self, d: int) -> float:
        return d * math.sqrt(2.0 / math.pi)

    def _calibration(self, shape: tuple[int, ...], d: int) -> dict[str, Any]:
        radius = self.resolve_radius(d)
        return {
            "clip": radius,
            "sensitivity": 2.0 * radius,
            "epsilon_per_element": self.epsilon,
            "epsilon_per_image": self.epsilon,
            "noise_scale": 2.0 * radius / self.epsilon,
        }


class GaussianL2(_BallMechanism):
    """``gaussian_l2``: u * min(1, R / ||u||_2) plus N(0, sigma^2), (epsilon, delta)-LDP per image.

    sigma is the analytic Gaussian calibration (Balle & Wang 2018) for L2 sensitivity 2R.
    ``radius=None`` takes R = sqrt(d) ~ E||u||_2 for u ~ N(0, I_d) (the norm concentrates within
    ~0.7 of it, so typical latents are barely shrunk). ``delta`` is required.
    """

    name = "gaussian_l2"
    space = "latent"
    noise = "gaussian"
    norm = "l2"
    sample_ndim = 1
    ord = 2

    def __init__(
        self, *, epsilon: float, delta: float | None = None, radius: float | None = None
    ) -> None:
        self.epsilon = check_epsilon(epsilon)
        if delta is None:
            raise ValueError("GaussianL2 needs delta (e.g. delta=1e-6, well below 1 / #images)")
        self.delta = check_delta(delta)
        if self.delta == 0.0:
            raise ValueError("GaussianL2 needs delta > 0; use LaplaceL1 for pure epsilon-DP")
        self.radius = None if radius is None else check_positive("radius", radius)

    def default_radius(self, d: int) -> float:
        return math.sqrt(d)

    def _calibration(self, shape: tuple[int, ...], d: int) -> dict[str, Any]:
        radius = self.resolve_radius(d)
        sigma = analytic_gaussian_sigma(
            epsilon=self.epsilon, delta=self.delta, sensitivity=2.0 * radius
        )
        return {
            "clip": radius,
            "sensitivity": 2.0 * radius,
            "epsilon_per_element": self.epsilon,
            "epsilon_per_image": self.epsilon,
            "noise_scale": sigma,
        }

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "delta": self.delta, "radius": self.radius}
