"""Dequantisation of 8-bit images: uniform noise in each bin, or a learned conditional flow
``q(u | x)`` (variational dequantisation, Ho et al. 2019, "Flow++", sec. 3.1).

A flow ``p`` of continuous inputs bounds the probability of a discrete image ``x`` from below:

    log P(x) >= E_{u ~ q(. | x)} [ log p(x + u / 2**n) - log q(u | x) ] - D n log 2

for any density ``q`` of the offsets ``u`` on the bins ``[0, 1)^D`` (Jensen). Uniform noise is
``q = 1`` (the term ``log q`` vanishes); a learned ``q`` that puts the offsets where ``p`` is
high tightens the bound, and the flow no longer spends bits modelling white noise inside every
bin. Training maximises the bound for ``p`` and ``q`` together; bits/dim are the bound's.
The flow itself is unchanged: encoding and decoding use the bin centres, with no dequantiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dpglow.flow.coupling import ZeroConv2d
from dpglow.flow.level import squeeze, unsqueeze
from dpglow.flow.quantize import to_flow_input


class ConditionalCoupling(nn.Module):
    """Affine coupling of one half of the channels given the other half and a context.

    ``y_t = x_t * exp(s) + t`` with ``(s, t) = net([x_c, context])`` and ``s = 2 tanh(raw / 2)``
    (so ``|s| < 2``); ``x_c`` is the first half and ``x_t`` the second, swapped with ``swap``.
    The last layer starts at zero: the coupling starts as the identity.
    """

    def __init__(
        self, num_channels: int, context_channels: int, hidden_channels: int, *, swap: bool
    ) -> None:
        super().__init__()
        if num_channels % 2:
            raise ValueError(f"coupling needs an even number of channels, got {num_channels}")
        half = num_channels // 2
        self.swap = swap
        self.net = nn.Sequential(
            nn.Conv2d(half + context_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(),
            ZeroConv2d(hidden_channels, num_channels),
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log |det dy/dx|)``, the log-determinant per sample ``[B]``."""
        x_c, x_t = x.chunk(2, dim=1)
        if self.swap:
            x_c, x_t = x_t, x_c
        raw, shift = self.net(torch.cat([x_c, context], dim=1)).chunk(2, dim=1)
        log_s = 2.0 * torch.tanh(raw / 2.0)
        y_t = x_t * torch.exp(log_s) + shift
        y = torch.cat([y_t, x_c] if self.swap else [x_c, y_t], dim=1)
        return y, log_s.flatten(1).sum(1)


class VariationalDequantizer(nn.Module):
    """``q(u | x)``: standard logistic noise through ``depth`` conditional affine couplings and
    a sigmoid, giving each pixel an offset ``u`` in ``(0, 1)`` within its bin.

    Works on the 2x2-squeezed image (``4 * in_channels`` channels at half resolution); the
    couplings alternate which half they transform; a small convolutional network of the
    (squeezed) bin centres ``x`` gives every coupling its ``context_channels`` context.
    ``forward(x, noise) -> (u, log q(u | x))`` with ``x`` the bin centres in the flow's range
    and ``noise`` standard logistic (:func:`logistic_noise`) of the same shape ``[B, C, H, W]``
    (``H``, ``W`` even). The sigmoid of logistic noise is uniform, and the couplings start as the
    identity: an untrained dequantiser *is* uniform dequantisation (``u`` the uniform draw the
    noise came from, ``log q = 0``), and training can only move it where the bound is tighter.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        depth: int = 4,
        hidden_channels: int = 64,
        context_channels: int = 16,
    ) -> None:
        super().__init__()
        if min(in_channels, depth, hidden_channels, context_channels) < 1:
            raise ValueError(
                "in_channels, depth, hidden_channels and context_channels must be positive, got "
                f"{in_channels}, {depth}, {hidden_channels}, {context_channels}"
            )
        self.config = dict(
            in_channels=in_channels,
            depth=depth,
            hidden_channels=hidden_channels,
            context_channels=context_channels,
        )
        channels = 4 * in_channels
        self.context = nn.Sequential(
            nn.Conv2d(channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, context_channels, 3, padding=1),
        )
        self.steps = nn.ModuleList(
            ConditionalCoupling(channels, context_channels, hidden_channels, swap=i % 2 == 1)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape != noise.shape or x.dim() != 4:
            raise ValueError(
                f"x and noise must have one shape [B, C, H, W], got {list(x.shape)} and "
                f"{list(noise.shape)}"
            )
        context = self.context(squeeze(x))
        e = squeeze(noise)
        log_q = _log_sigmoid_slope(e)  # the standard logistic log-density
        for step in self.steps:
            e, logdet = step(e, context)
            log_q = log_q - logdet
        log_q = log_q - _log_sigmoid_slope(e)  # u = sigmoid(e)
        return unsqueeze(torch.sigmoid(e)), log_q


def _log_sigmoid_slope(e: torch.Tensor) -> torch.Tensor:
    """``sum log sigmoid'(e) = sum [log sigmoid(e) + log sigmoid(-e)]`` per sample: the
    log-derivative of the sigmoid, which is also the standard logistic log-density."""
    return (F.logsigmoid(e) + F.logsigmoid(-e)).flatten(1).sum(1)


# Uniform draws are kept this far from 0 and 1, so their logits stay finite (|e| < 16.2).
_EDGE = 1e-7


def logistic_noise(
    shape: torch.Size | tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard logistic noise ``logit(v)``, ``v`` uniform on ``[1e-7, 1 - 1e-7]`` (the clamp
    moves a probability of 2e-7 per element to the edges, where it changes no offset by more than
    1e-7 of a bin)."""
    v = torch.rand(shape, generator=generator, device=device).clamp_(_EDGE, 1.0 - _EDGE)
    return torch.logit(v)


def dequantize(
    images: torch.Tensor,
    *,
    n_bits: int = 8,
    generator: torch.Generator | None = None,
    dequantizer: VariationalDequantizer | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> ``(x, log q)``: continuous flow inputs in ``[-0.5, 0.5]`` and the
    log-density ``[B]`` of their offsets within the bins (on the unit bin scale).

    Without ``dequantizer`` the offsets are uniform (``log q = 0``, exactly
    :func:`~dpglow.flow.to_flow_input` with ``dequantize=True``); with one they are drawn from
    ``q(u | x)`` with logistic noise from ``generator`` (an untrained dequantiser gives the same
    offsets as uniform noise from the same generator, up to the clamp of :func:`logistic_noise`).
    ``log p(x) - log q`` is then the continuous log-density that
    :func:`~dpglow.flow.bits_per_dim` turns into the bound's bits.
    """
    if dequantizer is None:
        x = to_flow_input(images, n_bits=n_bits, dequantize=True, generator=generator)
        return x, x.new_zeros(x.shape[0])
    centres = to_flow_input(images, n_bits=n_bits)
    noise = logistic_noise(images.shape, generator=generator, device=images.device)
    u, log_q = dequantizer(centres, noise)
    return centres + (u - 0.5) / 2**n_bits, log_q
