"""Label-level evaluation of the label channel on NIH's label table (no images).

``python src/evaluate_labels.py [epsilons=[1,3,5,10]]``: per-label randomized response against
the label-set mechanism, settings chosen on public-validation patients, reported on private ones.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.utils.runs import run_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate_labels")
def main(cfg: DictConfig) -> None:
    from dpglow.evaluation.task import evaluate_labels

    run_task(evaluate_labels, cfg)


if __name__ == "__main__":
    main()
