"""The one shape every privatizer has: uint8 images in, uint8 images out, its record up front."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dpglow.privacy import OS_ENTROPY, PrivacyRecord


class Privatizer(ABC):
    """Privatize 8-bit images ``[B, C, S, S]`` with a fixed guarantee.

    - ``record(noise_source=...)``: the accounting record of every image this privatizer
      releases, known before any image is seen (it does not depend on the images), so it can be
      written to a release folder before the first output.
    - ``__call__(images, *, generator, noise_source, names=None)``: the released images (uint8,
      same shape). All randomness comes from ``generator``; everything the output depends on
      that depends on the image has passed through the mechanisms the record names. ``names``
      are the images' file names (relative paths), for a labeler that reads the data holder's
      own label table (``labeler.kind=dataset``); the others ignore them.
    - ``describe()``: the settings that determine the output distribution, as a flat dict of
      plain values (for evaluation rows, cache keys and resume checks).
    - ``modules()``: the torch modules to move to the compute device (flow, label classifier).
    """

    name: ClassVar[str]
    #: Whether it needs a trained flow (latent-space privatizers) or works on pixels.
    needs_flow: ClassVar[bool] = True
    #: The temperature of the fresh prior draws when the task leaves ``temperature=null``.
    default_temperature: ClassVar[float] = 1.0

    @abstractmethod
    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        """The guarantee of every released image."""

    @abstractmethod
    def __call__(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator,
        noise_source: str,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """uint8 ``[B, C, S, S]`` -> released uint8 images of the same shape."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Flat settings: ``mechanism`` (the release's name) and whatever else shapes it."""

    def modules(self) -> dict[str, torch.nn.Module]:
        return {}


def check_images(images: torch.Tensor, image_size: int | None = None) -> None:
    """Refuse anything but a non-empty uint8 ``[B, C, S, S]`` batch (at ``image_size``)."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(
            "a privatizer takes uint8 images [B, C, S, S], got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        raise ValueError(
            f"images of {images.shape[-2]}x{images.shape[-1]} px for a privatizer at "
            f"{image_size}x{image_size}: read them at the flow's resolution"
        )
