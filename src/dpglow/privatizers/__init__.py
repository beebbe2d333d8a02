"""Privatizers: uint8 images -> released uint8 images with a guarantee known up front.

Every ``privacy=`` config builds one :class:`Privatizer` (:func:`build_privatizer`):

- :class:`DPGlowPrivatizer` (``laplace_l1``, ``gaussian_l2``, ``laplace_elementwise``): DP-GLOW,
  the chosen levels' latents through a mechanism, the other levels fresh prior draws;
- :class:`ImagePrivatizer` (``pixel_laplace``, ``dp_pix``): the pixel-space baselines;
- :class:`SubspacePrivatizer` (``subspace``, ``label_channel``): the pathology labels (randomized
  response, or the label-set mechanism for several) and/or fitted latent directions (the detail
  channel above the label cap), rendered by selection among draws of everything else;
- :class:`PriorSamples` (``prior``): the public-only reference, epsilon 0.

Any of them can be followed by a refiner (``refiner.ckpt_path=...``, :func:`with_refiner`):
:class:`RefinedPrivatizer`, post-processing with the inner privatizer's record.

:class:`~dpglow.privatizers.predict_module.PrivatizeModule` runs any of them in Lightning's
predict loop, for the release folder (:mod:`dpglow.release`) and the evaluation alike. The
public models they use are fitted here too: the bases (:mod:`~dpglow.privatizers.fit`).
"""

from dpglow.privatizers.base import Privatizer, check_images
from dpglow.privatizers.build import (
    PrivacyConfigError,
    accepted_keys,
    build_privatizer,
    privatizer_class,
)
from dpglow.privatizers.dp_glow import DPGlowPrivatizer
from dpglow.privatizers.fit import ensure_basis
from dpglow.privatizers.latents import resolve_levels
from dpglow.privatizers.pixel import ImagePrivatizer
from dpglow.privatizers.predict_module import PrivatizeModule
from dpglow.privatizers.prior import PriorSamples, public_record
from dpglow.privatizers.refined import RefinedPrivatizer, with_refiner
from dpglow.privatizers.subspace import SubspacePrivatizer
from dpglow.privatizers.task import fit_basis

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
