"""train(): end to end on real X-rays with tiny models, resume, and the trained model's inverse."""

from __future__ import annotations

import json
import logging
from functools import partial

import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from conftest import TINY_DEQUANTIZER
from dpglow.flow import CheckpointError, Glow, load_dequantizer, to_flow_input
from dpglow.training import GlowModule
from dpglow.training.task import train


def test_train_writes_checkpoints_metrics_samples_splits(compose_train, tmp_path):
    cfg = compose_train("data=nih", output_dir=tmp_path / "run")
    metrics, _ = train(cfg)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "samples").glob("samples_epoch000_*.png"))
    history = pd.read_csv(run / "csv" / "metrics.csv")
    assert {"train/bpd", "val/bpd", "test/bpd"} <= set(history.columns)
    summary = json.loads((run / "summary.json").read_text())
    for key in ("test/bpd", "test/png_bpd", "test/inverse_max_abs_error"):
        assert key in summary["metrics"], key
    # An untrained flow codes 8-bit X-rays at a few bits per pixel, never below 0 or above ~12.
    assert 0 < metrics["test/bpd"] < 12
    splits = pd.read_csv(run / "splits.csv")
    assert set(splits["split"]) == {"train", "val", "test"}
    by_patient = splits.groupby("patient_id")["split"].nunique()
    assert (by_patient == 1).all(), "a patient appears in two splits"


def _state(ckpt_path):
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)


def test_resume_continues_exactly(compose_train, tmp_path):
    common = (
        "data=pediatric",
        "trainer.limit_train_batches=3",
        "callbacks.model_checkpoint.save_top_k=-1",
    )
    full_cfg = compose_train(*common, "trainer.max_epochs=2", output_dir=tmp_path / "full")
    train(full_cfg)
    first_cfg = compose_train(*common, "trainer.max_epochs=1", output_dir=tmp_path / "first")
    train(first_cfg)
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    first = _state(ckpt)
    assert first["global_step"] == 3
    resumed_cfg = compose_train(
        *common, "trainer.max_epochs=2", f"resume_from={ckpt}", output_dir=tmp_path / "resumed"
    )
    _, objects = train(resumed_cfg)
    assert objects["trainer"].global_step == 6

    full = _state(tmp_path / "full" / "checkpoints" / "last.ckpt")
    resumed = _state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert full["global_step"] == resumed["global_step"] == 6
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, msg=key)
    # Optimizer moments and the schedule's position carry over too.
    for a, b in zip(
        full["optimizer_states"][0]["state"].values(),
        resumed["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"])
    assert full["lr_schedulers"] == resumed["lr_schedulers"]
    # ActNorm was initialised from data in the first run and never again.
    first_loc = first["state_dict"]["net.levels.0.steps.0.actnorm.loc"]
    assert not torch.equal(first_loc, torch.zeros_like(first_loc))


def test_resume_refuses_another_architecture(compose_train, tmp_path, caplog):
    first_cfg = compose_train("data=pediatric", output_dir=tmp_path / "first")
    train(first_cfg)
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    # The deprecated spelling ckpt_path= still resumes (hence the refusal), with a warning.
    other = compose_train(
        "data=pediatric",
        "model.net.depth=2",
        "trainer.max_epochs=2",
        f"ckpt_path={ckpt}",
        output_dir=tmp_path / "other",
    )
    with (
        caplog.at_level(logging.WARNING, logger="dpglow"),
        pytest.raises(CheckpointError, match=r"depth: checkpoint 1 vs config 2") as refused,
    ):
        train(other)
    assert other.resume_from == str(ckpt) and other.ckpt_path is None
    assert "hidden_channels" not in str(refused.value)  # only what differs is named
    assert not (tmp_path / "other" / "checkpoints").exists()  # refused before any training
    assert any(
        "ckpt_path= is deprecated" in r.message and "resume_from=" in r.message
        for r in caplog.records
    )


def test_checkpoint_rebuilds_its_own_model(compose_train, tmp_path):
    cfg = compose_train("data=pediatric", *TINY_DEQUANTIZER, output_dir=tmp_path / "run")
    _, objects = train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    loaded = GlowModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert loaded.net.config == objects["model"].net.config
    assert loaded.net.actnorm_initialized()
    x = torch.rand(2, 1, 32, 32) - 0.5
    torch.testing.assert_close(loaded.net.log_prob(x), objects["model"].net.cpu().log_prob(x))
    # The variational dequantiser comes back too, from the module and on its own.
    trained = objects["model"].dequantizer.cpu()
    for dequantizer in (loaded.dequantizer, load_dequantizer(ckpt)):
        assert dequantizer.config == trained.config == {
            "in_channels": 1, "depth": 2, "hidden_channels": 8, "context_channels": 16,
        }  # fmt: skip
        noise = torch.randn(2, 1, 32, 32)
        torch.testing.assert_close(dequantizer(x, noise), trained(x, noise))


