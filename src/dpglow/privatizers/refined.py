"""A privatizer followed by a refiner (``refiner.ckpt_path=...``): post-processing of the release.

The refiner (:mod:`dpglow.refiner`) was trained on public data only and sees nothing but the
released image, so the record of every image is the inner privatizer's, unchanged; the
description names the refiner (path and SHA-256), so rows, caches and release reports tell a
refined release from an unrefined one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from dpglow.flow import CheckpointError
from dpglow.privacy import OS_ENTROPY, PrivacyRecord
from dpglow.privatizers.base import Privatizer
from dpglow.refiner import Refiner, load_refiner

log = logging.getLogger(__name__)


class RefinedPrivatizer(Privatizer):
    """``refiner.refine(inner(images))``: the inner privatizer's release, refined."""

    def __init__(self, inner: Privatizer, *, refiner: Refiner, refiner_info: dict[str, Any]):
        if isinstance(inner, RefinedPrivatizer):
            raise ValueError("the release is already refined: pass one refiner")
        self.inner, self.refiner, self.refiner_info = inner, refiner.eval(), refiner_info
        self.name = inner.name
        self.needs_flow = inner.needs_flow
        self.default_temperature = inner.default_temperature

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        return self.inner.record(noise_source=noise_source)

    def describe(self) -> dict[str, Any]:
        return {
            **self.inner.describe(),
            "refiner": self.refiner_info["path"],
            "refiner_sha256": self.refiner_info["sha256"],
        }

    def modules(self) -> dict[str, torch.nn.Module]:
        return {**self.inner.modules(), "refiner": self.refiner}

    def refine(self, images: torch.Tensor) -> torch.Tensor:
        return self.refiner.refine(images, n_bits=self.refiner_info["n_bits"])

    def __call__(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator,
        noise_source: str,
        names: Sequence[str] | None = None,
    ) -> torch.Tensor:
        released = self.inner(images, generator=generator, noise_source=noise_source, names=names)
        return self.refine(released)

    def __getattr__(self, name: str) -> Any:  # the inner's extras (e.g. num_private_elements)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def with_refiner(
    privatizer: Privatizer,
    ckpt_path: str | None,
    *,
    image_size: int,
    flow_info: dict[str, Any] | None = None,
) -> Privatizer:
    """``privatizer`` itself (``ckpt_path`` None), else it followed by the refiner there.

    Refuses a refiner trained at another resolution; warns when it was trained on the samples
    of another flow than the one this release decodes with (allowed: it is post-processing)."""
    if not ckpt_path:
        return privatizer
    refiner, info = load_refiner(ckpt_path)
    if info["image_size"] != image_size:
        raise CheckpointError(
            f"the refiner at {ckpt_path} was trained on {info['image_size']} px images, this "
            f"release is {image_size} px: train a refiner with this flow "
            "(`python src/train_refiner.py flow.ckpt_path=<its checkpoint>`)"
        )
    if flow_info is not None and flow_info.get("sha256") != info["flow_sha256"]:
        log.warning(
            "the refiner at %s was trained on the samples of another flow (sha256 %s...) than "
            "this release's (%s...)",
            ckpt_path,
            info["flow_sha256"][:12],
            str(flow_info.get("sha256"))[:12],
        )
    log.info("refiner: %s (sha256 %s...)", info["path"], info["sha256"][:12])
    return RefinedPrivatizer(privatizer, refiner=refiner, refiner_info=info)
