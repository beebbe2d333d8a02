"""Local differential privacy for DP-GLOW: the mechanisms of METHOD.md, their accounting,
unpredictable noise, and free post-processing.

Latent mechanisms take ``u`` of shape ``[B, d]`` (standardised latents, one row per image), image
mechanisms ``[B, C, H, W]`` in [0, 1]; each returns ``(noisy, PrivacyRecord)``::

    generator, source = noise_generator(device=u.device)
    noisy, record = LaplaceL1(epsilon=1.0)(u, generator=generator)
    denoised = posterior_mean(noisy, noise=record.noise, scale=record.noise_scale)
"""

from dpglow.privacy.accounting import PrivacyRecord
from dpglow.privacy.base import Mechanism
from dpglow.privacy.gaussian import (
    analytic_gaussian_sigma,
    classical_gaussian_sigma,
    gaussian_delta,
)
from dpglow.privacy.image import DPPix, PixelLaplace
from dpglow.privacy.latent import GaussianL2, LaplaceElementwise, LaplaceL1, scale_into_ball
from dpglow.privacy.noise import OS_ENTROPY, SEEDED, UNVERIFIED, noise_generator
from dpglow.privacy.postprocess import posterior_mean, posterior_sample

MECHANISMS: dict[str, type[Mechanism]] = {
    cls.name: cls for cls in (LaplaceElementwise, LaplaceL1, GaussianL2, PixelLaplace, DPPix)
}

__all__ = [
    "MECHANISMS",
    "OS_ENTROPY",
    "SEEDED",
    "UNVERIFIED",
    "DPPix",
    "GaussianL2",
    "LaplaceElementwise",
    "LaplaceL1",
    "Mechanism",
    "PixelLaplace",
    "PrivacyRecord",
    "analytic_gaussian_sigma",
    "classical_gaussian_sigma",
    "gaussian_delta",
    "noise_generator",
    "posterior_mean",
    "posterior_sample",
    "scale_into_ball",
]