def test_a_flow_trained_with_uniform_noise_has_no_dequantizer(compose_train, tmp_path):
    cfg = compose_train("data=pediatric", output_dir=tmp_path / "u")
    _, objects = train(cfg)
    ckpt = tmp_path / "u" / "checkpoints" / "last.ckpt"
    assert objects["model"].dequantizer is None and load_dequantizer(ckpt) is None
    assert GlowModule.load_from_checkpoint(ckpt, weights_only=True).dequantizer is None
    # Resuming it with a variational dequantiser is refused: the bound would change mid-run.
    resumed = compose_train(
        "data=pediatric",
        *TINY_DEQUANTIZER,
        "trainer.max_epochs=2",
        f"resume_from={ckpt}",
        output_dir=tmp_path / "v",
    )
    with pytest.raises(ValueError, match="trained with dequantizer None"):
        train(resumed)


def test_trained_64px_model_inverts_to_float32_precision(compose_train, tmp_path):
    """After real training steps at lr 1e-3 the inverse error stays below 1e-4 (docs/method.md)."""
    cfg = compose_train(
        "data=pediatric",
        "model=glow_64",
        "model.net.depth=2",
        "model.net.hidden_channels=16",
        "model.optimizer.lr=1e-3",
        "model.scheduler.warmup_steps=5",
        "data.max_images=160",
        "data.batch_size=8",
        "trainer.limit_train_batches=30",
        "test=false",
        output_dir=tmp_path / "run",
    )
    with open_dict(cfg):
        cfg.callbacks = None
    metrics, objects = train(cfg)
    assert metrics["train/bpd"] < 7.0  # it learned something
    net = objects["model"].net.eval()
    images = torch.cat([b["image"] for b in objects["datamodule"].val_dataloader()])
    x = to_flow_input(images)
    with torch.no_grad():
        err = (net.decode(net.encode(x)) - x).abs().max().item()
    assert err < 1e-4, err


def test_actnorm_initialised_from_first_batch_without_a_datamodule(tmp_path):
    """Plain dataloaders (no init_batch): ActNorm is initialised once, from the first batch."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    images = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8)
    loader = DataLoader([{"image": im} for im in images], batch_size=8)
    model = GlowModule(
        net=partial(Glow, image_size=16, num_levels=2, depth=1, hidden_channels=8), num_samples=0,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-4),
    )  # fmt: skip
    assert not model.net.actnorm_initialized()
    trainer = pl.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    assert model.net.actnorm_initialized()
    assert trainer.global_step == 2


def test_logged_validation_is_the_saved_checkpoints(compose_train, tmp_path):
    # The validation pass runs without autograd, on cached 1x1-convolution weights: after the
    # second epoch's fused Adam steps it must still score the current weights (the checkpoint's).
    cfg = compose_train(
        "data=pediatric",
        "trainer.limit_train_batches=4",
        "trainer.max_epochs=2",
        "test=false",
        output_dir=tmp_path / "r",
    )
    metrics, objects = train(cfg)
    module = GlowModule.load_from_checkpoint(
        tmp_path / "r" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    again = objects["trainer"].validate(module, datamodule=objects["datamodule"], verbose=False)
    assert again[0]["val/bpd"] == pytest.approx(metrics["val/bpd"], abs=1e-5)


def test_a_run_stopped_inside_an_epoch_validates_and_keeps_its_final_weights(
    compose_train, tmp_path
):
    """max_steps inside the second epoch: Lightning alone would neither validate the last steps
    nor write them to last.ckpt; train() does both, and they compete for the best checkpoint."""
    cfg = compose_train(
        "data=pediatric",
        "trainer.limit_train_batches=4",
        "trainer.max_epochs=3",
        "trainer.max_steps=6",
        "test=false",
        output_dir=tmp_path / "r",
    )
    metrics, objects = train(cfg)
    trainer, run = objects["trainer"], tmp_path / "r"
    assert trainer.global_step == 6
    last = _state(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 6
    history = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["val/bpd"])
    assert len(history) == 2  # the epoch end (step 4), then the final weights (step 6)
    assert metrics["val/bpd"] == pytest.approx(history["val/bpd"].iloc[-1])
    callback = trainer.checkpoint_callback
    assert float(callback.best_model_score) == pytest.approx(history["val/bpd"].min())
    best_step = 6 if history["val/bpd"].iloc[-1] < history["val/bpd"].iloc[0] else 4
    assert _state(callback.best_model_path)["global_step"] == best_step
    assert [p.name for p in (run / "checkpoints").glob("epoch*.ckpt")] == [
        f"epoch001-step{best_step:06d}.ckpt" if best_step == 6 else "epoch000-step000004.ckpt"
    ]
    module = GlowModule.load_from_checkpoint(
        run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    again = trainer.validate(module, datamodule=objects["datamodule"], verbose=False)
    assert again[0]["val/bpd"] == pytest.approx(history["val/bpd"].iloc[-1], abs=1e-5)
