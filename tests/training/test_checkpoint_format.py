"""The model.net node through a real GlowModule checkpoint: the flow's full config is stored as
plain data, rebuilds the module and the flow, and architecture() compares it with a config."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from conftest import compose_run
from dpglow.flow import CheckpointError, Glow, architecture, load_flow
from dpglow.training import GlowModule


def _fit_and_save(module: GlowModule, path: Path, *, size: int, labels: int = 0) -> Path:
    """One training step on random uint8 images (with labels for a conditional flow), saved."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 1, size, size), dtype=torch.uint8, generator=gen)
    rows = [{"image": im} for im in images]
    if labels:
        for i, row in enumerate(rows):
            row["labels"] = torch.tensor([float((i + j) % 2) for j in range(labels)])
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        default_root_dir=path.parent,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(rows, batch_size=2))
    trainer.save_checkpoint(path)
    return path


def _model_cfg(tmp_path: Path, *overrides: str):
    return compose_run("train", list(overrides), tmp_path / "run").model


def test_glow_64_checkpoint_matches_its_model_net_and_not_another_depth(tmp_path):
    cfg = _model_cfg(tmp_path, "model=glow_64", "model.num_samples=0")
    module = instantiate(cfg)
    assert module.hparams.net == module.net.config  # the full config, a plain dict
    ckpt = _fit_and_save(module, tmp_path / "glow_64.ckpt", size=64)

    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert stored["hyper_parameters"]["net"] == module.net.config
    assert "optimizer" not in stored["hyper_parameters"]
    net_config = stored["dpglow"]["net_config"]
    assert architecture(cfg.net) == architecture(net_config)
    assert architecture(cfg.net)["depth"] == 8 and architecture(cfg.net)["hidden_channels"] == 128
    flow, info = load_flow(ckpt, expected=architecture(cfg.net))
    assert info["net_config"] == net_config and flow.image_size == 64

    deeper = _model_cfg(tmp_path, "model=glow_64", "model.net.depth=16")
    assert architecture(deeper.net) != architecture(net_config)
    with pytest.raises(CheckpointError, match="depth: checkpoint 8 vs config 16"):
        load_flow(ckpt, expected=architecture(deeper.net))
    # The whole model config is not a net node: a mistake, not an all-defaults architecture.
    with pytest.raises(ValueError, match=r"model\.net node"):
        architecture(cfg)


def test_conditional_net_node_round_trips_through_a_checkpoint(tmp_path):
    cfg = _model_cfg(
        tmp_path,
        "model=glow_32",
        "model.net.num_levels=2",
        "model.net.depth=1",
        "model.net.hidden_channels=8",
        "model.net.condition_split_priors=true",
        "model.condition=labels",
        "model.num_samples=0",
    )
    module = instantiate(cfg, condition_pathologies=["A", "B"])
    assert module.net.config["num_conditions"] == 2
    assert module.net.config["condition_split_priors"] is True
    ckpt = _fit_and_save(module, tmp_path / "conditional.ckpt", size=32, labels=2)

    loaded = GlowModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert loaded.net.config == module.net.config == loaded.hparams.net
    assert loaded.condition_pathologies == ["A", "B"]
    assert all(level.label_prior is not None for level in loaded.net.levels)
    x, y = torch.rand(2, 1, 32, 32) - 0.5, torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.net.log_prob(x, y=y), module.net.cpu().eval().log_prob(x, y=y)
        )
    # A conditional checkpoint never equals a model.net node (it has no num_conditions) ...
    assert architecture(cfg.net) != architecture(loaded.net.config)
    # ... yet loads when the rest of its architecture is the configured one.
    flow, info = load_flow(ckpt, expected=architecture(cfg.net))
    assert flow.num_conditions == 2 and info["condition_pathologies"] == ["A", "B"]


def test_net_config_must_agree_with_the_condition_pathologies():
    config = {"image_size": 16, "num_levels": 2, "depth": 1, "hidden_channels": 8}
    assert GlowModule(net=config).net.num_conditions == 0
    conditional = {**config, "num_conditions": 2}
    module = GlowModule(net=conditional, condition="labels", condition_pathologies=["A", "B"])
    assert module.net.num_conditions == 2
    with pytest.raises(ValueError, match="num_conditions=2 but condition_pathologies names 1"):
        GlowModule(net=conditional, condition="labels", condition_pathologies=["A"])
    with pytest.raises(ValueError, match=r"condition_split_priors need model\.condition=labels"):
        GlowModule(net={**config, "condition_split_priors": True})
    with pytest.raises(TypeError, match="_partial_: true"):
        GlowModule(net=Glow(**config))
