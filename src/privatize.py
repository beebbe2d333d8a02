"""Privatize chest X-rays with DP-GLOW.

``python src/privatize.py flow.ckpt_path=... input_dir=... output_dir=... privacy=laplace_l1``
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.utils.runs import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="privatize")
def main(cfg: DictConfig) -> None:
    from dpglow.release.task import privatize

    counts, _ = run_task(privatize, cfg)
    if counts["failed"] and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)  # some inputs could not be privatized: the manifest lists them


if __name__ == "__main__":
    main()
