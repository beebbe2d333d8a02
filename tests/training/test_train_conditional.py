"""model.condition=labels: a class-conditional Glow trained on the public labels, its checkpoint,
and that unconditional checkpoints are read as before."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from dpglow.flow import Glow, architecture, flow_labels, load_flow, to_flow_input
from dpglow.training import GlowModule
from dpglow.training.conditioning import GRID_TAG, grid_labels
from dpglow.training.task import train

TINY = partial(Glow, image_size=16, num_levels=2, depth=1, hidden_channels=8)

# net_config of a checkpoint written before conditioning existed.
OLD_NET_CONFIG = dict(
    in_channels=1, image_size=16, num_levels=2, depth=1, hidden_channels=8, affine=True,
    scale_floor=0.1, split_prior="fixed", decode_bound=1e4,
)  # fmt: skip


def test_conditional_glow_trains_and_reloads_with_its_labels(compose_train, tmp_path):
    cfg = compose_train("data=pediatric", "model.condition=labels", output_dir=tmp_path / "run")
    _, objects = train(cfg)
    run = tmp_path / "run"
    model = objects["model"]
    assert model.condition_pathologies == ["Pneumonia"] and model.net.num_conditions == 1
    # The labels reached the flow in training: its zero-initialised label map has moved.
    top = model.net.levels[-1].label_prior.linear
    assert top.weight.abs().amax() > 0 and top.bias.abs().amax() > 0
    summary = json.loads((run / "summary.json").read_text())["metrics"]
    assert 0 < summary["test/bpd"] < 12
    assert summary["test/inverse_max_abs_error"] < 1e-4
    assert list((run / "samples").glob(f"samples_epoch000_*_{GRID_TAG}.png"))

    ckpt = run / "checkpoints" / "last.ckpt"
    flow, info = load_flow(ckpt)
    assert flow.num_conditions == 1 and info["net_config"]["num_conditions"] == 1
    assert info["condition_pathologies"] == ["Pneumonia"]
    reloaded = GlowModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert reloaded.condition_pathologies == ["Pneumonia"]

    batch = next(iter(objects["datamodule"].test_dataloader()))
    x, y = to_flow_input(batch["image"]), flow_labels(batch["labels"])
    with torch.no_grad():
        latents = flow.encode(x, y=y)
        torch.testing.assert_close(flow.decode(latents, y=y), x, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            reloaded.net.log_prob(x, y=y), model.net.cpu().eval().log_prob(x, y=y)
        )
        with pytest.raises(ValueError, match="pass y"):
            flow.encode(x)


def test_nan_labels_count_as_absent_and_the_grid_pairs_zero_with_one_hot():
    labels = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), 1.0, float("nan")]])
    assert torch.equal(flow_labels(labels), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    expected = torch.tensor(
        [[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]
    ).float()
    assert torch.equal(grid_labels(8, 3, "cpu"), expected)


def test_conditional_module_uses_the_batch_labels():
    torch.manual_seed(0)
    module = GlowModule(net=TINY, condition="labels", condition_pathologies=["A", "B"])
    images = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    module.net.initialize(to_flow_input(images))
    with torch.no_grad():
        module.net.levels[-1].label_prior.linear.weight.normal_()
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    y = module.labels({"image": images, "labels": labels})
    assert torch.equal(y, flow_labels(labels))
    bpd_right = module._bpd(images, gen, y)
    bpd_other = module._bpd(images, torch.Generator().manual_seed(0), 1 - y)
    assert not torch.allclose(bpd_right, bpd_other)
    with pytest.raises(ValueError, match="'labels' entry"):
        module.labels({"image": images})
    assert GlowModule(net=TINY).labels({"image": images, "labels": labels}) is None


def test_unconditional_checkpoints_of_before_still_match_and_conditional_ones_do_not():
    module = GlowModule(net=TINY)
    assert module.net.config == OLD_NET_CONFIG
    module.on_load_checkpoint({"dpglow": {"net_config": dict(OLD_NET_CONFIG)}})  # no error
    conditional = GlowModule(net=TINY, condition="labels", condition_pathologies=["Pneumonia"])
    with pytest.raises(ValueError, match="num_conditions"):
        conditional.on_load_checkpoint({"dpglow": {"net_config": dict(OLD_NET_CONFIG)}})
    saved = {"net_config": dict(conditional.net.config), "condition_pathologies": ["Effusion"]}
    with pytest.raises(ValueError, match="conditioned on"):
        conditional.on_load_checkpoint({"dpglow": saved})
    # architecture(): a model.net node (condition_split_priors: false, no num_conditions) matches
    # an unconditional net_config exactly as before; a conditional net_config keeps its keys.
    old_arch = {k: v for k, v in OLD_NET_CONFIG.items() if k != "decode_bound"}
    net_cfg = {"_target_": "dpglow.flow.Glow", "_partial_": True, **old_arch}
    net_cfg["condition_split_priors"] = False
    assert architecture(net_cfg) == architecture(OLD_NET_CONFIG) == OLD_NET_CONFIG
    assert architecture(conditional.net.config)["num_conditions"] == 1
    assert "condition_split_priors" in architecture(conditional.net.config)
