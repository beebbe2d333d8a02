"""Optimisers and learning-rate schedules of every trained model (the flow, the classifiers): the
warm-up + cosine schedule (picklable, so its state lives in checkpoints) and fused Adam where
the device has it."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

# ``total_steps: auto`` in a scheduler config: the run's own length (see build_optimizers).
AUTO = "auto"


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


# Optimizers with a fused (one kernel for all parameters) implementation; on CPU, fused Adam takes
# about a third of the time of the default per-parameter one for a Glow's ~450 tensors.
_FUSABLE = (torch.optim.Adam, torch.optim.AdamW)
_FUSED_DEVICES = ("cpu", "cuda")


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether ``fused=True`` works for these parameters: floating point, on CPU or CUDA, one
    device type."""
    params = list(params)
    return (
        bool(params)
        and all(p.is_floating_point() and p.device.type in _FUSED_DEVICES for p in params)
        and len({p.device.type for p in params}) == 1
    )


def _with_fused(
    optimizer: Callable[..., Optimizer], params: list[torch.Tensor]
) -> Callable[..., Optimizer]:
    """``optimizer`` with ``fused=True`` added when it is Adam or AdamW (the config's
    ``functools.partial``, or the class itself), its ``fused`` is unset and the parameters
    support it. Anything else is left as it is; an explicit ``fused`` in the config wins."""
    func, keywords = optimizer, {}
    if isinstance(optimizer, functools.partial):
        func, keywords = optimizer.func, optimizer.keywords
    if (
        isinstance(func, type)
        and issubclass(func, _FUSABLE)
        and keywords.get("fused") is None
        and not keywords.get("foreach")
        and not keywords.get("differentiable")
        and fused_supported(params)
    ):
        return functools.partial(optimizer, fused=True)
    return optimizer


def build_optimizers(
    module: nn.Module,
    optimizer: Callable[..., Optimizer] | None,
    scheduler: Callable[..., Any] | None = None,
) -> dict:
    """``configure_optimizers`` from the config's partials; the schedule steps every batch.

    Adam and AdamW run fused where the parameters allow it (:func:`fused_supported`). A scheduler
    partial with ``total_steps="auto"`` gets the run's length as Lightning estimates it
    (``trainer.estimated_stepping_batches``: ``max_steps``, else ``max_epochs`` times the batches
    per epoch), so a cosine ends where the run does; a run bounded by ``max_time`` alone needs
    ``trainer.max_steps`` for that."""
    if optimizer is None:
        raise ValueError(
            f"{type(module).__name__} needs an optimizer to train (model.optimizer in the config)"
        )
    params = list(module.parameters())
    opt = _with_fused(optimizer, params)(params=params)
    if scheduler is None:
        return {"optimizer": opt}
    if isinstance(scheduler, functools.partial) and scheduler.keywords.get("total_steps") == AUTO:
        steps = module.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError(
                "model.scheduler.total_steps=auto needs a run of known length: set "
                "trainer.max_steps (or max_epochs), or give total_steps as a number"
            )
        scheduler = functools.partial(scheduler, total_steps=int(steps))
    return {
        "optimizer": opt,
        "lr_scheduler": {"scheduler": scheduler(optimizer=opt), "interval": "step", "frequency": 1},
    }
