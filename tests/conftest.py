"""Shared fixtures: composed Hydra configs shrunk to tiny models, and the real data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import dpglow.data  # noqa: F401  (registers the config resolvers)
from dpglow.data import default_data_dir
from dpglow.data.paths import DATA_DIR_ENV

pytest_plugins = ["data.fixtures"]

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


TINY_MODEL = [
    "model=glow_32",
    "model.net.num_levels=2",
    "model.net.depth=1",
    "model.net.hidden_channels=8",
    "model.num_samples=4",
    "model.init_batch_size=16",
    "model.scheduler.warmup_steps=2",
]
# A tiny variational dequantiser (add to a tiny model's overrides).
TINY_DEQUANTIZER = [
    "model/dequantizer=variational",
    "model.dequantizer.depth=2",
    "model.dequantizer.hidden_channels=8",
]


def tiny_overrides(tmp_path: Path, tiny_model: bool = True) -> list[str]:
    """A model (unless ``tiny_model=False``) and trainer small enough for 2 CPU cores."""
    return [
        *(TINY_MODEL if tiny_model else []),
        "data.batch_size=4",
        "data.max_images=48",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]


REAL_DATA = default_data_dir()
# Without the real shared data the suite runs on a synthetic stand-in (tests/synthetic_data.py):
# ``pytest -p no:cacheprovider`` with DPGLOW_DATA_DIR=/nonexistent shows what a clean machine sees.
SYNTHETIC = REAL_DATA is None or not (REAL_DATA / "pediatric_pneumonia224").is_dir()


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory) -> Path:
    """The data folder every test reads: the real ``../shared/data``, else a synthetic one made
    once per session (and published through DPGLOW_DATA_DIR, so configs and subprocesses find
    it too)."""
    if not SYNTHETIC:
        return REAL_DATA
    from synthetic_data import make_synthetic_data

    root = make_synthetic_data(tmp_path_factory.mktemp("data"))
    os.environ[DATA_DIR_ENV] = str(root)
    return root


def needs_real_data(what: str) -> None:
    """Skip a test that needs the real shared data (it asserts facts about those files)."""
    if SYNTHETIC:
        pytest.skip(f"needs the real shared data ({what}); this run uses the synthetic stand-in")


def compose_run(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as its entry point would, with its run folder at
    ``output_dir`` and the Hydra runtime set, ready for the task function."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name=config_name, return_hydra_config=True, overrides=overrides)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def compose_train(tmp_path: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """compose_train(*overrides, output_dir=None, tiny_model=True) -> a ready-to-run config."""

    def _compose(
        *overrides: str, output_dir: Path | None = None, tiny_model: bool = True
    ) -> DictConfig:
        return compose_run(
            "train",
            [*tiny_overrides(tmp_path, tiny_model), *overrides],
            output_dir or tmp_path / "run",
        )

    yield _compose
    GlobalHydra.instance().clear()


def run_entry(script: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout=600):
    """Run ``python src/<script> args`` as a user would; returns the CompletedProcess."""
    full_env = os.environ | {"WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"} | (env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory, data_dir) -> Path:
    """glow_32 (L=2, K=2, width 16) after 40 steps on pediatric X-rays (or the stand-in)."""
    from dpglow.training.task import train

    tmp = tmp_path_factory.mktemp("flow")
    cfg = compose_run(
        "train",
        [
            *tiny_overrides(tmp),
            "data=pediatric",
            "model.net.depth=2",
            "model.net.hidden_channels=16",
            "model.optimizer.lr=1e-3",
            "data.max_images=200",
            "data.batch_size=8",
            "trainer.limit_train_batches=40",
            "test=false",
        ],
        tmp / "run",
    )
    train(cfg)
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def flow(trained_ckpt):
    from dpglow.flow import load_flow

    return load_flow(trained_ckpt)[0]
