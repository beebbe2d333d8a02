"""Privatizers (uint8 images -> released uint8 images with a known guarantee) and what runs them.

Every ``privacy=`` config builds one :class:`Privatizer` (:func:`build_privatizer`):

- :class:`DPGlowPrivatizer` (``laplace_l1``, ``gaussian_l2``, ``laplace_elementwise``): DP-GLOW,
  the chosen levels' latents through a mechanism, the other levels fresh prior draws;
- :class:`ImagePrivatizer` (``pixel_laplace``, ``dp_pix``): the pixel-space baselines;
- :class:`SubspacePrivatizer` (``subspace``, ``label_channel``): k fitted directions of the
  latents and/or the pathology labels (randomized response), everything else from the prior;
- :class:`PriorSamples` (``prior``): the public-only reference, epsilon 0.

Any of them can be followed by a refiner (``refiner.ckpt_path=...``, :func:`with_refiner`):
:class:`RefinedPrivatizer`, post-processing with the inner privatizer's record.

:class:`~dpglow.privatization.module.PrivatizeModule` runs any of them in Lightning's predict
loop, for ``privatize.py`` and ``evaluate.py`` alike.
"""

from dpglow.privatization.base import Privatizer, check_images
from dpglow.privatization.build import (
    PrivacyConfigError,
    accepted_keys,
    build_privatizer,
    privatizer_class,
)
from dpglow.privatization.fit import ensure_basis, fit_basis
from dpglow.privatization.image import ImagePrivatizer
from dpglow.privatization.module import PrivatizeModule
from dpglow.privatization.privatizer import DPGlowPrivatizer, resolve_levels
from dpglow.privatization.reference import PriorSamples, public_record
from dpglow.privatization.refined import RefinedPrivatizer, with_refiner
from dpglow.privatization.subspace import SubspacePrivatizer

__all__ = [
    "DPGlowPrivatizer",
    "ImagePrivatizer",
    "PriorSamples",
    "PrivacyConfigError",
    "PrivatizeModule",
    "Privatizer",
    "RefinedPrivatizer",
    "SubspacePrivatizer",
    "accepted_keys",
    "build_privatizer",
    "check_images",
    "ensure_basis",
    "fit_basis",
    "privatizer_class",
    "public_record",
    "resolve_levels",
    "with_refiner",
]
