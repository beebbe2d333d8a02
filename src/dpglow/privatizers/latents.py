"""Latent helpers every flow-based privatizer shares: which levels are released, how the rest
is drawn from the prior, and the checks and labels of those settings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dpglow.flow import Glow, unflatten_latents

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
