"""Shifts of the evaluated images (docs/evaluation.md, "Off the tuning data").

A hospital's images never look exactly like the public training data. A shift changes the images
an evaluation job privatizes and scores, and nothing else: the flow, the classifiers, the basis
and every threshold stay as they were fitted on public data. Each row names its shift
(``shift`` and its ``shift_*`` parameters), so results.md shows retention with and without it.

``shift=`` picks one (conf/shift/): ``none``; ``prevalence`` (the evaluated set subsampled to
another share of positives); ``gamma``, ``contrast``, ``noise``, ``blur``, ``zoom`` (acquisition
changes, :mod:`dpglow.data.acquisition`); ``collection`` (every image of another dataset, e.g.
NIH ChestX-ray14's own Pneumonia labels, or a folder of your own in the pediatric layout).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dpglow.data import acquisition
from dpglow.data.subsets import LabelledImages

log = logging.getLogger(__name__)

ACQUISITION = ("gamma", "contrast", "noise", "blur", "zoom")


def _subset(images: LabelledImages, keep: torch.Tensor) -> LabelledImages:
    index = keep.tolist()
    return LabelledImages(
        images=images.images[keep].clone(),
        labels=images.labels[keep].clone(),
        pathologies=list(images.pathologies),
        patients=[images.patients[i] for i in index],
        paths=[images.paths[i] for i in index],
    )


class NoShift:
    """The evaluated images as they are."""

    name = "none"

    def __call__(self, images: LabelledImages) -> LabelledImages:
        return images

    def describe(self) -> dict[str, Any]:
        return {"shift": self.name}


class Prevalence:
    """The evaluated set subsampled (without replacement, seeded) so that ``positive_fraction``
    of the images with a known ``pathology`` label are positive; images whose label is unknown
    are dropped. ``pathology`` null: the data's first pathology."""

    name = "prevalence"

    def __init__(self, *, positive_fraction: float, pathology: str | None = None, seed: int = 0):
        if not 0.0 < positive_fraction < 1.0:
            raise ValueError(f"positive_fraction must lie in (0, 1), got {positive_fraction}")
        self.positive_fraction, self.pathology, self.seed = positive_fraction, pathology, seed

    def __call__(self, images: LabelledImages) -> LabelledImages:
        name = self.pathology or images.pathologies[0]
        if name not in images.pathologies:
            raise ValueError(f"shift.pathology={name!r} is not one of {images.pathologies}")
        label = images.labels[:, images.pathologies.index(name)]
        pos, neg = (label == 1).nonzero()[:, 0], (label == 0).nonzero()[:, 0]
        f = self.positive_fraction
        n_pos = min(len(pos), int(len(neg) * f / (1 - f)))
        n_neg = min(len(neg), round(n_pos * (1 - f) / f))
        if n_pos < 5 or n_neg < 5:
            raise ValueError(
                f"prevalence {f}: only {n_pos} positive and {n_neg} negative images would remain; "
                "evaluate more images or choose a prevalence nearer the data's"
            )
        generator = torch.Generator().manual_seed(self.seed)
        pick_pos = pos[torch.randperm(len(pos), generator=generator)[:n_pos]]
        pick_neg = neg[torch.randperm(len(neg), generator=generator)[:n_neg]]
        keep = torch.cat([pick_pos, pick_neg]).sort().values
        log.info("shift prevalence: %d positive + %d negative %s images", n_pos, n_neg, name)
        return _subset(images, keep)

    def describe(self) -> dict[str, Any]:
        return {
            "shift": self.name,
            "shift_positive_fraction": self.positive_fraction,
            "shift_pathology": self.pathology,
        }


class Acquisition:
    """One acquisition change of :mod:`dpglow.data.acquisition` (``kind``) at strength
    ``value``: gamma exponent, contrast factor, noise std in gray levels, blur sigma in pixels,
    or zoom scale. Noise is drawn from a generator seeded by ``seed`` (the same images every
    run)."""

    def __init__(self, *, kind: str, value: float, seed: int = 0) -> None:
        if kind not in ACQUISITION:
            raise ValueError(f"shift.kind must be one of {ACQUISITION}, got {kind!r}")
        self.kind, self.value, self.seed = kind, float(value), seed

    @property
    def name(self) -> str:
        return self.kind

    def __call__(self, images: LabelledImages) -> LabelledImages:
        change = getattr(acquisition, self.kind)
        if self.kind == "noise":
            shifted = change(
                images.images, self.value, generator=torch.Generator().manual_seed(self.seed)
            )
        else:
            shifted = change(images.images, self.value)
        return LabelledImages(
            images=shifted,
            labels=images.labels.clone(),
            pathologies=list(images.pathologies),
            patients=list(images.patients),
            paths=list(images.paths),
        )

    def describe(self) -> dict[str, Any]:
        return {"shift": self.name, "shift_value": self.value}


class Collection:
    """Every image of another dataset (``data``: a data config, as the ``data`` group writes
    one), read at the evaluated resolution, labelled with that dataset's own labels. The models
    never saw it, so no split is held back: all its splits are evaluated (at most
    ``max_images``, a seeded subset)."""

    name = "collection"

    def __init__(self, *, data: Mapping[str, Any], max_images: int | None = None) -> None:
        self.data = data
        self.max_images = max_images

    def __call__(self, images: LabelledImages) -> LabelledImages:
        datamodule = instantiate(dict(self.data), image_size=images.images.shape[-1])
        datamodule.prepare_data()
        datamodule.setup("test")
        parts = [datamodule.dataset(split) for split in ("train", "val", "test")]
        index = torch.cat([part.index for part in parts])
        all_images = torch.cat([part.images for part in parts])
        labels = torch.cat([part.labels for part in parts])
        if self.max_images is not None and self.max_images < len(index):
            order = torch.randperm(len(index), generator=torch.Generator().manual_seed(0))
            keep = order[: self.max_images].sort().values
            index, all_images, labels = index[keep], all_images[keep], labels[keep]
        rows = datamodule.splits.iloc[index.numpy()]
        log.info("shift collection: %d images of %s", len(index), datamodule.source.name)
        return LabelledImages(
            images=all_images.clone(),
            labels=labels.clone(),
            pathologies=list(datamodule.pathologies),
            patients=[str(p) for p in rows["patient_id"]],
            paths=[str(p) for p in rows["path"]],
        )

    def describe(self) -> dict[str, Any]:
        return {"shift": self.name, "shift_data": str(self.data.get("root"))}


def build_shift(cfg: DictConfig):
    """The configured shift (``cfg.shift``; absent or null: none), its settings resolved against
    the task's config (a collection's data node reads the task's image size and data folder)."""
    node = cfg.get("shift")
    if node is None:
        return NoShift()
    return instantiate(OmegaConf.to_container(node, resolve=True), _recursive_=False)
