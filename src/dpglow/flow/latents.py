"""Flatten the per-level latents into one vector per image, and back."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def level_slices(shapes: Sequence[tuple[int, ...]]) -> list[slice]:
    """Where each level's latent lies in the flat vector (levels in the flow's order)."""
    slices, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        slices.append(slice(start, start + size))
        start += size
    return slices


def flatten_latents(latents: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, C_i, H_i, W_i]`` per level -> ``[B, d]``."""
    return torch.cat([u.flatten(1) for u in latents], dim=1)


def unflatten_latents(flat: torch.Tensor, shapes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    """Inverse of :func:`flatten_latents` for the given per-level shapes (without batch dim)."""
    slices = level_slices(shapes)
    total = slices[-1].stop if slices else 0
    if flat.dim() != 2 or flat.shape[1] != total:
        raise ValueError(f"expected a [B, {total}] latent vector, got {list(flat.shape)}")
    return [
        flat[:, s].reshape(flat.shape[0], *shape) for s, shape in zip(slices, shapes, strict=True)
    ]
