"""Callbacks: per-step timing and peak memory (run summaries, benchmarks), and an exponential
moving average of the weights for evaluation and release."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn

from dpglow.utils.memory import peak_rss_mb


class StepTimer(pl.Callback):
    """Wall time of each training step (forward, backward, optimizer), skipping the first
    ``warmup`` steps (allocator and kernel autotuning), and peak memory at the end of fit."""

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup
        self.durations: list[float] = []
        self._start = 0.0
        self._seen = 0
        self._cuda_peak_mb: float | None = None

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: Any, batch_idx: int) -> None:
        self._sync(pl_module)
        self._seen += 1
        if self._seen > self.warmup:
            self.durations.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer, pl_module) -> None:
        # Read before Lightning moves the model back to the CPU at teardown.
        if pl_module.device.type == "cuda":
            self._cuda_peak_mb = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
            self._cuda_name = torch.cuda.get_device_name(pl_module.device)

    def summary(self, pl_module: pl.LightningModule) -> dict[str, float | str]:
        stats: dict[str, float | str] = {"peak_rss_mb": peak_rss_mb()}
        if self._cuda_peak_mb is not None:
            stats["cuda_max_allocated_mb"] = round(self._cuda_peak_mb, 1)
            stats["cuda_device_name"] = self._cuda_name
        if self.durations:
            stats["step_seconds_median"] = round(statistics.median(self.durations), 4)
            stats["step_seconds_min"] = round(min(self.durations), 4)
            stats["step_seconds_max"] = round(max(self.durations), 4)
            stats["timed_steps"] = len(self.durations)
        return stats


class EMAWeights(EMAWeightAveraging):
    """Lightning's EMA of the weights (Polyak averaging, ``decay`` per step): validation, the
    checkpoints' ``state_dict`` (what ``load_flow`` releases with) and the end of training use the
    average; the raw weights travel in the checkpoint for an exact resume.

    One change to Lightning's callback: loading a checkpoint outside fitting (``trainer.test`` of
    the best checkpoint) keeps the averaged weights it holds, instead of swapping the raw ones
    back in, so the reported test bits/dim are those of the weights that get released.
    """

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
