"""Speed, memory and held-out bits/dim of glow_32/64/128 (glow_256 on a GPU) and the named
reference configurations, and the release's own throughput: ``python src/benchmark.py``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.utils.runs import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    from dpglow.benchmark.task import benchmark

    run_task(benchmark, cfg)


if __name__ == "__main__":
    main()
