"""Multi-scale Glow: squeeze -> K x (ActNorm, 1x1 conv, coupling) -> split, over L levels."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from dpglow.flow.actnorm import ActNorm
from dpglow.flow.conditioning import LabelPrior, check_labels
from dpglow.flow.coupling import check_spline_bins
from dpglow.flow.level import (
    Level,
    bounded,
    squeeze,
    standard_normal_logpdf,
    unsqueeze,
)

SPLIT_PRIORS = ("fixed", "learned")


def _check_arguments(
    in_channels, image_size, num_levels, depth, hidden_channels, split_prior, num_conditions,
    condition_split_priors, input_squeezes,
) -> None:  # fmt: skip
    if num_conditions < 0:
        raise ValueError(f"num_conditions must be >= 0, got {num_conditions}")
    if condition_split_priors and num_conditions == 0:
        raise ValueError("condition_split_priors=True needs num_conditions > 0")
    if num_levels < 1 or in_channels < 1:
        raise ValueError(
            f"num_levels and in_channels must be positive, got {num_levels}, {in_channels}"
        )
    level_depths(depth, num_levels)  # raise on a bad depth or width
    level_widths(hidden_channels, num_levels)
    if input_squeezes < 0:
        raise ValueError(f"input_squeezes must be >= 0, got {input_squeezes}")
    halvings = num_levels + input_squeezes
    if image_size % (2**halvings):
        raise ValueError(
            f"image_size={image_size} must be divisible by 2**(num_levels + input_squeezes)="
            f"{2**halvings}: each level and each input squeeze halves the resolution. Choose "
            "another image_size, num_levels or input_squeezes."
        )
    if split_prior not in SPLIT_PRIORS:
        raise ValueError(f"split_prior must be one of {SPLIT_PRIORS}, got {split_prior!r}")


def _per_level(value: int | Sequence[int], num_levels: int, name: str, what: str) -> list[int]:
    """``value`` for every level, or one positive int per level (finest first)."""
    if isinstance(value, int) and not isinstance(value, bool):
        values = [value] * num_levels
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if len(values) != num_levels:
            raise ValueError(
                f"{name} has {len(values)} {what}s for num_levels={num_levels}: give one {what} "
                f"for every level (finest first) or a single {what} for all"
            )
    else:
        raise ValueError(f"{name} must be an int or a list of ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"{name} must be positive integers, got {value!r}")
    return values


def level_widths(hidden_channels: int | Sequence[int], num_levels: int) -> list[int]:
    """The coupling networks' hidden width at each level, finest first: ``hidden_channels`` for
    every level, or one positive width per level. A ValueError otherwise."""
    return _per_level(hidden_channels, num_levels, "hidden_channels", "width")


def level_depths(depth: int | Sequence[int], num_levels: int) -> list[int]:
    """The number of flow steps K at each level, finest first: ``depth`` for every level, or
    one positive count per level. A ValueError otherwise."""
    return _per_level(depth, num_levels, "depth", "depth")


def _stored_config(**arguments: Any) -> dict[str, Any]:
    """The constructor arguments a checkpoint stores (lists for per-level settings). Keys of the
    options added later (conditioning, input squeezes, spline bins) are stored only when they are
    not at their default, so checkpoints of flows without them keep the format they always had
    and load in releases before those options existed."""
    config = {k: v for k, v in arguments.items() if k not in _OPTIONAL_KEYS}
    for key in ("depth", "hidden_channels"):
        if not isinstance(config[key], int):
            config[key] = list(config[key])
    if arguments["num_conditions"]:
        config["num_conditions"] = arguments["num_conditions"]
        config["condition_split_priors"] = arguments["condition_split_priors"]
    for key in ("input_squeezes", "spline_bins"):
        if arguments[key]:
            config[key] = arguments[key]
    return config


_OPTIONAL_KEYS = ("num_conditions", "condition_split_priors", "input_squeezes", "spline_bins")


class Glow(nn.Module):
    """Glow for images with any number of channels, inputs in [-0.5, 0.5].

    ``forward(x) -> (log_p, logdet, latents)``, where ``log_p`` is the N(0, 1) log-density of the
    standardised latents and ``log_p + logdet = log p(x)``. :meth:`decode` is the exact inverse of
    :meth:`encode`; with ``safe=True`` (default) any finite latent decodes to a finite image.

    **Class conditioning** (``num_conditions = m > 0``, Glow's y-conditioning): the density is
    ``p(x | y)`` for a label vector ``y`` in [0, 1]^m (``[B, m]``, float), which every method then
    requires (a ValueError otherwise, and an unconditional flow refuses a ``y``). The prior of the
    top (coarsest) latent ``z`` is ``N(mu(y), sigma(y))`` elementwise, ``(mu, log sigma)`` a
    zero-initialised linear map of ``y`` (:class:`~dpglow.flow.conditioning.LabelPrior`, ``log
    sigma`` bounded to (-3, 3)) added to the learned prior's constant where
    ``split_prior="learned"``; the standardised latent is ``u = (z - mu(y)) / sigma(y)`` and
    ``-sum(log sigma(y))`` enters the logdet. ``condition_split_priors=True`` conditions every
    split prior on ``y`` the same way (added to ``mu(h), log sigma(h)`` where learned). Only a
    conditional flow has the keys ``num_conditions`` and ``condition_split_priors`` in
    :attr:`config` and ``label_prior`` parameters in its state dict: an unconditional flow is the
    same model, with the same state-dict keys and outputs, as before conditioning existed.

    ``hidden_channels`` is the coupling networks' hidden width: one int for every level, or one
    per level, finest first (a coarse level holds 2x-4x the channels on 4x fewer pixels, so it
    can take a wider network for the same cost). :attr:`config` stores it as given, an int or a
    list. ``depth`` (the flow steps K of a level) is likewise one int or one per level, finest
    first: the finest level runs its networks on 4x the pixels of the next, so it holds most of a
    step's cost.

    ``input_squeezes = s > 0`` applies ``s`` 2x2 squeezes to the image before the first level
    (undone at the end of :meth:`decode`): the levels are those of a flow of
    ``4**s * in_channels`` channels at ``image_size / 2**s``, so the finest couplings see
    blocks of ``2**(s+1)`` x ``2**(s+1)`` pixels. A squeeze permutes elements, so ``log p(x)``
    is that flow's density of the squeezed image. Only such a flow has the key
    ``input_squeezes`` in :attr:`config`.

    ``spline_bins = K >= 2`` makes every coupling a spline coupling: a monotone
    rational-quadratic spline of ``K`` bins, then the affine (or additive) map
    (:class:`~dpglow.flow.coupling.AffineCoupling`). Only such a flow has the key
    ``spline_bins`` in :attr:`config` and ``spline_head`` parameters in its state dict.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 64,
        num_levels: int = 4,
        depth: int | Sequence[int] = 16,
        hidden_channels: int | Sequence[int] = 256,
        affine: bool = True,
        scale_floor: float = 0.1,
        split_prior: str = "fixed",
        decode_bound: float = 1e4,
        num_conditions: int = 0,
        condition_split_priors: bool = False,
        input_squeezes: int = 0,
        spline_bins: int = 0,
    ) -> None:
        super().__init__()
        check_spline_bins(spline_bins)
        _check_arguments(
            in_channels, image_size, num_levels, depth, hidden_channels, split_prior,
            num_conditions, condition_split_priors, input_squeezes,
        )  # fmt: skip
        self.config = _stored_config(
            in_channels=in_channels,
            image_size=image_size,
            num_levels=num_levels,
            depth=depth,
            hidden_channels=hidden_channels,
            affine=affine,
            scale_floor=scale_floor,
            split_prior=split_prior,
            decode_bound=decode_bound,
            num_conditions=num_conditions,
            condition_split_priors=condition_split_priors,
            input_squeezes=input_squeezes,
            spline_bins=spline_bins,
        )
        self.in_channels = in_channels
        self.input_squeezes = input_squeezes
        self.image_size = image_size
        self.decode_bound = decode_bound
        self.num_conditions = num_conditions
        self.levels = nn.ModuleList()
        channels, size = in_channels * 4**input_squeezes, image_size // 2**input_squeezes
        shapes = []
        per_level = zip(
            level_depths(depth, num_levels), level_widths(hidden_channels, num_levels), strict=True
        )
        for i, (steps, width) in enumerate(per_level):
            last = i == num_levels - 1
            size //= 2
            shape = (channels * 4 if last else channels * 2, size, size)
            conditioned = num_conditions > 0 and (last or condition_split_priors)
            level = Level(
                channels,
                steps,
                width,
                split=not last,
                prior=split_prior,
                affine=affine,
                scale_floor=scale_floor,
                spline_bins=spline_bins,
                label_prior=LabelPrior(num_conditions, shape) if conditioned else None,
            )
            self.levels.append(level)
            shapes.append(shape)
            channels = level.out_channels
        self.latent_shapes: list[tuple[int, int, int]] = shapes

    @property
    def num_dims(self) -> int:
        """Number of input dimensions D = C * H * W (also the total latent size)."""
        return self.in_channels * self.image_size**2

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected input of shape [B, {', '.join(map(str, expected))}], got {list(x.shape)}"
            )

    def forward(
        self, x: torch.Tensor, *, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        check_labels(y, num_conditions=self.num_conditions, batch_size=x.shape[0])
        logdet = x.new_zeros(x.shape[0])
        log_p = x.new_zeros(x.shape[0])
        latents = []
        h = x
        for _ in range(self.input_squeezes):
            h = squeeze(h)
        for level in self.levels:
            h, u, ld = level(h, y)
            logdet = logdet + ld
            log_p = log_p + standard_normal_logpdf(u)
            latents.append(u)
        return log_p, logdet, latents

    def log_prob(self, x: torch.Tensor, *, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample log-density log p(x) (log p(x | y) for a conditional flow) of continuous
        inputs, shape [B]: ``sum log N(u; 0, 1) + log|det dz/dx| - sum log sigma``, the last sum
        over every element of every level whose prior is not N(0, 1)."""
        log_p, logdet, _ = self(x, y=y)
        return log_p + logdet

    def encode(self, x: torch.Tensor, *, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Standardised latents of every level, coarse level last; each element ~ N(0, 1) (given
        ``y`` for a conditional flow: the top latent is ``(z - mu(y)) / sigma(y)``)."""
        return self(x, y=y)[2]

    def decode(
        self,
        latents: Sequence[torch.Tensor],
        *,
        y: torch.Tensor | None = None,
        safe: bool = True,
    ) -> torch.Tensor:
        """Exact inverse of :meth:`encode` (with the same ``y`` for a conditional flow)."""
        if len(latents) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} latents, got {len(latents)}")
        for u, shape in zip(latents, self.latent_shapes, strict=True):
            if tuple(u.shape[1:]) != shape:
                raise ValueError(
                    f"latent of shape {list(u.shape[1:])} where {list(shape)} was expected"
                )
        check_labels(y, num_conditions=self.num_conditions, batch_size=latents[0].shape[0])
        bound = self.decode_bound if safe else None
        h = None
        for level, u in zip(reversed(self.levels), reversed(list(latents)), strict=True):
            if bound is not None:
                u = bounded(u, bound)
            h = level.reverse(h, u, bound, y)
        for _ in range(self.input_squeezes):
            h = unsqueeze(h)
        return h

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode latents drawn from the prior at ``temperature`` (standard deviation); a
        conditional flow samples ``p(x | y)`` for labels ``y`` ``[num_samples, m]``."""
        device = next(self.parameters()).device
        latents = [
            torch.randn((num_samples, *shape), generator=generator, device=device) * temperature
            for shape in self.latent_shapes
        ]
        return self.decode(latents, y=y)

    def actnorm_initialized(self) -> bool:
        return all(bool(m.initialized) for m in self.modules() if isinstance(m, ActNorm))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent ActNorm initialisation (each layer sees the activations of the previous,
        already initialised ones). Layers that are already initialised are left alone.

        No labels are needed: the priors come after every flow step and feed nothing on, so a
        conditional flow is run with all-zero labels here."""
        y = x.new_zeros(x.shape[0], self.num_conditions) if self.num_conditions else None
        with _pending_actnorm_init(self):
            self(x, y=y)


@contextmanager
def _pending_actnorm_init(model: nn.Module):
    layers = [m for m in model.modules() if isinstance(m, ActNorm) and not m.initialized]
    for layer in layers:
        layer._init_pending = True
    try:
        yield
    finally:
        for layer in layers:
            layer._init_pending = False
