"""A tiny flow and a tiny classifier trained on the same patient-grouped split of real pediatric
X-rays, in run folders laid out as train.py / train_classifier.py write them."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose_run, tiny_overrides
from dpglow.data import default_data_dir

# The evaluation data: shared by the models' training and every evaluation in these tests.
DATA = ["data=pediatric", "data.max_images=360"]
CLASSIFIER = [
    "model.image_size=32",
    "model.growth_rate=8",
    "model.block_config=[2,2]",
    "model.num_init_features=16",
]


def _train(config_name: str, run_dir: Path, cache: Path, overrides: list[str]) -> Path:
    from dpglow.training.task import train

    cfg = compose_run(
        config_name, [*tiny_overrides(cache, tiny_model=False), *DATA, *overrides], run_dir
    )
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save({k: v for k, v in cfg.items() if k != "hydra"}, run_dir / ".hydra/config.yaml")
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def eval_models(tmp_path_factory) -> dict[str, Path]:
    """{"flow", "classifier", "labeler", "log_dir", "cache"}: checkpoints under
    log_dir/<task>/runs/."""
    if default_data_dir() is None:
        pytest.skip("no chest X-ray data")
    root = tmp_path_factory.mktemp("eval_models")
    log_dir, cache = root / "outputs", root / "cache"
    flow = _train(
        "train",
        log_dir / "train" / "runs" / "flow",
        cache,
        [
            "model=glow_32",
            "model.net.num_levels=2",
            "model.net.depth=2",
            "model.net.hidden_channels=16",
            "model.optimizer.lr=1e-3",
            "data.batch_size=8",
            "trainer.limit_train_batches=30",
            "test=false",
        ],
    )
    classifier = _train(
        "train_classifier",
        log_dir / "train_classifier" / "runs" / "classifier",
        cache,
        [
            *CLASSIFIER,
            "data.batch_size=16",
            "trainer.max_epochs=4",
            "trainer.limit_train_batches=null",
            "test=false",
        ],
    )
    # The default privatizer's labeler: a classifier of its own (not the evaluation classifier).
    labeler = _train(
        "train_release_classifier",
        log_dir / "train_release_classifier" / "runs" / "labeler",
        cache,
        [*CLASSIFIER, "data.batch_size=16", "trainer.max_epochs=2", "test=false"],
    )
    return {
        "flow": flow,
        "classifier": classifier,
        "labeler": labeler,
        "log_dir": log_dir,
        "cache": cache,
    }


@pytest.fixture(scope="session")
def eval_refiner(eval_models) -> tuple[Path, dict]:
    """(checkpoint, metrics) of a refiner trained a few steps on the tiny flow's prior samples,
    laid out as ``python src/train_refiner.py`` writes it."""
    from dpglow.refiner.config import resolve_flow
    from dpglow.training.task import train

    run_dir = eval_models["log_dir"] / "train_refiner" / "runs" / "refiner"
    overrides = [
        *tiny_overrides(eval_models["cache"], tiny_model=False),
        *DATA,
        f"flow.ckpt_path={eval_models['flow']}",
        "model.net.channels=4",
        "model.net.blocks=1",
        "model.discriminator_channels=4",
        "model.pool_size=32",
        "model.val_pool_size=16",
        "model.lr=1e-2",
        "data.batch_size=8",
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=2",
        "trainer.val_check_interval=3",
    ]
    cfg = compose_run("train_refiner", overrides, run_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save({k: v for k, v in cfg.items() if k != "hydra"}, run_dir / ".hydra/config.yaml")
    metrics, _ = train(resolve_flow(cfg))
    return run_dir / "checkpoints" / "last.ckpt", metrics
