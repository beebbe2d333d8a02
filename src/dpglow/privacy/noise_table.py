"""Noise per element that each mechanism needs for a per-image epsilon: what a user reads to
choose a mechanism and the levels to privatize."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from dpglow.privacy.base import Mechanism
from dpglow.privacy.image import DPPix, PixelLaplace
from dpglow.privacy.latent import GaussianL2, LaplaceElementwise, LaplaceL1


def noise_scale_rows(
    *,
    latent_shapes: Sequence[Sequence[int]],
    image_size: int,
    epsilons: Sequence[float],
    delta: float = 1e-6,
    dp_pix_cell: int = 16,
) -> list[dict[str, Any]]:
    """One row per (mechanism, levels): noise scale per element (Laplace b or Gaussian sigma) at
    each per-image epsilon, from the mechanisms' own calibration (:meth:`Mechanism.record` for
    one image of a flow's latent shapes, finest level first, or of the ``image_size`` pixels;
    nothing is sampled). Latent noise is in units of the N(0, 1) latent; pixel noise in units of
    the [0, 1] range."""
    d_all = sum(math.prod(shape) for shape in latent_shapes)
    d_coarse = math.prod(latent_shapes[-1])
    pixels = (1, image_size, image_size)
    rows = []

    def row(name: str, levels: str, d: int, make: Callable[[float], Mechanism], shape) -> None:
        entry: dict[str, Any] = {"mechanism": name, "levels": levels, "d": d}
        for eps in epsilons:
            entry[f"eps={eps:g}"] = make(eps).record(shape).noise_scale
        rows.append(entry)

    for levels, d in (("all", d_all), ("coarsest", d_coarse)):
        row("laplace_elementwise", levels, d, lambda e: LaplaceElementwise(epsilon=e), (d,))
        row("laplace_l1", levels, d, lambda e: LaplaceL1(epsilon=e), (d,))
        row("gaussian_l2", levels, d, lambda e: GaussianL2(epsilon=e, delta=delta), (d,))
    row("pixel_laplace", "pixels", d_all, lambda e: PixelLaplace(epsilon=e), pixels)
    cells = (image_size // dp_pix_cell) ** 2
    row(
        f"dp_pix (cell {dp_pix_cell})",
        "pixels",
        cells,
        lambda e: DPPix(epsilon=e, cell=dp_pix_cell),
        pixels,
    )
    return rows


def scale_cell(value: Any) -> str:
    """A noise-table cell: a float to 3 significant digits without an exponent below 1e6
    (``24576.0`` -> ``24600``), anything else as ``str``."""
    return f"{float(f'{value:.3g}'):g}" if isinstance(value, float) else str(value)
