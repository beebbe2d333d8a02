"""One level of Glow (squeeze, K flow steps, split) and the pieces it is made of."""

from __future__ import annotations

import math

import torch
from torch import nn

from dpglow.flow.actnorm import ActNorm
from dpglow.flow.conditioning import LabelPrior
from dpglow.flow.coupling import AffineCoupling, ZeroConv2d
from dpglow.flow.invconv import InvConv2dLU

_LOG_2PI = math.log(2.0 * math.pi)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """2x2 space-to-depth: ``[B, C, H, W] -> [B, 4C, H/2, W/2]``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


def standard_normal_logpdf(u: torch.Tensor) -> torch.Tensor:
    """Sum of N(0, 1) log-densities over all but the batch dimension."""
    return (-0.5 * (u * u + _LOG_2PI)).flatten(1).sum(1)


class FlowStep(nn.Module):
    """ActNorm -> invertible 1x1 convolution -> coupling."""

    def __init__(
        self,
        num_channels: int,
        hidden_channels: int,
        *,
        affine: bool,
        scale_floor: float,
        spline_bins: int = 0,
    ) -> None:
        super().__init__()
        self.actnorm = ActNorm(num_channels)
        self.invconv = InvConv2dLU(num_channels)
        self.coupling = AffineCoupling(
            num_channels,
            hidden_channels,
            affine=affine,
            scale_floor=scale_floor,
            spline_bins=spline_bins,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.actnorm(x)
        x, ld = self.invconv(x)
        logdet = logdet + ld
        x, ld = self.coupling(x)
        return x, logdet + ld

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(y)))


class Level(nn.Module):
    """One scale of the flow.

    ``forward(x) -> (h, u, logdet)``: ``h`` goes on to the next level (``None`` at the last level),
    ``u`` is this level's *standardised* latent, whose prior is N(0, 1) elementwise. With the fixed
    prior ``u`` is the split-off half itself; with a learned conditional prior
    ``N(mu(h), sigma(h))``, ``u = (z - mu) / sigma`` and ``-sum(log sigma)`` enters the logdet.

    A ``label_prior`` (:class:`~dpglow.flow.conditioning.LabelPrior`) makes the prior depend on a
    label vector ``y`` too: its ``(mu(y), log sigma(y))`` is added to the learned prior's
    ``(mu(h), log sigma(h))``, or is the whole prior where the prior is otherwise fixed, so the
    prior is ``N(mu(h) + mu(y), sigma(h) * sigma(y))``.
    """

    def __init__(
        self,
        in_channels: int,
        depth: int,
        hidden_channels: int,
        *,
        split: bool,
        prior: str,
        affine: bool,
        scale_floor: float,
        spline_bins: int = 0,
        label_prior: LabelPrior | None = None,
    ) -> None:
        super().__init__()
        channels = in_channels * 4
        self.split = split
        self.steps = nn.ModuleList(
            FlowStep(
                channels,
                hidden_channels,
                affine=affine,
                scale_floor=scale_floor,
                spline_bins=spline_bins,
            )
            for _ in range(depth)
        )
        self.out_channels = channels // 2 if split else channels
        # A learned prior at the last level sees zeros: it learns a constant mean and scale.
        self.prior = (
            ZeroConv2d(self.out_channels if split else channels, 2 * self.out_channels)
            if prior == "learned"
            else None
        )
        self.label_prior = label_prior

    @property
    def standard_prior(self) -> bool:
        """True where the prior is N(0, 1) (fixed and not label-conditioned): ``u = z``."""
        return self.prior is None and self.label_prior is None

    def _prior(
        self, h: torch.Tensor | None, like: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = log_sd = None
        if self.prior is not None:
            params = self.prior(h if h is not None else torch.zeros_like(like))
            mean, log_sd = params.to(like.dtype).chunk(2, dim=1)  # float32 under autocast
        if self.label_prior is not None:
            mean_y, log_sd_y = self.label_prior(y)
            mean_y, log_sd_y = mean_y.to(like.dtype), log_sd_y.to(like.dtype)
            mean = mean_y if mean is None else mean + mean_y
            log_sd = log_sd_y if log_sd is None else log_sd + log_sd_y
        return mean, log_sd

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        x = squeeze(x)
        logdet = x.new_zeros(x.shape[0])
        for step in self.steps:
            x, ld = step(x)
            logdet = logdet + ld
        h, z = x.chunk(2, dim=1) if self.split else (None, x)
        if self.standard_prior:
            return h, z, logdet
        mean, log_sd = self._prior(h, z, y)
        u = (z - mean) * torch.exp(-log_sd)
        return h, u, logdet - log_sd.flatten(1).sum(1)

    def reverse(
        self,
        h: torch.Tensor | None,
        u: torch.Tensor,
        bound: float | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.standard_prior:
            z = u
        else:
            mean, log_sd = self._prior(h, u, y)
            z = u * torch.exp(log_sd) + mean
        x = torch.cat([h, z], dim=1) if self.split else z
        for step in reversed(self.steps):
            x = step.reverse(x)
            if bound is not None:
                x = bounded(x, bound)
        return unsqueeze(x)


def bounded(x: torch.Tensor, bound: float) -> torch.Tensor:
    # Off-distribution latents (e.g. with privacy noise) can grow through the inverse until they
    # overflow; in-distribution activations are O(10), so a bound of 1e4 never touches them.
    return torch.nan_to_num(x, nan=0.0, posinf=bound, neginf=-bound).clamp_(-bound, bound)
