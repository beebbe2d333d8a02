"""Training-time augmentation: random zoomed crops of the source images, resized with the very
filter that made the unaugmented images, and the training dataset that applies them."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class Augment(Protocol):
    """A training-time change of one image: uint8 ``[source_size, source_size]`` -> uint8
    ``[size, size]``, random through ``rng`` (:class:`RandomZoom`,
    :class:`~dpglow.data.acquisition.AcquisitionAugment`)."""

    source_size: int

    def __call__(self, image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray: ...


class RandomZoom:
    """A random square box of a square ``source_size`` image, resized to the training resolution.

    The box's side is ``s * source_size`` with ``s ~ U[min_scale, 1]``, its corner uniform over
    the positions that keep it inside the image (sub-pixel: PIL resamples the box directly). The
    resize is :func:`~dpglow.data.io.center_crop_resize`'s antialiased bilinear filter, so a box
    of the whole image gives exactly the unaugmented image and every augmented image has the
    unaugmented images' resampling statistics (no second resampling, no padding). It models
    patient position and distance, which vary in real X-rays anyway; it never changes
    intensities. ``flip_probability`` mirrors the crop left-right with that probability (0, the
    default, never: the heart is on the left of a real chest X-ray, so a mirrored image is not
    one; as extra texture for the density model it did not help on validation,
    docs/density-model.md).

    ``source_size`` is the resolution the images are decoded at for augmentation: the files' own
    size (224 for the bundled pediatric set) reproduces the unaugmented images exactly.
    """

    def __init__(
        self, *, source_size: int, min_scale: float = 0.85, flip_probability: float = 0.0
    ) -> None:
        if not isinstance(source_size, int) or source_size < 1:
            raise ValueError(f"source_size must be a positive integer, got {source_size!r}")
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"flip_probability must lie in [0, 1], got {flip_probability}")
        self.source_size = source_size
        self.min_scale = float(min_scale)
        self.flip_probability = float(flip_probability)

    def __repr__(self) -> str:
        return (
            f"RandomZoom(source_size={self.source_size}, min_scale={self.min_scale}, "
            f"flip_probability={self.flip_probability})"
        )

    def __call__(self, image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        """``image`` uint8 ``[source_size, source_size]`` -> uint8 ``[size, size]``."""
        if image.shape != (self.source_size, self.source_size):
            raise ValueError(
                f"expected a {self.source_size}x{self.source_size} image, got {image.shape}"
            )
        if size > self.source_size:
            raise ValueError(
                f"source_size={self.source_size} is below the training resolution {size}: "
                "decode the images for augmentation at least at the training resolution"
            )
        side = self.source_size * rng.uniform(self.min_scale, 1.0)
        left, top = rng.uniform(0.0, self.source_size - side, size=2)
        box = (left, top, left + side, top + side)
        img = Image.fromarray(np.ascontiguousarray(image))
        out = np.array(img.resize((size, size), Image.Resampling.BILINEAR, box=box))
        # Drawn after the box and only when enabled: without flips the boxes (and so the runs)
        # are those of the releases before the option existed.
        if self.flip_probability > 0.0 and rng.uniform() < self.flip_probability:
            out = np.ascontiguousarray(out[:, ::-1])
        return out


class AugmentedDataset(Dataset):
    """The training split with a fresh augmentation (an :class:`Augment`, e.g. a
    :class:`RandomZoom`) of each image every time it is read.

    Items are those of :class:`~dpglow.data.datamodule.ChestXrayDataset` (``image`` uint8
    ``[1, S, S]``, ``labels``, ``index``); ``images`` holds the unaugmented images (ActNorm
    initialisation, anything that needs the split as it is). Item ``i``'s box is drawn from a
    generator seeded by ``(seed, epoch, i)``: reproducible, new every epoch (:meth:`set_epoch`,
    which the datamodule's sampler calls), and the same after a resume.
    """

    def __init__(
        self,
        images: torch.Tensor,
        sources: torch.Tensor,
        labels: torch.Tensor,
        index: torch.Tensor,
        *,
        augment: Augment,
        seed: int,
    ) -> None:
        if not len(images) == len(sources) == len(labels) == len(index):
            raise ValueError("images, sources, labels and index must have the same length")
        self.images, self.sources, self.labels, self.index = images, sources, labels, index
        self.augment, self.seed, self.epoch = augment, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed % 2**64, 3, self.epoch, int(i)])
        size = self.images.shape[-1]
        image = self.augment(self.sources[i, 0].numpy(), size, rng)
        return {
            "image": torch.from_numpy(image)[None],
            "labels": self.labels[i],
            "index": self.index[i],
        }
