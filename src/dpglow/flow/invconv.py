"""Invertible 1x1 convolution with an LU-decomposed weight (Kingma & Dhariwal 2018, sec. 3.2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _same_values(saved: tuple[torch.Tensor, ...], current: tuple[torch.Tensor, ...]) -> bool:
    return all(
        a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
        for a, b in zip(saved, current, strict=True)
    )


class InvConv2dLU(nn.Module):
    """``y = W x`` per pixel with ``W = P L (U + diag(sign(s) exp(log_s)))``.

    The log-determinant is ``H * W * sum(log_s)``: O(C) instead of an O(C^3) determinant.
    The convolution always runs in float32, also under mixed-precision autocast: an error in the
    1x1 convolution is not undone by the inverse and compounds over the K * L steps.

    Without autograd (evaluation, encoding, decoding) the weight and its float64-computed inverse
    are built once and reused while the parameters and buffers hold exactly the values they were
    built from (compared element by element: C x C numbers, nothing beside the pixels' matrix
    product). Version counters are not enough: fused Adam updates parameters in place without
    bumping them, and a stale weight beside the current log-determinant is not a density.
    ``.to(...)`` empties the cache.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(num_channels, num_channels, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", torch.sign(diag).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones_like(q), -1).float())
        self.register_buffer("eye", torch.eye(num_channels))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(torch.abs(diag)).float())
        self._cache: dict[str, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}

    def _weight(self) -> torch.Tensor:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def _inverse_weight(self) -> torch.Tensor:
        # The inverse is taken in float64: the error of a float32 inverse compounds over the
        # K * L steps of the flow.
        return torch.linalg.inv(self._weight().double()).to(self.log_s.dtype)

    def _cached(self, name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        tensors = (self.lower, self.upper, self.log_s, self.perm, self.sign_s)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return compute()  # training: the weight is part of the graph, built once per call
        hit = self._cache.get(name)
        if hit is None or not _same_values(hit[0], tensors):
            with torch.no_grad():
                hit = (tuple(t.detach().clone() for t in tensors), compute())
            self._cache[name] = hit
        return hit[1]

    def weight(self) -> torch.Tensor:
        """The ``[C, C]`` weight ``W``."""
        return self._cached("weight", self._weight)

    def inverse_weight(self) -> torch.Tensor:
        """``W^-1``, computed in float64 and returned in the parameters' dtype."""
        return self._cached("inverse", self._inverse_weight)

    def _mix(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # A 1x1 convolution as one batched matrix product over the pixels: the same map, and at
        # these channel counts (4-32 measured) 2-15x faster forward + backward on CPU than the
        # convolution kernels, whose backward costs milliseconds even for 4 channels.
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._mix(x.to(weight.dtype), weight)
        return torch.matmul(weight, x.flatten(2)).view(x.shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self._mix(x, self.weight())
        logdet = x.shape[2] * x.shape[3] * self.log_s.sum()
        return y, logdet.expand(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._mix(y, self.inverse_weight())

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), .cuda(): drop the cache
        self._cache = {}
        return super()._apply(fn, *args, **kwargs)
