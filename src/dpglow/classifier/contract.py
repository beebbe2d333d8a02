"""The one place where images become torchxrayvision inputs.

torchxrayvision's models take 1 channel with values in [-1024, 1024] (``xrv.utils.normalize``
maps 0..255 there) at the model's resolution. dpglow's images are uint8 0..255 (data, released
images) or floats in the flow's [-0.5, 0.5] range; both go through :func:`to_xrv_input`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

XRV_RANGE = 1024.0


def to_xrv_input(images: torch.Tensor, *, resolution: int | None = None) -> torch.Tensor:
    """uint8 ``[B, 1, H, W]`` (0..255) or float in [-0.5, 0.5] -> float in [-1024, 1024].

    Non-square images are centre-cropped; ``resolution`` resizes (bilinear, antialiased).
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected [B, 1, H, W] grayscale images, got {list(images.shape)}")
    if images.dtype == torch.uint8:
        unit = images.float() / 255.0
    elif images.is_floating_point():
        unit = images.float() + 0.5
    else:
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    x = (unit.clamp(0.0, 1.0) * 2.0 - 1.0) * XRV_RANGE
    h, w = x.shape[-2:]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top : top + side, left : left + side]
    if resolution is not None and x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
    return x
