"""Audit a release end to end: ``python src/audit.py epsilon=3`` (the default privatizer), or
``privacy=laplace_l1 ...`` / ``privacy=pixel_laplace image_size=4``: the claimed epsilon beside a
Clopper-Pearson lower bound measured on released PNG files."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.utils.runs import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="audit")
def main(cfg: DictConfig) -> None:
    from dpglow.audit.task import audit

    run_task(audit, cfg)


if __name__ == "__main__":
    main()
