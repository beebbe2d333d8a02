"""The image-space baselines (``privacy=pixel_laplace``, ``privacy=dp_pix``) as privatizers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dpglow.flow import to_uint8
from dpglow.privacy import OS_ENTROPY, Mechanism, PrivacyRecord
from dpglow.privatizers.base import Privatizer, check_images


class ImagePrivatizer(Privatizer):
    """Pixels in [0, 1] -> ``mechanism`` -> clamp to [0, 1] (post-processing) -> 8 bits.

    ``image_size`` is the side the images are read at (the record's d depends on it).
    """

    needs_flow = False

    def __init__(self, *, mechanism: Mechanism, image_size: int, channels: int = 1) -> None:
        if getattr(mechanism, "space", None) != "image":
            raise ValueError(
                f"{mechanism!r} works in a flow's latent space: use privacy=laplace_l1 etc."
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.mechanism, self.image_size, self.channels = mechanism, image_size, channels

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.mechanism.name

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        shape = (self.channels, self.image_size, self.image_size)
        return self.mechanism.record(shape, noise_source=noise_source)

    def describe(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism.name,
            "postprocess": "clamp",
            **self.mechanism.params(),
        }

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator,
        noise_source: str,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        check_images(images, self.image_size)
        noisy, _ = self.mechanism(
            images.float() / 255.0, generator=generator, noise_source=noise_source
        )
        return to_uint8(noisy.clamp(0.0, 1.0) - 0.5)
