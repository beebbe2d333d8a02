"""Noise per element for each mechanism at per-image epsilons: ``python src/noise_table.py``."""

from __future__ import annotations

import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="noise_table")
def main(cfg: DictConfig) -> None:
    from pathlib import Path

    from dpglow.evaluation.noise_table import noise_scale_rows, scale_cell
    from dpglow.utils.tables import markdown_table

    flow = instantiate(cfg.model).net  # the architecture only: the calibration needs no weights
    rows = noise_scale_rows(
        flow, epsilons=list(cfg.epsilons), delta=cfg.delta, dp_pix_cell=cfg.dp_pix_cell
    )
    table = markdown_table(rows, fmt=scale_cell)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "noise_table.md").write_text(table + "\n")
    size = cfg.model.net.image_size
    log.info("noise scale per element (%s, delta=%g):\n%s", size, cfg.delta, table)


if __name__ == "__main__":
    main()
