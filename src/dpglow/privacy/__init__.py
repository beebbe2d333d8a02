"""Local differential privacy for DP-GLOW: the mechanisms of docs/method.md, their accounting,
unpredictable noise, and free post-processing.

Latent mechanisms take ``u`` of shape ``[B, d]`` (standardised latents, one row per image), image
mechanisms ``[B, C, H, W]`` in [0, 1]; each returns ``(noisy, PrivacyRecord)``::

    generator, source = noise_generator(device=u.device)
    noisy, record = LaplaceL1(epsilon=1.0)(u, generator=generator)
    denoised = posterior_mean(noisy, noise=record.noise, scale=record.noise_scale)

The label channel takes ``y`` of shape ``[B, m]`` in {0, 1} through randomized response, and a
release made of both parts is accounted by basic composition (the epsilons add up)::

    rr = RandomizedResponse(epsilon=0.5, num_labels=m)
    noisy_y, label_record = rr(y, generator=generator)
    p_positive = rr.posterior_positive(noisy_y, prior=0.1)  # free post-processing
    record = compose(parts={"latent": record, "label": label_record})  # epsilon/image: 1.5

``MECHANISMS`` maps names to the continuous-noise :class:`Mechanism` classes;
:class:`RandomizedResponse` (which flips bits) is not one of them.
"""

from dpglow.privacy.accounting import PrivacyRecord, compose
from dpglow.privacy.base import Mechanism
from dpglow.privacy.categorical import GeneralizedRandomizedResponse, SubsetSelection
from dpglow.privacy.discrete import DiscreteLaplaceL1, discrete_gaussian, discrete_laplace
from dpglow.privacy.gaussian import (
    analytic_gaussian_sigma,
    classical_gaussian_sigma,
    gaussian_delta,
)
from dpglow.privacy.image import DPPix, PixelLaplace
from dpglow.privacy.labels import RandomizedResponse
from dpglow.privacy.labelsets import (
    LabelDomain,
    LabelSetResponse,
    binarize_labels,
    domain_sha256,
    fit_label_domain,
)
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
    "DiscreteLaplaceL1",
    "GaussianL2",
    "GeneralizedRandomizedResponse",
    "LabelDomain",
    "LabelSetResponse",
    "LaplaceElementwise",
    "LaplaceL1",
    "Mechanism",
    "PixelLaplace",
    "PrivacyRecord",
    "RandomizedResponse",
    "SubsetSelection",
    "analytic_gaussian_sigma",
    "binarize_labels",
    "classical_gaussian_sigma",
    "compose",
    "discrete_gaussian",
    "discrete_laplace",
    "domain_sha256",
    "fit_label_domain",
    "gaussian_delta",
    "noise_generator",
    "posterior_mean",
    "posterior_sample",
    "scale_into_ball",
]
