"""Acquisition-style changes of 8-bit chest X-rays: gamma, contrast, noise, blur, zoom.

One implementation serves two jobs: the evaluation's shifts (fixed strengths, applied to the
evaluated images only; :mod:`dpglow.evaluation.shift`) and training-time augmentation of the
release classifier (random strengths, :class:`AcquisitionAugment`), so that a public labeler
learns to ignore exactly the changes it is later tested under.

Every function maps uint8 images ``[N, 1, H, W]`` to uint8 images of the same shape, computes in
float64 and rounds once at the end, and leaves the input untouched.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _check(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("expected uint8 images [N, 1, H, W]")
    return images.double()


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def gamma(images: torch.Tensor, value: float) -> torch.Tensor:
    """``255 (x / 255)^value``: above 1 darkens the mid-tones, below 1 brightens them."""
    if not value > 0:
        raise ValueError(f"gamma must be > 0, got {value}")
    return _to_uint8(255.0 * (_check(images) / 255.0) ** value)


def contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Each image's values pulled towards (factor < 1) or pushed from (> 1) its own mean."""
    if not factor >= 0:
        raise ValueError(f"contrast factor must be >= 0, got {factor}")
    x = _check(images)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return _to_uint8(mean + factor * (x - mean))


def noise(images: torch.Tensor, std: float, *, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise of ``std`` gray levels (quantum and electronic detector noise)."""
    if not std >= 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    x = _check(images)
    return _to_uint8(x + std * torch.randn(x.shape, generator=generator, dtype=x.dtype))


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``sigma`` pixels (a softer detector or focal spot), reflect-padded."""
    if not sigma >= 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    x = _check(images)
    if sigma == 0:
        return images.clone()
    kernel = _gaussian_kernel(sigma)
    r = len(kernel) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, -1, 1))
    return _to_uint8(x)


def zoom(images: torch.Tensor, scale: float) -> torch.Tensor:
    """The image magnified by ``scale`` about its centre: above 1 a centre crop blown up (the
    patient closer to the detector), below 1 the image shrunk inside a border of its own edge
    values (a wider field of view). Antialiased bilinear resampling."""
    if not scale > 0:
        raise ValueError(f"zoom scale must be > 0, got {scale}")
    x = _check(images)
    size = x.shape[-1]
    if scale >= 1:
        side = max(1, round(size / scale))
        start = (size - side) // 2
        crop = x[..., start : start + side, start : start + side]
        return _to_uint8(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True))
    side = max(1, round(size * scale))
    small = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
    before = (size - side) // 2
    after = size - side - before
    return _to_uint8(F.pad(small, (before, after, before, after), mode="replicate"))


class AcquisitionAugment:
    """Random acquisition changes for training a labeler (numpy ``[S, S]`` uint8 in and out, the
    :class:`~dpglow.data.RandomZoom` interface, so the datamodule serves it the same way).

    Each change is applied with probability ``probability``, at a strength drawn uniformly from
    its range: gamma in ``gamma``, contrast factor in ``contrast``, noise std (gray levels) in
    ``[0, noise_std]``, blur sigma (pixels at the training resolution) in ``[0, blur_sigma]``,
    zoom scale in ``zoom``. The image is first resized from ``source_size`` to the training
    resolution with the unaugmented images' filter (:func:`~dpglow.data.io.center_crop_resize`).
    """

    def __init__(
        self,
        *,
        source_size: int,
        probability: float = 0.5,
        gamma: tuple[float, float] = (0.6, 1.6),
        contrast: tuple[float, float] = (0.6, 1.3),
        noise_std: float = 10.0,
        blur_sigma: float = 1.2,
        zoom: tuple[float, float] = (0.85, 1.2),
    ) -> None:
        if not isinstance(source_size, int) or source_size < 1:
            raise ValueError(f"source_size must be a positive integer, got {source_size!r}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must lie in [0, 1], got {probability}")
        for name, (lo, hi) in (("gamma", gamma), ("contrast", contrast), ("zoom", zoom)):
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be a range 0 < low <= high, got {(lo, hi)}")
        if noise_std < 0 or blur_sigma < 0:
            raise ValueError("noise_std and blur_sigma must be >= 0")
        self.source_size, self.probability = source_size, float(probability)
        self.gamma, self.contrast, self.zoom = tuple(gamma), tuple(contrast), tuple(zoom)
        self.noise_std, self.blur_sigma = float(noise_std), float(blur_sigma)

    def __repr__(self) -> str:
        return (
            f"AcquisitionAugment(source_size={self.source_size}, probability={self.probability}, "
            f"gamma={self.gamma}, contrast={self.contrast}, noise_std={self.noise_std}, "
            f"blur_sigma={self.blur_sigma}, zoom={self.zoom})"
        )

    def __call__(self, image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        from dpglow.data.io import center_crop_resize

        if image.shape != (self.source_size, self.source_size):
            raise ValueError(
                f"expected a {self.source_size}x{self.source_size} image, got {image.shape}"
            )
        x = torch.from_numpy(np.array(center_crop_resize(image, size)))[None, None]
        draws = rng.uniform(size=6)
        if draws[0] < self.probability:
            x = zoom(x, rng.uniform(*self.zoom))
        if draws[1] < self.probability:
            x = gamma(x, math.exp(rng.uniform(*np.log(self.gamma))))
        if draws[2] < self.probability:
            x = contrast(x, rng.uniform(*self.contrast))
        if draws[3] < self.probability:
            x = blur(x, rng.uniform(0.0, self.blur_sigma))
        if draws[4] < self.probability:
            generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
            x = noise(x, rng.uniform(0.0, self.noise_std), generator=generator)
        return x[0, 0].numpy()
