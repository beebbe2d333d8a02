"""The realism columns of an evaluation row (docs/evaluation.md, "Realism"): can a fixed, simple
discriminator (:func:`dpglow.metrics.discriminator_auc`) tell the released images from real ones?

- ``realism/auc``: the released set against the same originals, paired (an original and its
  release never sit in different folds). The originals are the evaluation's images at the flow's
  resolution, i.e. exactly what the project releases at epsilon = inf (the flow's inverse is exact
  to 1e-5, below uint8 rounding), so resizing cannot give a release away.
- ``realism/prior_auc``: as many prior samples of the flow, at the row's temperature, against the
  originals (unpaired): how real the public model alone looks (for a refined release, the
  samples refined by its refiner: how real the public model and the refiner look).
- ``realism/control_auc``: two random halves of the originals against each other: what "cannot
  tell them apart" scores on this many images (about 0.5, with a spread of a few hundredths).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dpglow.data.subsets import tensor_digest
from dpglow.evaluation.shards import privatize_in_batches
from dpglow.metrics import discriminator_auc, real_vs_real_auc
from dpglow.privatizers import PriorSamples
from dpglow.utils.cache import cached, key_of

log = logging.getLogger(__name__)

# The discriminator's fold seed: fixed, so two rows of a sweep are scored on the same folds.
SEED = 0
FOLDS = 5
# The control splits the originals into halves of at least FOLDS images each.
MIN_IMAGES = 2 * FOLDS


def prior_samples(
    flow: Any,
    *,
    n: int,
    temperature: float,
    noise_seed: int | None,
    batch_size: int,
    device: torch.device,
    cache_dir: Path | None,
    flow_sha256: str,
    refine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """``n`` uint8 prior samples of ``flow`` at ``temperature`` (cached per sweep), passed
    through ``refine`` when given (a refined release's refiner), or None for a conditional flow
    (its prior needs labels: the release's own rows measure it)."""
    if flow is None or flow.num_conditions:
        return None
    key = key_of([flow_sha256, float(temperature), int(n), noise_seed, batch_size])
    if refine is not None:
        samples = prior_samples(
            flow,
            n=n,
            temperature=temperature,
            noise_seed=noise_seed,
            batch_size=batch_size,
            device=device,
            cache_dir=cache_dir,
            flow_sha256=flow_sha256,
        )
        return torch.cat([refine(chunk.to(device)).cpu() for chunk in samples.split(batch_size)])

    def make() -> dict[str, torch.Tensor]:
        sampler = PriorSamples(flow=flow.to(device), temperature=temperature)
        blank = torch.zeros(n, 1, flow.image_size, flow.image_size, dtype=torch.uint8)
        out = privatize_in_batches(
            sampler, blank, noise_seed=noise_seed, batch_size=batch_size, device=device
        )
        return {"images": out["images"].cpu()}

    return cached(cache_dir, "prior_samples", key, make)["images"]


def _references(originals: torch.Tensor, prior: torch.Tensor | None) -> dict[str, float]:
    """The columns that depend on the originals and the prior samples only (shared by a sweep)."""
    row = {
        "realism/control_auc": real_vs_real_auc(originals, seed=SEED),
        "realism/prior_auc": math.nan,
    }
    if prior is not None:
        row["realism/prior_auc"] = discriminator_auc(originals, prior, seed=SEED, paired=False)
    return row


def realism_columns(
    originals: torch.Tensor,
    released: torch.Tensor,
    prior: torch.Tensor | None,
    *,
    cache_dir: Path | None = None,
) -> dict[str, float]:
    """The three realism columns (see the module docstring); ``prior`` None leaves its NaN, and
    fewer than :data:`MIN_IMAGES` images leave all three NaN (too few for 5 folds of halves).
    The control and prior columns are computed once per sweep (``cache_dir``)."""
    if len(originals) < MIN_IMAGES:
        log.info(
            "realism: %d images are too few (need %d); columns left NaN", len(originals), MIN_IMAGES
        )
        return dict.fromkeys(("realism/auc", "realism/control_auc", "realism/prior_auc"), math.nan)
    digests = [tensor_digest(originals), None if prior is None else tensor_digest(prior), SEED]
    row = {"realism/auc": discriminator_auc(originals, released, seed=SEED, paired=True)}
    row.update(
        cached(
            cache_dir, "realism_references", key_of(digests), lambda: _references(originals, prior)
        )
    )
    log.info(
        "realism: discriminator AUC %.3f for the release, %.3f for prior samples, %.3f between "
        "two halves of the originals",
        row["realism/auc"],
        row["realism/prior_auc"],
        row["realism/control_auc"],
    )
    return row
