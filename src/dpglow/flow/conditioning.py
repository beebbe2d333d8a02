"""Class conditioning of a latent's prior on a label vector (Glow's y-conditioning)."""

from __future__ import annotations

import math

import torch
from torch import nn

# log sigma(y) = B * tanh(raw / B) lies in (-B, B), so sigma(y) lies in (e^-3, e^3) ~ (0.05, 20):
# decoding multiplies a (bounded) latent by at most e^3, and any finite latent stays finite.
LOG_SCALE_BOUND = 3.0


def flow_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label vector a conditional flow sees for a batch's ``labels`` ``[B, m]`` (1 present,
    0 absent, NaN unknown): float32 with NaN replaced by 0, i.e. an unknown label counts as
    absent."""
    return torch.nan_to_num(labels.to(torch.float32), nan=0.0)


def check_labels(y: torch.Tensor | None, *, num_conditions: int, batch_size: int) -> None:
    """Raise a ValueError unless ``y`` suits a flow conditioned on ``num_conditions`` labels.

    A conditional flow (``num_conditions = m > 0``) needs a floating-point ``y`` of shape
    ``[batch_size, m]`` with every entry in [0, 1] (NaN is refused); an unconditional flow
    (``m = 0``) refuses any ``y``.
    """
    if num_conditions == 0:
        if y is not None:
            raise ValueError(
                "this Glow is unconditional (num_conditions=0) but a label vector y was given: "
                "drop y, or use a flow trained with model.condition=labels"
            )
        return
    if y is None:
        raise ValueError(
            f"this Glow is conditioned on {num_conditions} labels (num_conditions="
            f"{num_conditions}): pass y, a float label vector of shape [B, {num_conditions}] "
            "with entries in [0, 1]"
        )
    if (
        not torch.is_floating_point(y)
        or y.dim() != 2
        or tuple(y.shape)
        != (
            batch_size,
            num_conditions,
        )
    ):
        raise ValueError(
            f"y must be a float tensor of shape [{batch_size}, {num_conditions}], got "
            f"{y.dtype} of shape {list(y.shape)}"
        )
    if not bool(((y >= 0) & (y <= 1)).all()):
        raise ValueError(
            "y must lie in [0, 1] (1 present, 0 absent); NaN is not a label: replace unknown "
            "labels before calling the flow"
        )


class LabelPrior(nn.Module):
    """Zero-initialised linear map from labels ``y`` ``[B, m]`` to a Gaussian's parameters for
    every element of a latent of shape ``(C, H, W)``.

    With ``n = C * H * W``: ``p = (y W^T + b) * exp(3 g)`` (``W`` ``[2n, m]``, ``b`` and ``g``
    ``[2n]``, all zero at initialisation, as openai/glow's ``linear_zeros``); the first ``n``
    entries of ``p`` are the mean ``mu(y)``, the last ``n`` the raw log-scale ``r``, and
    ``log sigma(y) = B * tanh(r / B)`` with ``B =`` :data:`LOG_SCALE_BOUND`, each reshaped to
    ``[B, C, H, W]`` element by element. At initialisation ``mu = 0`` and ``sigma = 1``.
    """

    def __init__(self, num_conditions: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        n = math.prod(self.shape)
        self.linear = nn.Linear(num_conditions, 2 * n)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.log_gain = nn.Parameter(torch.zeros(2 * n))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu(y), log sigma(y))``, each ``[B, C, H, W]``, in the parameters' dtype (also under
        mixed-precision autocast: they standardise the latent, at negligible cost)."""
        if torch.is_autocast_enabled(y.device.type):
            with torch.autocast(y.device.type, enabled=False):
                return self(y)
        params = self.linear(y.to(self.linear.weight.dtype)) * torch.exp(self.log_gain * 3)
        mean, raw = params.view(len(y), 2, *self.shape).unbind(1)
        return mean, LOG_SCALE_BOUND * torch.tanh(raw / LOG_SCALE_BOUND)
