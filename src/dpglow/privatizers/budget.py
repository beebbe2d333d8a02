"""How a per-image epsilon is split between the label channel and the latent (detail) channel."""

from __future__ import annotations

import math
from typing import Any


def check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"label_fraction must be a number in [0, 1], got {value!r}")
    return float(value)


def check_cap(max_label_epsilon: float | None) -> float | None:
    """``max_label_epsilon`` as a float (None: no cap); it must be positive."""
    if max_label_epsilon is None:
        return None
    if isinstance(max_label_epsilon, bool) or not max_label_epsilon > 0:
        raise ValueError(f"max_label_epsilon must be > 0, got {max_label_epsilon!r}")
    return float(max_label_epsilon)


def split_budget(
    epsilon: float, *, label_fraction: float, max_label_epsilon: float | None
) -> tuple[float, float]:
    """(epsilon for the labels, epsilon for the latent directions), summing to ``epsilon``: the
    labels get ``label_fraction`` of it, at most ``max_label_epsilon`` (past that the labels'
    randomized response is below the labeler's own error, so the rest goes to the latents)."""
    f = label_fraction
    eps_label = epsilon * f if f > 0 else 0.0  # (never inf * 0)
    eps_latent = epsilon * (1 - f) if f < 1 else 0.0
    cap = check_cap(max_label_epsilon)
    if cap is not None and math.isfinite(eps_label) and eps_label > cap:
        eps_latent += eps_label - cap
        eps_label = cap
    return eps_label, eps_latent
