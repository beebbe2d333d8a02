"""Image-domain baselines at the same per-image epsilon: ``pixel_laplace`` and ``dp_pix``.

Inputs are images in [0, 1], ``[B, C, H, W]``; they are clamped to [0, 1] before the noise,
because the sensitivity assumes that range. Outputs are NOT clamped: clamping (to [0, 1]) is
post-processing and the caller's choice (``postprocess: clamp`` in the configs).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dpglow.privacy.base import Mechanism
from dpglow.privacy.validation import check_epsilon, check_positive_int

# Inputs further than this outside [0, 1] are a caller's bug (e.g. the flow's [-0.5, 0.5] range),
# not rounding, and are refused rather than silently clamped.
RANGE_TOLERANCE = 1e-3


class _ImageMechanism(Mechanism):
    space = "image"
    noise = "laplace"
    norm = "l1"
    sample_ndim = 3

    def __init__(self, *, epsilon: float) -> None:
        self.epsilon = check_epsilon(epsilon)

    def _check_input(self, x: torch.Tensor) -> None:
        super()._check_input(x)
        low, high = float(x.min()), float(x.max())
        if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
            raise ValueError(
                f"{self.name} expects images in [0, 1], got values in [{low:.3g}, {high:.3g}]"
            )

    def _calibration(self, shape: tuple[int, ...], d: int) -> dict[str, Any]:
        # Each of the d released values (pixels or cell means) lies in [0, 1]: L1 sensitivity d.
        return {
            "clip": None,
            "sensitivity": float(d),
            "epsilon_per_element": self.epsilon / d,
            "epsilon_per_image": self.epsilon,
            "noise_scale": d / self.epsilon,
        }


class PixelLaplace(_ImageMechanism):
    """``pixel_laplace``: Laplace(0, D / epsilon) on each of the D = C*H*W pixels in [0, 1].

    Every pixel may change by 1, so the image's L1 sensitivity is D: epsilon-LDP per image,
    epsilon / D per pixel.
    """

    name = "pixel_laplace"

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


class DPPix(_ImageMechanism):
    """``dp_pix`` (Fan 2018): ``cell`` x ``cell`` block means, Laplace(0, m / epsilon), upsampled.

    With values in [0, 1] each of the m = C * (H / cell) * (W / cell) cell means may change by 1,
    so their L1 sensitivity is m: epsilon-LDP per image, epsilon / m per cell. The noisy means are
    repeated over their cells (nearest upsampling) back to ``[B, C, H, W]``. H and W must be
    divisible by ``cell``.
    """

    name = "dp_pix"

    def __init__(self, *, epsilon: float, cell: int = 4) -> None:
        super().__init__(epsilon=epsilon)
        self.cell = check_positive_int("cell", cell)

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        self._num_elements(tuple(x.shape[1:]))
        return F.avg_pool2d(x.clamp(0.0, 1.0), self.cell)

    def _release(self, noisy: torch.Tensor) -> torch.Tensor:
        return noisy.repeat_interleave(self.cell, dim=2).repeat_interleave(self.cell, dim=3)

    def _num_elements(self, shape: tuple[int, ...]) -> int:
        channels, height, width = shape
        if height % self.cell or width % self.cell:
            raise ValueError(
                f"dp_pix: image size {height}x{width} is not divisible by cell={self.cell}"
            )
        return channels * (height // self.cell) * (width // self.cell)

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "cell": self.cell}
