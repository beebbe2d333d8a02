"""Noise per element that each mechanism needs for a per-image epsilon: what a user reads to
choose a mechanism and the levels to privatize."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dpglow.flow import Glow
from dpglow.privacy import (
    DPPix,
    GaussianL2,
    LaplaceElementwise,
    LaplaceL1,
    PixelLaplace,
    noise_generator,
)


def noise_scale_rows(
    flow: Glow, *, epsilons: Sequence[float], delta: float = 1e-6, dp_pix_cell: int = 16
) -> list[dict[str, Any]]:
    """One row per (mechanism, levels): noise scale per element (Laplace b or Gaussian sigma) at
    each per-image epsilon, from the mechanisms' own calibration (a zero input through each).
    Latent noise is in units of the N(0, 1) latent; pixel noise in units of the [0, 1] range."""
    generator, _ = noise_generator()
    d_all = flow.num_dims
    d_coarse = math.prod(flow.latent_shapes[-1])
    size = flow.image_size
    rows = []

    def row(name: str, levels: str, d: int, make, shape) -> None:
        entry: dict[str, Any] = {"mechanism": name, "levels": levels, "d": d}
        for eps in epsilons:
            _, record = make(eps)(torch.zeros(shape), generator=generator)
            entry[f"eps={eps:g}"] = record.noise_scale
        rows.append(entry)

    for levels, d in (("all", d_all), ("coarsest", d_coarse)):
        row("laplace_elementwise", levels, d, lambda e: LaplaceElementwise(epsilon=e), (1, d))
        row("laplace_l1", levels, d, lambda e: LaplaceL1(epsilon=e), (1, d))
        row("gaussian_l2", levels, d, lambda e: GaussianL2(epsilon=e, delta=delta), (1, d))
    row("pixel_laplace", "pixels", d_all, lambda e: PixelLaplace(epsilon=e), (1, 1, size, size))
    cells = (size // dp_pix_cell) ** 2
    row(
        f"dp_pix (cell {dp_pix_cell})",
        "pixels",
        cells,
        lambda e: DPPix(epsilon=e, cell=dp_pix_cell),
        (1, 1, size, size),
    )
    return rows
