"""Noise per element for each mechanism at per-image epsilons: ``python src/noise_table.py``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.utils.runs import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="noise_table")
def main(cfg: DictConfig) -> None:
    from dpglow.benchmark.task import noise_table

    run_task(noise_table, cfg)


if __name__ == "__main__":
    main()
