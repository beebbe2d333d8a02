"""Public-only reference: ``privacy=prior`` releases prior samples of the flow, whatever the image.

Its output does not depend on the image at all (epsilon = 0), so whatever utility it shows comes
from the public model alone; a private release is worth what it adds above this row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dpglow.flow import Glow, to_uint8
from dpglow.privacy import OS_ENTROPY, PrivacyRecord
from dpglow.privatizers.base import Privatizer, check_images
from dpglow.privatizers.latents import check_temperature, fresh_latents


def public_record(name: str, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
    """The record of a release that does not depend on the image: epsilon 0, nothing released."""
    return PrivacyRecord(
        mechanism=name,
        d=0,
        clip=None,
        norm=None,
        sensitivity=0.0,
        epsilon_per_element=0.0,
        epsilon_per_image=0.0,
        delta=0.0,
        noise="none",
        noise_scale=0.0,
        noise_source=noise_source,
        accounting="per_image",
        # Independent of the image: nothing about it can leak, however the draws are seeded.
        private=True,
    )


class PriorSamples(Privatizer):
    """Every image is replaced by a fresh sample of the flow's prior at ``temperature``."""

    name = "prior"

    def __init__(self, *, flow: Glow, temperature: float = 1.0, n_bits: int = 8) -> None:
        self.flow, self.temperature, self.n_bits = (
            flow.eval(),
            check_temperature(temperature),
            n_bits,
        )

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        return public_record(self.name, noise_source=noise_source)

    def describe(self) -> dict[str, Any]:
        return {
            "mechanism": self.name,
            "epsilon": 0.0,
            "levels": "none",
            "temperature": self.temperature,
        }

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"flow": self.flow}

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator,
        noise_source: str,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        check_images(images, self.flow.image_size)
        device = next(self.flow.parameters()).device
        latents = fresh_latents(
            self.flow.latent_shapes,
            len(images),
            temperature=self.temperature,
            generator=generator,
            device=device,
            dtype=torch.float32,
        )
        return to_uint8(self.flow.decode(latents), n_bits=self.n_bits)
