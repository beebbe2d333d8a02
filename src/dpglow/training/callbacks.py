"""Callbacks: per-step timing and peak memory, for run summaries and benchmarks."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import pytorch_lightning as pl
import torch


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


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
        stats: dict[str, float | str] = {"peak_rss_mb": round(peak_rss_mb(), 1)}
        if self._cuda_peak_mb is not None:
            stats["cuda_max_allocated_mb"] = round(self._cuda_peak_mb, 1)
            stats["cuda_device_name"] = self._cuda_name
        if self.durations:
            stats["step_seconds_median"] = round(statistics.median(self.durations), 4)
            stats["step_seconds_min"] = round(min(self.durations), 4)
            stats["step_seconds_max"] = round(max(self.durations), 4)
            stats["timed_steps"] = len(self.durations)
        return stats
