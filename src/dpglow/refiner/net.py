"""The refiner's two networks: a residual CNN that maps decoded images toward real ones, and
the patch discriminator it is trained against (SimGAN, Shrivastava et al. 2017).

Both work in the flow's pixel range, [-0.5, 0.5] (:func:`dpglow.flow.to_flow_input`).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dpglow.flow import to_flow_input, to_uint8


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h + self.conv2(F.relu(self.conv1(h))))


class Refiner(nn.Module):
    """``x -> x + r(x)`` for images ``[B, in_channels, S, S]`` in the flow's range.

    ``r`` is a 3x3 convolution to ``channels`` features, ``blocks`` residual blocks (two 3x3
    convolutions each, reflect padding, ReLU) and a 3x3 convolution back to ``in_channels`` whose
    weights and bias start at zero, so an untrained refiner is exactly the identity (and
    :meth:`refine` returns its uint8 input unchanged). It sees only the image it refines.
    """

    def __init__(self, *, in_channels: int = 1, channels: int = 16, blocks: int = 4) -> None:
        super().__init__()
        self.config = {
            "in_channels": _positive_int(in_channels, "in_channels"),
            "channels": _positive_int(channels, "channels"),
            "blocks": _positive_int(blocks, "blocks"),
        }
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1, padding_mode="reflect")
        self.body = nn.Sequential(*(_ResidualBlock(channels) for _ in range(blocks)))
        self.tail = nn.Conv2d(channels, in_channels, 3, padding=1, padding_mode="reflect")
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(
                f"the refiner takes [B, {self.config['in_channels']}, S, S] images, got "
                f"{tuple(x.shape)}"
            )
        return x + self.tail(self.body(F.relu(self.head(x))))

    @torch.no_grad()
    def refine(self, images: torch.Tensor, *, n_bits: int = 8) -> torch.Tensor:
        """uint8 ``[B, C, S, S]`` -> refined uint8 of the same shape (on the images' device):
        bin centres in, :func:`~dpglow.flow.to_uint8` (clamped, floored) out."""
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise TypeError(
                f"refine takes uint8 images, got {getattr(images, 'dtype', type(images).__name__)}"
            )
        device = next(self.parameters()).device
        out = self(to_flow_input(images.to(device), n_bits=n_bits))
        return to_uint8(out, n_bits=n_bits).to(images.device)


class PatchDiscriminator(nn.Module):
    """Real-vs-refined logits, one per receptive field of ~22 px: three stride-2 4x4
    convolutions (``channels``, 2x, 4x; LeakyReLU 0.2) and a 3x3 convolution to one map
    (``[B, 1, S/8, S/8]``)."""

    def __init__(self, *, in_channels: int = 1, channels: int = 32) -> None:
        super().__init__()
        c = _positive_int(channels, "channels")
        layers: list[nn.Module] = []
        widths = [_positive_int(in_channels, "in_channels"), c, 2 * c, 4 * c]
        for a, b in itertools.pairwise(widths):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
