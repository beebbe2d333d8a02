"""DP-GLOW over a trained flow: encode -> select levels -> mechanism -> post-process -> decode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dpglow.flow import Glow, flatten_latents, to_flow_input, to_uint8
from dpglow.privacy import OS_ENTROPY, PrivacyRecord
from dpglow.privatizers.base import Privatizer, check_images
from dpglow.privatizers.latents import (
    DEFAULT_CLAMP,
    assemble_latents,
    check_temperature,
    expected_norm,
    levels_label,
    resolve_levels,
)

POSTPROCESS = ("none", "clamp", "posterior_mean", "posterior_sample")


class DPGlowPrivatizer(Privatizer):
    """DP-GLOW: privatize 8-bit images through a trained Glow (``privacy=laplace_l1`` etc.).

    The chosen levels' standardised latents (elements ~ N(0, 1)) go through ``mechanism``; the
    other levels are replaced by fresh prior draws at ``temperature``, which do not depend on the
    input and so cost no privacy. Everything after the mechanism only sees its output
    (post-processing is free under DP). Any finite noisy latent decodes to a finite image, which
    is clamped to the valid range and quantised to 8 bits.
    """

    def __init__(
        self,
        *,
        flow: Glow,
        mechanism: Any,
        levels: Any = "all",
        postprocess: str = "none",
        temperature: float = 1.0,
        n_bits: int = 8,
    ) -> None:
        if postprocess not in POSTPROCESS:
            raise ValueError(f"postprocess must be one of {POSTPROCESS}, got {postprocess!r}")
        if getattr(mechanism, "space", "latent") != "latent":
            raise ValueError(
                f"{mechanism!r} works on pixels: use it as privacy=pixel_laplace / dp_pix"
            )
        self.temperature = check_temperature(temperature)
        self.flow = flow.eval()
        self.mechanism = mechanism
        self.levels = resolve_levels(levels, len(flow.levels))
        self.postprocess = postprocess
        self.n_bits = n_bits

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.mechanism.name

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        return self.mechanism.record((self.num_private_elements,), noise_source=noise_source)

    def describe(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism.name,
            "levels": levels_label(self.levels, len(self.flow.levels)),
            "postprocess": self.postprocess,
            "temperature": self.temperature,
            **self.mechanism.params(),
        }

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"flow": self.flow}

    @property
    def num_private_elements(self) -> int:
        """d: how many latent elements per image the mechanism sees."""
        return sum(math.prod(self.flow.latent_shapes[i]) for i in self.levels)

    def _postprocess(self, noisy: torch.Tensor, record: Any, generator: torch.Generator):
        if self.postprocess == "none" or record.noise == "none":
            return noisy
        clip = record.clip if record.norm == "linf" else None
        if self.postprocess == "clamp":
            bound = clip if clip is not None else DEFAULT_CLAMP
            return noisy.clamp(-bound, bound)
        from dpglow.privacy import posterior_mean, posterior_sample

        # Ball mechanisms shrink u by R/||u|| before the noise; its elements then follow roughly
        # N(0, s^2) with s = min(1, R / E||u||). Estimate in that space, then undo the shrinkage.
        prior_std = 1.0
        if record.norm in ("l1", "l2"):
            prior_std = min(1.0, record.clip / expected_norm(record.d, record.norm))
        kwargs = dict(noise=record.noise, scale=record.noise_scale, prior_std=prior_std, clip=clip)
        if self.postprocess == "posterior_mean":
            estimate = posterior_mean(noisy, **kwargs)
        else:
            estimate = posterior_sample(noisy, generator=generator, **kwargs)
        return estimate / prior_std

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator,
        noise_source: str,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """uint8 ``[B, C, H, W]`` -> privatized uint8 images."""
        check_images(images, self.flow.image_size)
        x = to_flow_input(images, n_bits=self.n_bits)
        latents = self.flow.encode(x)
        chosen = [latents[i] for i in self.levels]
        noisy, record = self.mechanism(
            flatten_latents(chosen), generator=generator, noise_source=noise_source
        )
        noisy = self._postprocess(noisy, record, generator) * self.temperature
        out = assemble_latents(
            self.flow, self.levels, noisy, temperature=self.temperature, generator=generator
        )
        return to_uint8(self.flow.decode(out), n_bits=self.n_bits)
