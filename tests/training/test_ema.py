"""callbacks=ema: the averaged weights are what validation, test and the released checkpoint use;
the raw weights travel beside them for an exact resume."""

from __future__ import annotations

import torch

from dpglow.flow import load_flow
from dpglow.training.task import train

EMA = ["callbacks=ema", "callbacks.ema.decay=0.5", "trainer.limit_train_batches=4"]


def _net_state(state: dict) -> dict[str, torch.Tensor]:
    return {k[4:]: v for k, v in state.items() if k.startswith("net.")}


def test_checkpoint_holds_the_average_and_the_raw_weights(compose_train, tmp_path):
    cfg = compose_train("data=pediatric", *EMA, output_dir=tmp_path / "run")
    _, objects = train(cfg)
    ckpt_path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    average, raw = _net_state(ckpt["state_dict"]), _net_state(ckpt["current_model_state"])
    assert average.keys() == raw.keys()
    moved = [k for k in average if average[k].is_floating_point()]
    # Four steps at decay 0.5: the average lags the raw weights wherever training moved them.
    assert any(not torch.equal(average[k], raw[k]) for k in moved)
    flow, _ = load_flow(ckpt_path)
    for name, value in flow.state_dict().items():
        torch.testing.assert_close(value, average[name], rtol=0, atol=0)
    # train() tested the best checkpoint with its averaged weights, not the raw ones.
    best = torch.load(
        objects["trainer"].checkpoint_callback.best_model_path,
        map_location="cpu",
        weights_only=True,
    )
    for name, value in objects["model"].net.state_dict().items():
        torch.testing.assert_close(
            value.cpu(), _net_state(best["state_dict"])[name], rtol=0, atol=0
        )


def test_resume_with_ema_continues_exactly(compose_train, tmp_path):
    common = ["data=pediatric", *EMA]
    full = compose_train(*common, "trainer.max_epochs=2", "test=false", output_dir=tmp_path / "a")
    train(full)
    first = compose_train(*common, "trainer.max_epochs=1", "test=false", output_dir=tmp_path / "b")
    train(first)
    resumed = compose_train(
        *common,
        "trainer.max_epochs=2",
        "test=false",
        f"resume_from={tmp_path / 'b' / 'checkpoints' / 'last.ckpt'}",
        output_dir=tmp_path / "c",
    )
    train(resumed)
    a = torch.load(tmp_path / "a/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    c = torch.load(tmp_path / "c/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    for key in ("state_dict", "current_model_state"):
        for name, value in a[key].items():
            torch.testing.assert_close(c[key][name], value, msg=f"{key}/{name}")
