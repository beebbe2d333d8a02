"""The common shape of every mechanism: bound the sensitivity, add calibrated noise, record."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from dpglow.privacy.accounting import PrivacyRecord
from dpglow.privacy.noise import (
    OS_ENTROPY,
    gaussian_noise,
    laplace_noise,
    resolve_generator,
    work_dtype,
)


class Mechanism(ABC):
    """A local-DP mechanism applied independently to every row of a batch.

    ``mech(x, *, generator=None, noise_source=None) -> (noisy, record)``. ``generator=None`` draws
    a fresh OS-entropy generator; a generator from :func:`~dpglow.privacy.noise_generator` carries
    its own source string; for any other generator state ``noise_source`` ("os_entropy" or
    "seeded (NOT PRIVATE)"), or it is recorded as "unverified (NOT PRIVATE)". The generator must
    be on the data's device. Noise is sampled and added in float64, and the result returned in
    the input's dtype. ``epsilon=inf`` returns an unchanged copy of the input.
    """

    name: ClassVar[str]
    space: ClassVar[str]  # "latent" or "image"
    noise: ClassVar[str]  # "laplace" or "gaussian"
    norm: ClassVar[str]  # the norm the sensitivity is measured in
    sample_ndim: ClassVar[int]  # dims of one image's input: 1 for [d], 3 for [C, H, W]

    epsilon: float
    delta: float = 0.0
    accounting: str = "per_image"

    def __call__(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        noise_source: str | None = None,
    ) -> tuple[torch.Tensor, PrivacyRecord]:
        self._check_input(x)
        generator, source = resolve_generator(generator, noise_source, x.device)
        record = self.record(tuple(x.shape[1:]), noise_source=source)
        if record.noise == "none":
            return x.clone(), record
        dtype = work_dtype(x.device)
        bounded = self.statistic(x.to(dtype))
        sampler = laplace_noise if self.noise == "laplace" else gaussian_noise
        noise = sampler(
            tuple(bounded.shape),
            record.noise_scale,
            generator=generator,
            device=x.device,
            dtype=dtype,
        )
        return self._release(bounded + noise).to(x.dtype), record

    def record(self, shape: Sequence[int], *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        """The record a call on inputs of per-image ``shape`` ((d,) or (C, H, W)) would return."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.sample_ndim or min(shape) < 1:
            raise ValueError(f"{self.name}: bad per-image shape {shape}")
        d = self._num_elements(shape)
        common = {
            "mechanism": self.name,
            "d": d,
            "delta": self.delta,
            "noise_source": noise_source,
            "accounting": self.accounting,
        }
        if math.isinf(self.epsilon):
            return PrivacyRecord(
                **common,
                clip=None,
                norm=None,
                sensitivity=None,
                epsilon_per_element=math.inf,
                epsilon_per_image=math.inf,
                noise="none",
                noise_scale=0.0,
                private=False,
            )
        return PrivacyRecord(
            **common,
            **self._calibration(shape, d),
            norm=self.norm,
            noise=self.noise,
            private=noise_source == OS_ENTROPY,
        )

    @abstractmethod
    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic, sensitivity-bounded quantity the noise is added to (per row)."""

    @abstractmethod
    def _calibration(self, shape: tuple[int, ...], d: int) -> dict[str, Any]:
        """clip, sensitivity, epsilon_per_element, epsilon_per_image and noise_scale."""

    def _num_elements(self, shape: tuple[int, ...]) -> int:
        return math.prod(shape)

    def _release(self, noisy: torch.Tensor) -> torch.Tensor:
        """Map the noisy statistic back to the input's shape (post-processing)."""
        return noisy

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{self.name} expects a float tensor, got {type(x).__name__}")
        if x.dim() != 1 + self.sample_ndim or x.numel() == 0:
            layout = "[B, d]" if self.sample_ndim == 1 else "[B, C, H, W]"
            raise ValueError(f"{self.name} expects a non-empty {layout} tensor, got {x.shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{self.name}: input has NaN or inf, refusing to privatize it")

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({params})"
