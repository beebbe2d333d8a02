"""Every config group composes, and every model config builds its flow."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from dpglow.training import GlowModule

SMALL_MODELS = ["glow_32", "glow_64", "glow_128"]


@pytest.mark.parametrize("model", SMALL_MODELS)
def test_model_configs_instantiate(compose_train, model):
    cfg = compose_train(f"model={model}", tiny_model=False)
    module = instantiate(cfg.model)
    assert isinstance(module, GlowModule)
    assert module.net.image_size == cfg.model.net.image_size
    assert len(module.net.levels) == cfg.model.net.num_levels
    assert module.net.config["split_prior"] == "fixed"
    assert module.net.config["depth"] == cfg.model.net.depth
    # The flow's full config (plain data) is a hyperparameter: checkpoints rebuild it.
    assert module.hparams.net == module.net.config
    assert "optimizer" not in module.hparams and "scheduler" not in module.hparams


@pytest.mark.slow
def test_glow_256_is_the_authors_configuration(compose_train):
    cfg = compose_train("model=glow_256", tiny_model=False)
    module = instantiate(cfg.model)
    net = module.net
    assert (net.image_size, len(net.levels), len(net.levels[0].steps)) == (256, 6, 32)
    assert net.levels[0].steps[0].coupling.net[0].out_channels == 512
    assert net.config["split_prior"] == "fixed" and net.config["affine"]
    assert sum(u[0] * u[1] * u[2] for u in net.latent_shapes) == 65_536


@pytest.mark.parametrize(
    "data", ["nih", "pediatric", "chexpert", "folder", "chestmnist", "pneumoniamnist"]
)
def test_data_configs_compose(compose_train, data):
    cfg = compose_train(f"data={data}")
    assert cfg.data._target_.endswith("ChestXrayDataModule")
    assert cfg.data.image_size == cfg.model.net.image_size


def test_experiment_configs_compose(compose_train):
    paper = compose_train("experiment=paper", tiny_model=False)
    # The data follow the model's resolution through ${image_size}, whatever the experiment sets.
    assert paper.data.image_size == paper.model.net.image_size == paper.image_size == 256
    assert paper.data.source._target_.endswith("NIHSource")
    long = compose_train("experiment=pediatric_64_long", tiny_model=False)
    assert long.data.image_size == long.model.net.image_size == long.image_size
    # The long run keeps the README's budget: at most 60 minutes of fitting ("DD:HH:MM:SS").
    days, hours, minutes, seconds = (int(x) for x in long.trainer.max_time.split(":"))
    assert 0 < ((days * 24 + hours) * 60 + minutes) * 60 + seconds <= 3600
    net = instantiate(long.model).net
    assert len(net.levels) == long.model.net.num_levels
    assert all(len(level.steps) == long.model.net.depth for level in net.levels)
    # ...and trains on random zoomed crops, with the dequantisation the demo uses.
    zoom = instantiate(long.data.augment)
    assert (zoom.source_size, zoom.min_scale) == (224, 0.85)
    assert "dequantizer" not in long.model


def test_data_dir_is_found_without_configuration(compose_train, data_dir):
    cfg = compose_train()
    assert cfg.paths.data_dir == str(data_dir)
    assert cfg.data.root.startswith(str(data_dir))
