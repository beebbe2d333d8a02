"""DP-GLOW over a trained flow: encode -> select levels -> mechanism -> post-process -> decode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dpglow.flow import Glow, flatten_latents, to_flow_input, to_uint8, unflatten_latents
from dpglow.privacy import OS_ENTROPY, PrivacyRecord
from dpglow.privatization.base import Privatizer, check_images

POSTPROCESS = ("none", "clamp", "posterior_mean", "posterior_sample")
# Where no clip bound is known (ball mechanisms), `clamp` keeps latents within the range that holds
# all but ~6e-5 of N(0, 1) mass: outside it the decoder only produces artefacts.
DEFAULT_CLAMP = 4.0


def expected_norm(d: int, norm: str) -> float:
    """E||u|| for u ~ N(0, I_d): d*sqrt(2/pi) in L1; sqrt(2)*Gamma((d+1)/2)/Gamma(d/2) in L2."""
    if norm == "l1":
        return d * math.sqrt(2.0 / math.pi)
    if norm == "l2":
        return math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    raise ValueError(f"no expected norm for {norm!r}")


def resolve_levels(levels: Any, num_levels: int) -> list[int]:
    """``"all"``, a list of level indices (0 = finest, negative counts from the coarsest), a
    comma-separated string such as ``"-2,-1"``, or ``"coarsest"`` / ``"coarsest<N>"`` (the N
    coarsest levels; names a sweeper can pass)."""
    if levels is None or levels == "all":
        return list(range(num_levels))
    if isinstance(levels, str):
        name = levels.strip()
        if name.startswith("coarsest") and (name[8:] == "" or name[8:].isdigit()):
            n = int(name[8:] or 1)
            if not 1 <= n <= num_levels:
                raise ValueError(f"{name!r}: this flow has {num_levels} levels")
            return list(range(num_levels - n, num_levels))
        try:
            levels = [int(part) for part in name.split(",")]
        except ValueError:
            raise ValueError(
                f"levels must be 'all', a list of level indices, a string like '-2,-1', or "
                f"'coarsest'/'coarsest2', got {levels!r}"
            ) from None
    if isinstance(levels, int) and not isinstance(levels, bool):
        levels = [levels]
    if not isinstance(levels, Sequence) or isinstance(levels, str) or not levels:
        raise ValueError(
            f"levels must be 'all' or a non-empty list of level indices, got {levels!r}"
        )
    chosen = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(f"level indices must be integers, got {level!r}")
        if not -num_levels <= level < num_levels:
            raise ValueError(
                f"level {level} does not exist: this flow has levels 0..{num_levels - 1} "
                f"(0 = finest, {num_levels - 1} = coarsest)"
            )
        chosen.append(level % num_levels)
    return sorted(set(chosen))


def levels_label(levels: Sequence[int], num_levels: int) -> str:
    """``"all"`` or the comma-separated level indices (0 = finest), as rows and reports show it."""
    return "all" if list(levels) == list(range(num_levels)) else ",".join(map(str, levels))


def fresh_latents(
    shapes: Sequence[Sequence[int]], batch: int, *, temperature: float, generator, device, dtype
) -> list[torch.Tensor]:
    """Prior draws N(0, T^2) for levels that are not released (independent of any image)."""
    return [
        temperature * torch.randn((batch, *s), generator=generator, device=device, dtype=dtype)
        for s in shapes
    ]


def assemble_latents(
    flow: Glow,
    levels: Sequence[int],
    released: torch.Tensor,
    *,
    temperature: float,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Every level's latent for decoding: the ``levels`` from the flat ``released`` [B, d], the
    others fresh N(0, T^2) prior draws (independent of the image, so they cost no privacy)."""
    shapes = [flow.latent_shapes[i] for i in levels]
    chosen = dict(zip(levels, unflatten_latents(released, shapes), strict=True))
    out = []
    for i, shape in enumerate(flow.latent_shapes):
        if i in chosen:
            out.append(chosen[i])
            continue
        fresh = torch.randn(
            (len(released), *shape),
            generator=generator,
            device=released.device,
            dtype=released.dtype,
        )
        out.append(temperature * fresh)
    return out


def check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    return float(temperature)


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
            **self.mechanism._params(),
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
        self, images: torch.Tensor, *, generator: torch.Generator, noise_source: str
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
