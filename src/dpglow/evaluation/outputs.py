"""What an evaluation job leaves behind: ``row.json``, the image strips of the sweep's grid, a
log line, and the row sent to the configured loggers (one W&B run per job)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from dpglow.evaluation.layout import ORIGINALS_FILE, ROW_FILE, SAMPLES_FILE, sweep_dir
from dpglow.utils.files import atomic_write_text
from dpglow.utils.instantiate import instantiate_loggers

log = logging.getLogger(__name__)


def strip(images: torch.Tensor) -> np.ndarray:
    """uint8 [K, 1, S, S] -> one row image [S, K*S]."""
    return torch.cat(list(images[:, 0]), dim=1).numpy()


def write_job(
    out_dir: Path,
    row: dict[str, Any],
    *,
    originals: torch.Tensor,
    released: torch.Tensor,
    k: int,
    more_releases: list[torch.Tensor] = (),
) -> None:
    """``row.json`` (atomically), the first ``k`` originals as a strip, and their releases as
    strips stacked one under the other: the evaluated release, then each of ``more_releases``
    (further independent releases of the same ``k`` images, so that diversity shows)."""
    atomic_write_text(out_dir / ROW_FILE, json.dumps(row, indent=2))
    k = min(int(k), len(originals))
    Image.fromarray(strip(originals[:k])).save(out_dir / ORIGINALS_FILE)
    rows = [strip(released[:k])] + [strip(more[:k]) for more in more_releases]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out_dir / SAMPLES_FILE)
    log.info(
        "%s eps/image=%.4g: AUC %.3f -> %.3f (retention %.3f), linkage top-1 pixel %.3f / "
        "embedding %.3f (chance %.3f)",
        row["mechanism"],
        row["epsilon_per_image"],
        row["u1/auc_orig_mean"],
        row["u1/auc_priv_mean"],
        row["u1/retention"],
        row["p1/pixel_top1"],
        row["p1/embed_top1"],
        row["p1/chance_top1"],
    )


def log_row(cfg: DictConfig, row: dict[str, Any], out_dir: Path) -> None:
    """Send the row's finite numbers, the config and (W&B) the row as a table and the strips to
    ``cfg.logger``'s loggers; W&B runs are grouped by the sweep."""
    logger_cfg = cfg.get("logger")
    if logger_cfg and "wandb" in logger_cfg:
        # One W&B run per job, grouped by the sweep, so the dashboard compares its settings.
        with open_dict(cfg):
            logger_cfg.wandb.group = f"{cfg.task_name}-{sweep_dir(cfg).name}"
            logger_cfg.wandb.name = logger_cfg.wandb.get("name") or out_dir.name
    loggers = instantiate_loggers(logger_cfg)
    if not loggers:
        return
    numeric = {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)
        logger.log_metrics(numeric)
        if hasattr(logger, "log_table"):  # W&B: the row as a table, and the image strips
            columns = list(row)
            logger.log_table(key="results", columns=columns, data=[[row[c] for c in columns]])
            logger.log_image(
                key="privatized",
                images=[str(out_dir / ORIGINALS_FILE), str(out_dir / SAMPLES_FILE)],
                caption=[
                    "original",
                    f"{row['mechanism']} eps/image={row['epsilon_per_image']:.4g}",
                ],
            )
        logger.save()
        logger.finalize("success")
