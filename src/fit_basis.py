"""Fit the subspace basis of ``privacy=subspace`` / ``label_channel`` on a flow's training split.

``python src/fit_basis.py flow.ckpt_path=<run>/checkpoints/last.ckpt basis.kind=supervised``
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.utils.runs import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="fit_basis")
def main(cfg: DictConfig) -> None:
    from dpglow.privatizers.task import fit_basis

    run_task(fit_basis, cfg)


if __name__ == "__main__":
    main()
