"""Conversions between 8-bit images and the flow's continuous [-0.5, 0.5] range, and bits/dim."""

from __future__ import annotations

import math

import torch


def _check_bits(n_bits: int) -> None:
    if not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be an integer in [1, 8], got {n_bits!r}")


def to_flow_input(
    images: torch.Tensor,
    *,
    n_bits: int = 8,
    dequantize: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 images -> float in [-0.5, 0.5).

    Bins are ``1 / 2**n_bits`` wide. With ``dequantize`` each value is spread uniformly over its bin
    (training and bits/dim); without, it sits at the bin centre, the point that decodes back to the
    same 8-bit value with the largest margin.
    """
    _check_bits(n_bits)
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    bins = 2**n_bits
    levels = torch.div(images, 2 ** (8 - n_bits), rounding_mode="floor").float()
    if dequantize:
        offset = torch.rand(images.shape, generator=generator, device=images.device)
    else:
        offset = torch.full_like(levels, 0.5)
    return (levels + offset) / bins - 0.5


def to_uint8(x: torch.Tensor, *, n_bits: int = 8) -> torch.Tensor:
    """Flow range -> uint8, clamped to the valid range (non-finite values become mid-grey)."""
    _check_bits(n_bits)
    bins = 2**n_bits
    x = torch.nan_to_num(x.detach().float(), nan=0.0, posinf=0.5, neginf=-0.5)
    levels = torch.floor((x + 0.5) * bins).clamp(0, bins - 1)
    return (levels * 2 ** (8 - n_bits)).to(torch.uint8)


def bits_per_dim(log_px: torch.Tensor, *, num_dims: int, n_bits: int = 8) -> torch.Tensor:
    """Discrete bits/dim from the continuous log-density of uniformly dequantised inputs:
    ``-(log p(x) - D log 2**n_bits) / (D log 2)``."""
    _check_bits(n_bits)
    return -(log_px - num_dims * n_bits * math.log(2.0)) / (num_dims * math.log(2.0))
