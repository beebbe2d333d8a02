"""Activation normalisation with a data-dependent initialisation stored in buffers."""

from __future__ import annotations

import torch
from torch import nn


class ActNorm(nn.Module):
    """Per-channel affine map ``y = (x + loc) * exp(log_scale)``.

    ``loc`` and ``log_scale`` are set once from data (zero mean, unit variance per channel) by
    :meth:`initialize`. The ``initialized`` flag is a buffer, so it travels with the state dict
    and a restored model is never re-initialised.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self._init_pending = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._init_pending:
            self.initialize(x)
            self._init_pending = False
        y = (x + self.loc) * torch.exp(self.log_scale)
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return y, logdet.expand(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.loc
