"""Train a refiner for a flow's releases on public data only:
``python src/train_refiner.py [flow.ckpt_path=<run>/checkpoints/<best>.ckpt]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.utils.runs import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_refiner")
def main(cfg: DictConfig) -> float | None:
    from dpglow.refiner.config import resolve_flow
    from dpglow.training.task import train

    metrics, _ = run_task(train, resolve_flow(cfg))
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
