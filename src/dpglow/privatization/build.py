"""Build the privatizer a ``privacy=...`` config describes (for privatize and evaluate)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dpglow.flow import Glow
from dpglow.privatization.predict import ImagePrivatizer
from dpglow.privatization.privatizer import DPGlowPrivatizer


def mechanism_name(privacy: DictConfig) -> str:
    """The mechanism's registered name (``laplace_l1``, ``dp_pix``, ...)."""
    from dpglow.privacy import MECHANISMS

    target = privacy.mechanism._target_.rsplit(".", 1)[-1]
    for name, cls in MECHANISMS.items():
        if cls.__name__ == target:
            return name
    return target


def build_privatizer(
    privacy: DictConfig,
    *,
    flow: Glow | None,
    temperature: float = 1.0,
    n_bits: int = 8,
) -> Any:
    """``privacy.space == "latent"``: a :class:`DPGlowPrivatizer` over ``flow`` with the group's
    levels and post-processing; ``"image"``: an :class:`ImagePrivatizer` (the pixel baselines)."""
    mechanism = instantiate(privacy.mechanism)
    if privacy.space == "image":
        return ImagePrivatizer(mechanism=mechanism)
    if privacy.space != "latent":
        raise ValueError(f"privacy.space must be 'latent' or 'image', got {privacy.space!r}")
    if flow is None:
        raise ValueError(
            f"privacy={mechanism_name(privacy)} works in the flow's latent space: pass a trained "
            "flow checkpoint"
        )
    levels = privacy.levels
    if OmegaConf.is_config(levels):
        levels = OmegaConf.to_object(levels)
    return DPGlowPrivatizer(
        flow=flow,
        mechanism=mechanism,
        levels=levels,
        postprocess=privacy.postprocess,
        temperature=temperature,
        n_bits=n_bits,
    )
