"""Learning-rate schedules (picklable, so their state lives in checkpoints)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Linear warm-up from ~0 over ``warmup_steps``, then constant, or a cosine decay to
    ``min_factor`` over ``total_steps`` when given. Glow diverges without warm-up at lr 1e-3."""

    def __init__(self, warmup_steps: int, total_steps: int | None = None, min_factor: float = 0.1):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_factor = min_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not self.total_steps or self.total_steps <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: Optimizer,
    *,
    warmup_steps: int = 200,
    total_steps: int | None = None,
    min_factor: float = 0.1,
) -> LambdaLR:
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_factor))


def build_optimizers(
    module: nn.Module,
    optimizer: Callable[..., Optimizer] | None,
    scheduler: Callable[..., Any] | None = None,
) -> dict:
    """``configure_optimizers`` from the config's partials; the schedule steps every batch."""
    if optimizer is None:
        raise ValueError(
            f"{type(module).__name__} needs an optimizer to train (model.optimizer in the config)"
        )
    opt = optimizer(params=module.parameters())
    if scheduler is None:
        return {"optimizer": opt}
    return {
        "optimizer": opt,
        "lr_scheduler": {"scheduler": scheduler(optimizer=opt), "interval": "step", "frequency": 1},
    }
