"""What a trained flow is conditioned on (``model.condition``), and its sample-grid labels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dpglow.flow import Glow

# none: p(x); labels: p(x | y), y the image's label vector over the dataset's pathologies.
CONDITIONS = ("none", "labels")

# The sample grid of a conditional flow: sample 2k has all-zero labels, sample 2k + 1 the same
# latent and the one-hot labels of pathology k mod m (the tag goes into the grid's file name).
GRID_TAG = "labels-zero-onehot"


def grid_labels(num_samples: int, num_conditions: int, device: torch.device | str) -> torch.Tensor:
    """``[num_samples, m]``: row ``2k`` all zeros, row ``2k + 1`` the one-hot vector of
    pathology ``k mod m``."""
    y = torch.zeros(num_samples, num_conditions, device=device)
    odd = torch.arange(1, num_samples, 2, device=device)
    y[odd, (odd // 2) % num_conditions] = 1.0
    return y


@torch.no_grad()
def label_grid_samples(
    net: Glow, num_samples: int, *, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """Decode ``num_samples`` draws of a conditional flow with :func:`grid_labels`: consecutive
    pairs share one latent drawn at ``temperature``, so each pair shows what the label changes."""
    device = next(net.parameters()).device
    pairs = math.ceil(num_samples / 2)
    latents = [
        (
            torch.randn((pairs, *shape), generator=generator, device=device) * temperature
        ).repeat_interleave(2, dim=0)[:num_samples]
        for shape in net.latent_shapes
    ]
    return net.decode(latents, y=grid_labels(num_samples, net.num_conditions, device))


def grid_caption(pathologies: Sequence[str], num_samples: int) -> str:
    """Which labels the grid's samples have, for the log and the loggers' captions."""
    shown = [pathologies[k % len(pathologies)] for k in range(math.ceil(num_samples / 2))]
    return (
        "pairs of samples share a latent; first of each pair: all-zero labels, second: "
        f"one-hot {', '.join(shown)} (pair by pair)"
    )
