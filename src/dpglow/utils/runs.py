"""Wrapper for entry points: one failed job in a multirun must not poison the next."""

from __future__ import annotations

import logging
from collections.abc import Callable

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def run_task(task: Callable[[DictConfig], tuple[dict, dict]], cfg: DictConfig) -> tuple[dict, dict]:
    try:
        return task(cfg)
    finally:
        # Close a W&B run even when the task failed, so the next job of a sweep starts clean.
        import sys

        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                log.info("closing W&B run %s", wandb.run.id)
                wandb.finish()
