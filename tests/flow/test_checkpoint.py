"""dpglow.flow.checkpoint: architecture() of configs and net_configs, and load_flow of checkpoints
written by hand in the current and the old (flat hyperparameters) format."""

from __future__ import annotations

import pytest
import torch

from dpglow.flow import CHECKPOINT_KEY, CheckpointError, Glow, architecture, load_flow

NET = dict(image_size=16, num_levels=2, depth=1, hidden_channels=8)
# GlowModule's hyperparameters before model.net: the architecture keys flat among the others.
OLD_HPARAMS = {
    "in_channels": 1, **NET, "affine": True, "scale_floor": 0.1, "split_prior": "fixed",
    "condition": "none", "condition_pathologies": [], "condition_split_priors": False,
    "n_bits": 8, "sample_temperature": 0.7, "num_samples": 16, "init_batch_size": 256, "seed": 0,
}  # fmt: skip


def _trained_flow(**kw) -> Glow:
    torch.manual_seed(0)
    flow = Glow(**NET | kw)
    flow.initialize(torch.rand(8, 1, 16, 16) - 0.5)
    return flow


def test_architecture_fills_glow_defaults_and_drops_hydra_keys():
    node = {"_target_": "dpglow.flow.Glow", "_partial_": True, **NET}
    flow = Glow(**NET)
    assert architecture(node) == architecture(flow.config) == flow.config
    assert architecture({**node, "depth": 2}) != architecture(flow.config)
    # No hand-written key list: every argument of Glow counts (decode_bound included).
    assert architecture(node)["decode_bound"] == 1e4
    conditional = Glow(**NET, num_conditions=3, condition_split_priors=True)
    assert architecture(conditional.config) == conditional.config
    assert architecture({**node, "condition_split_priors": True}) == flow.config
    with pytest.raises(ValueError, match=r"\['condition', 'optimizer'\] are not arguments"):
        architecture({**NET, "condition": "none", "optimizer": None})


def test_load_flow_reads_a_checkpoint_of_the_old_flat_format(tmp_path):
    """Checkpoints written before model.net: the architecture as flat hyperparameters (beside the
    same dpglow section), as under outputs/train/runs/ of earlier runs."""
    flow = _trained_flow()
    old_config = {  # what on_save_checkpoint wrote then: no num_conditions when unconditional
        "in_channels": 1, **NET, "affine": True, "scale_floor": 0.1, "split_prior": "fixed",
        "decode_bound": 1e4,
    }  # fmt: skip
    assert flow.config == old_config
    ckpt = {
        "epoch": 0,
        "global_step": 1,
        "state_dict": {f"net.{k}": v for k, v in flow.state_dict().items()},
        "hyper_parameters": OLD_HPARAMS,
        CHECKPOINT_KEY: {
            "net_class": "dpglow.flow.glow.Glow",
            "net_config": old_config,
            "n_bits": 8,
            "noise_state": torch.Generator().get_state(),
        },
    }
    path = tmp_path / "old.ckpt"
    torch.save(ckpt, path)
    node = {"_target_": "dpglow.flow.Glow", "_partial_": True, "in_channels": 1, **NET}
    node |= {"affine": True, "scale_floor": 0.1, "split_prior": "fixed"}
    loaded, info = load_flow(path, expected=architecture(node | {"condition_split_priors": False}))
    assert info["net_config"] == old_config and info["condition_pathologies"] == []
    assert info["n_bits"] == 8 and len(info["sha256"]) == 64
    x = torch.rand(3, 1, 16, 16) - 0.5
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(x), flow.eval().log_prob(x))
    with pytest.raises(CheckpointError, match="hidden_channels: checkpoint 8 vs config 16"):
        load_flow(path, expected=architecture(node | {"hidden_channels": 16}))


def test_spline_flow_round_trips_through_a_checkpoint_and_refuses_other_bins(tmp_path):
    """Only a spline flow has the key spline_bins; it is part of the architecture."""
    plain = Glow(**NET)
    assert "spline_bins" not in plain.config
    assert architecture({**NET, "spline_bins": 0}) == plain.config
    flow = _trained_flow(spline_bins=4)
    assert flow.config["spline_bins"] == 4
    with torch.no_grad():  # a spline that is not the identity
        for level in flow.levels:
            level.steps[0].coupling.spline_head.bias.normal_(0.0, 0.5)
    state = {f"net.{k}": v for k, v in flow.state_dict().items()}
    path = tmp_path / "s.ckpt"
    torch.save({"state_dict": state, CHECKPOINT_KEY: {"net_config": flow.config}}, path)
    loaded, _ = load_flow(path, expected=architecture({**NET, "spline_bins": 4}))
    x = torch.rand(3, 1, 16, 16) - 0.5
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x))
        assert not torch.allclose(loaded.log_prob(x), Glow(**NET).log_prob(x))
    for other in (0, 8):
        with pytest.raises(CheckpointError, match="spline_bins"):
            load_flow(path, expected=architecture({**NET, "spline_bins": other}))


def test_load_flow_fills_defaults_of_a_net_config_missing_keys(tmp_path):
    """A net_config older than an argument of Glow (here decode_bound) means its default."""
    flow = _trained_flow(split_prior="learned")
    config = {k: v for k, v in flow.config.items() if k != "decode_bound"}
    state = {f"net.{k}": v for k, v in flow.state_dict().items()}
    torch.save({"state_dict": state, CHECKPOINT_KEY: {"net_config": config}}, tmp_path / "a.ckpt")
    expected = architecture({**NET, "split_prior": "learned"})
    loaded, info = load_flow(tmp_path / "a.ckpt", expected=expected)
    assert loaded.config == flow.config and info["n_bits"] == 8


@pytest.mark.parametrize(
    ("key", "value", "other"), [("hidden_channels", [8, 12], [8, 16]), ("depth", [1, 2], [2, 1])]
)
def test_per_level_settings_round_trip_through_a_checkpoint(tmp_path, key, value, other):
    """A list of widths or depths from Hydra (a ListConfig) is the same architecture as the
    stored list; the flow comes back with those layers; another list is refused."""
    from omegaconf import OmegaConf

    flow = _trained_flow(**{key: value})
    state = {f"net.{k}": v for k, v in flow.state_dict().items()}
    path = tmp_path / "w.ckpt"
    torch.save({"state_dict": state, CHECKPOINT_KEY: {"net_config": flow.config}}, path)
    node = OmegaConf.create({"_target_": "dpglow.flow.Glow", **NET, key: value})
    assert architecture(node) == flow.config
    loaded, _ = load_flow(path, expected=architecture(node))
    assert loaded.config[key] == value
    widths = [level.steps[0].coupling.net[0].out_channels for level in loaded.levels]
    depths = [len(level.steps) for level in loaded.levels]
    assert (widths if key == "hidden_channels" else depths) == value
    x = torch.rand(3, 1, 16, 16) - 0.5
    torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x))
    with pytest.raises(CheckpointError, match=key):
        load_flow(path, expected=architecture({**NET, key: other}))
