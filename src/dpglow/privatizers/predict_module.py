"""One Lightning predict module for every privatizer, used by ``privatize.py`` and ``evaluate.py``.

Noise: without ``noise_seed`` (a release) each rank draws all its noise, batch after batch, from
one OS-entropy generator. With ``noise_seed`` (tests only, NOT private) the generator is re-seeded
from the seed and a key per unit of work before that unit is privatized: per image (its relative
path) for ``privatize.py``, per fixed batch (``"evaluation batch k"``) for ``evaluate.py``, so the
outputs are the same however the work is batched or spread over ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from dpglow.privacy import PrivacyRecord, noise_generator
from dpglow.privatizers.base import Privatizer

# A batch -> its noise keys: one per image, or a single key for the whole batch.
NoiseKeys = Callable[[dict[str, Any]], list[str]]


def image_noise_seed(noise_seed: int, key: str) -> int:
    """The seed of one unit's noise in seeded (test) mode: 63 bits of SHA-256 of the run's
    ``noise_seed`` and the unit's key, so it gets the same noise wherever it is computed."""
    digest = hashlib.sha256(f"{noise_seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class PrivatizeModule(pl.LightningModule):
    """``predict_step(batch)``: ``batch["images"]`` (uint8, or ``None`` when a batch holds only
    unreadable files) -> the same dict with ``"released"`` added (and, with a ``classifier``, the
    classifier's ``priv_scores`` / ``priv_emb`` of the released images and, with
    ``score_originals``, ``orig_scores`` / ``orig_emb``). A batch that already carries
    ``"released"`` (a cached release) is only scored.

    ``record`` is the privatizer's record for this run's noise source, set before the first batch.
    """

    def __init__(
        self,
        privatizer: Privatizer,
        *,
        noise_keys: NoiseKeys,
        noise_seed: int | None = None,
        classifier: torch.nn.Module | None = None,
        score_originals: bool = False,
    ) -> None:
        super().__init__()
        self.privatizer = privatizer
        # Registered, so Lightning moves them to the device.
        self.parts = torch.nn.ModuleDict(privatizer.modules())
        self.classifier = classifier
        self.noise_keys, self.noise_seed = noise_keys, noise_seed
        self.score_originals = score_originals
        self.generator: torch.Generator | None = None
        self.noise_source: str | None = None
        self.record: PrivacyRecord | None = None

    def on_predict_start(self) -> None:
        self.generator, self.noise_source = noise_generator(
            noise_seed=self.noise_seed, device=self.device
        )
        self.record = self.privatizer.record(noise_source=self.noise_source)

    def release(
        self, images: torch.Tensor, keys: list[str], names: list[str] | None = None
    ) -> torch.Tensor:
        """``images`` (named ``names``, when known) privatized: in one call, or per key in
        seeded mode."""
        common = {"generator": self.generator, "noise_source": self.noise_source}
        if self.noise_seed is None:
            return self.privatizer(images, names=names, **common)
        per_image = len(keys) == len(images)
        chunks = images.split(1) if per_image else [images]
        if len(keys) != len(chunks):
            raise ValueError(f"{len(keys)} noise keys for a batch of {len(images)} images")
        outputs = []
        for i, (chunk, key) in enumerate(zip(chunks, keys, strict=True)):
            # Re-seeding keeps the generator registered as seeded (NOT PRIVATE) in the records.
            self.generator.manual_seed(image_noise_seed(self.noise_seed, key))
            chunk_names = None if names is None else (names[i : i + 1] if per_image else names)
            outputs.append(self.privatizer(chunk, names=chunk_names, **common))
        return torch.cat(outputs)

    def _scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, embeddings = self.classifier.score_and_embed(images)
        return scores.float().cpu(), embeddings.float().cpu()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = dict(batch)
        images = out.pop("images")
        if images is None:
            out["released"] = None
            return out
        released = batch.get("released")
        if released is None:
            released = self.release(images, self.noise_keys(batch), batch.get("names"))
        out["released"] = released.cpu()
        if self.classifier is not None:
            if self.score_originals:
                out["orig_scores"], out["orig_emb"] = self._scores(images)
            out["priv_scores"], out["priv_emb"] = self._scores(released)
        return out
