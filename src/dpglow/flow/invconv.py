"""Invertible 1x1 convolution with an LU-decomposed weight (Kingma & Dhariwal 2018, sec. 3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InvConv2dLU(nn.Module):
    """``y = W x`` per pixel with ``W = P L (U + diag(sign(s) exp(log_s)))``.

    The log-determinant is ``H * W * sum(log_s)``: O(C) instead of an O(C^3) determinant.
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

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def inverse_weight(self) -> torch.Tensor:
        # The inverse is taken in float64: the error of a float32 inverse compounds over the
        # K * L steps of the flow.
        return torch.linalg.inv(self.weight().double()).to(self.log_s.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[1]
        y = F.conv2d(x, self.weight().view(c, c, 1, 1))
        logdet = x.shape[2] * x.shape[3] * self.log_s.sum()
        return y, logdet.expand(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        c = y.shape[1]
        return F.conv2d(y, self.inverse_weight().view(c, c, 1, 1))
