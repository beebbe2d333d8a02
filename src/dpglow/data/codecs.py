"""Lossless codec baselines: a flow whose bits/dim cannot beat PNG or WebP has not learned much."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, features


def codec_bits_per_dim(images: np.ndarray) -> dict[str, float]:
    """Mean bits per pixel of PNG (optimised) and, where Pillow has WebP, WebP lossless.

    ``images``: uint8 ``[N, H, W]`` or ``[N, 1, H, W]`` grayscale. Each image is encoded on its
    own, as a per-image bits/dim is what the flow's number means.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N, H, W] images, got {images.dtype} {images.shape}")
    formats = {"png": {"format": "PNG", "optimize": True}}
    if features.check("webp"):
        formats["webp"] = {"format": "WEBP", "lossless": True, "quality": 100, "method": 6}
    bits = {name: 0.0 for name in formats}
    for img in images:
        pil = Image.fromarray(img, mode="L")
        for name, kwargs in formats.items():
            buf = io.BytesIO()
            pil.save(buf, **kwargs)
            bits[name] += 8 * buf.tell()
    pixels = images.shape[0] * images.shape[1] * images.shape[2]
    return {f"{name}_bpd": total / pixels for name, total in bits.items()}
