"""Decoder artefacts: saturated, high-frequency patches in released images.

A Glow decoder driven off its training distribution can amplify a region through the inverse of
its affine couplings (a division by the coupling's scale) until the pixels clip to black and
white in a checkerboard, stripes or small specks. Real chest X-rays have saturated regions too
(background, collimation, markers), but they are smooth; a clipped region that alternates between
black and white from pixel to pixel is not anatomy. :func:`saturated_patches` counts such windows
per image (every window position, so that a speck across a block border is not missed; on 1,000
real 64 px pediatric X-rays one image has one): the evaluation reports the count over every
release (it must be 0), and the renderer redraws a candidate that has one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# A pixel is saturated at or beyond these 8-bit values.
DARK, BRIGHT = 8, 247
# A block is a patch when at least this share of its pixels is saturated and the mean, over its
# pixels, of the largest absolute difference to the right or lower neighbour is at least this.
SATURATED_SHARE = 0.5
MIN_CONTRAST = 64.0


def default_block(size: int) -> int:
    """The block side for images of ``size`` pixels: 4 at 64 px, ``size // 16`` (>= 2) at others."""
    return max(2, size // 16)


def saturated_patches(images: Tensor, *, block: int | None = None) -> Tensor:
    """int64 ``[N]``: per uint8 image ``[N, 1, H, W]``, the number of ``block`` x ``block``
    windows, at every position (stride 1; ``block=None``: :func:`default_block` of the width), in
    which at least half of the pixels are saturated (<= 8 or >= 247) and the mean, over the
    window's pixels, of max(|right neighbour - pixel|, |lower neighbour - pixel|) is at least 64
    gray levels (the last column's right and the last row's lower difference count as 0)."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 1 or x.dtype != torch.uint8 or x.shape[0] == 0:
        raise ValueError(f"expected non-empty uint8 gray images [N, 1, H, W], got {tuple(x.shape)}")
    side = default_block(x.shape[-1]) if block is None else int(block)
    if side < 1 or side > min(x.shape[-2:]):
        raise ValueError(f"block must lie in [1, {min(x.shape[-2:])}], got {block}")
    x = x.float()
    saturated = ((x <= DARK) | (x >= BRIGHT)).float()
    dx = F.pad((x[..., :, 1:] - x[..., :, :-1]).abs(), (0, 1))
    dy = F.pad((x[..., 1:, :] - x[..., :-1, :]).abs(), (0, 0, 0, 1))
    share = F.avg_pool2d(saturated, side, stride=1)
    contrast = F.avg_pool2d(torch.maximum(dx, dy), side, stride=1)
    return ((share >= SATURATED_SHARE) & (contrast >= MIN_CONTRAST)).flatten(1).sum(dim=1)
