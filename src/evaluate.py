"""Evaluate DP-GLOW: do pathologies survive privatization, can patients be re-identified?

``python src/evaluate.py -m epsilon=0.5,1,2,5 privacy=laplace_l1,gaussian_l2`` (rows merged into
``results.csv`` / ``results.md`` / plots in the sweep folder when the multirun ends).
"""

from __future__ import annotations

import math

import hydra
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.utils.runs import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from dpglow.evaluation.task import evaluate

    row, _ = run_task(evaluate, cfg)
    value = row.get(cfg.get("optimized_metric") or "")
    # Optuna needs a number; a setting without classifier skill left scores as chance.
    return None if value is None else (0.0 if math.isnan(value) else float(value))


if __name__ == "__main__":
    main()
