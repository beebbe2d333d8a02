"""The benchmark of a tiny model, its held-out bits/dim and the command line compute what they
claim (timings faked where a number is asserted: no wall-clock assertions)."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import dpglow.benchmark.run as bench_run
from conftest import TINY_DEQUANTIZER, run_entry
from dpglow.benchmark import (
    NO_CHECKPOINT,
    TIMINGS,
    bench_model,
    find_checkpoint,
    heldout_bits_per_dim,
    heldout_images,
    summary_rows,
)
from dpglow.benchmark.heldout import heldout_row
from dpglow.data.codecs import codec_bits_per_dim
from dpglow.flow import Glow

TINY = dict(image_size=16, num_levels=2, depth=1, hidden_channels=8)
# Known (median, min, max) seconds per timed operation, in the order bench_model times them.
KNOWN = {
    "train_step": (0.5, 0.25, 1.0),
    "encode": (0.2, 0.1, 0.4),
    "decode": (0.3, 0.3, 0.3),
    "privatize": (1.0, 0.75, 1.5),
}
COLUMNS = [
    "model", "precision", "image_size", "levels", "depth", "width", "spline_bins", "params_m",
    "batch",
    "device", "threads", "images",
    *(f"{name}_s{end}" for name in TIMINGS for end in ("", "_min", "_max")),
    "train_steps_per_s", "encode_img_per_s", "decode_img_per_s", "privatize_img_per_s",
    "privatize_s_per_img", "privatize_over_encode_decode", "peak_rss_mb",
    "heldout_bpd", "png_bpd", "webp_bpd", "checkpoint",
]  # fmt: skip


@pytest.fixture
def fake_measures(monkeypatch):
    """Fakes bench_model's clock-based timing (each operation still runs once) and its peak
    memory; yields the (warmup, repeats) each timing was asked for."""
    known, asked = iter(KNOWN.values()), []

    def fake_timed(fn, *, warmup, repeats, sync):
        fn()
        sync()
        asked.append((warmup, repeats))
        median, low, high = next(known)
        return {"median": median, "min": low, "max": high}

    monkeypatch.setattr(bench_run, "timed", fake_timed)
    monkeypatch.setattr(bench_run, "peak_rss_mb", lambda: 123.4)
    yield asked


def _spec(data_dir, **kwargs):
    return dict(name="tiny", model=TINY, device="cpu", batch_size=4, warmup=3, repeats=7,
                threads=None, data_dir=str(data_dir), checkpoint=None) | kwargs  # fmt: skip


def test_bench_model_puts_each_measure_in_its_column(data_dir, fake_measures):
    row = bench_model(_spec(data_dir))
    assert list(row) == COLUMNS
    assert fake_measures == [(3, 7)] * 4
    for name, (median, low, high) in KNOWN.items():
        assert (row[f"{name}_s"], row[f"{name}_s_min"], row[f"{name}_s_max"]) == (median, low, high)
    assert row["train_steps_per_s"] == 2.0
    assert (row["encode_img_per_s"], row["decode_img_per_s"]) == (20.0, 13.33)
    assert (row["privatize_img_per_s"], row["privatize_s_per_img"]) == (4.0, 0.25)
    assert row["privatize_over_encode_decode"] == 2.0
    assert row["peak_rss_mb"] == 123.4
    net = Glow(**TINY)
    assert row["params_m"] == round(sum(p.numel() for p in net.parameters()) / 1e6, 2)
    assert (row["model"], row["precision"], row["device"]) == ("tiny", "32", "cpu")
    assert (row["image_size"], row["levels"], row["depth"], row["width"]) == (16, 2, 1, 8)
    assert row["spline_bins"] == 0
    assert (row["batch"], row["images"]) == (4, "pediatric")
    # An untrained net has no held-out bits/dim worth reporting: the table says so.
    assert row["heldout_bpd"] == NO_CHECKPOINT
    assert summary_rows([row])[0]["held-out bits/dim"] == NO_CHECKPOINT


def test_per_level_widths_are_measured_and_shown(data_dir, fake_measures):
    row = bench_model(_spec(data_dir, model=TINY | {"hidden_channels": [8, 12]}))
    assert row["width"] == [8, 12]
    assert summary_rows([row])[0]["L / K / width"] == "2 / 1 / [8, 12]"


def test_per_level_depths_are_measured_and_shown(data_dir, fake_measures):
    row = bench_model(_spec(data_dir, model=TINY | {"depth": [2, 1]}))
    assert row["depth"] == [2, 1]
    assert summary_rows([row])[0]["L / K / width"] == "2 / [2, 1] / 8"


def test_bf16_mixed_training_step_is_measured(data_dir, fake_measures):
    row = bench_model(_spec(data_dir, precision="bf16-mixed", warmup=0, repeats=1))
    assert row["precision"] == "bf16-mixed" and row["train_step_s"] == 0.5
    assert fake_measures == [(0, 1)] * 4
    with pytest.raises(ValueError, match="precision"):
        bench_model(_spec(data_dir, precision="16"))


def test_heldout_bits_per_dim_reproduces_the_training_run(compose_train, tmp_path):
    from dpglow.training.task import train

    # A dequantiser that has moved well away from the uniform noise it starts as.
    cfg = compose_train(
        *TINY_DEQUANTIZER, "model.optimizer.lr=0.02", output_dir=tmp_path / "runs" / "run"
    )
    train(cfg)
    model = OmegaConf.to_container(cfg.model.net, resolve=True)
    ckpt = find_checkpoint(tmp_path / "runs", model)
    assert ckpt == tmp_path / "runs" / "run" / "checkpoints" / "last.ckpt"
    assert find_checkpoint(tmp_path / "runs", model | {"hidden_channels": 16}) is None
    # A run on other data is not the model's held-out figure for this data.
    hydra_dir = tmp_path / "runs" / "run" / ".hydra"
    hydra_dir.mkdir()
    OmegaConf.save(OmegaConf.to_container(cfg, resolve=False), hydra_dir / "config.yaml")
    target = cfg.data.source._target_
    assert find_checkpoint(tmp_path / "runs", model, data_target=target) == ckpt
    assert find_checkpoint(tmp_path / "runs", model, data_target="other.Source") is None

    summary = json.loads((tmp_path / "runs" / "run" / "summary.json").read_text())["metrics"]
    images, where = heldout_images(ckpt, model["image_size"], data=None, max_images=None)
    assert where == "test split of run"
    # The other splits of the same run, on request (the generalisation gap), and nothing else.
    table = pd.read_csv(tmp_path / "runs" / "run" / "splits.csv")
    train_images, where = heldout_images(
        ckpt, model["image_size"], data=None, max_images=None, split="train"
    )
    assert where == "train split of run"
    assert len(train_images) == (table["split"] == "train").sum() != len(images)
    with pytest.raises(ValueError, match="heldout_split must be one of"):
        heldout_images(ckpt, model["image_size"], data=None, max_images=None, split="training")
    # The codecs see the same test images as the training run's summary...
    assert codec_bits_per_dim(images.numpy())["png_bpd"] == pytest.approx(summary["test/png_bpd"])
    # ...and the held-out bits/dim use its evaluation protocol (one test batch of 4 there),
    # through the variational dequantiser trained with the flow.
    from dpglow.flow import load_dequantizer, load_flow

    flow, _ = load_flow(ckpt)
    dequantizer = load_dequantizer(ckpt)
    assert dequantizer is not None
    bpd = heldout_bits_per_dim(flow, images[:4], batch_size=4, dequantizer=dequantizer)
    assert bpd == pytest.approx(summary["test/bpd"], abs=1e-5)
    uniform = heldout_bits_per_dim(flow, images[:4], batch_size=4)
    assert abs(uniform - bpd) > 4e-4  # not the figure of uniform noise (8e-4 away here)

    row = bench_model(
        dict(name="run", model=model, device="cpu", batch_size=2, warmup=0, repeats=1,
             threads=None, data_dir=None, checkpoint=str(ckpt), heldout_images=4,
             heldout_batch_size=4)
    )  # fmt: skip
    assert row["heldout_bpd"] == pytest.approx(bpd, abs=1e-4)
    assert row["heldout_images"] == 4 and row["checkpoint"] == str(ckpt)
    assert row["dequantization"] == "variational"
    assert row["png_bpd"] == pytest.approx(
        codec_bits_per_dim(images[:4].numpy())["png_bpd"], abs=1e-4
    )
    assert row["inverse_max_abs_error"] < 1e-3
    assert row["heldout_draws"] == 1
    # The importance-weighted bound over the dequantiser's draws, as the command passes it.
    spec = dict(model=model, checkpoint=str(ckpt), heldout_images=4, heldout_batch_size=4)
    weighted = heldout_row(spec | {"heldout_draws": 4}, torch.device("cpu"))
    assert weighted["heldout_draws"] == 4
    assert weighted["heldout_bpd"] == pytest.approx(
        heldout_bits_per_dim(flow, images[:4], batch_size=4, dequantizer=dequantizer, draws=4),
        abs=1e-4,
    )


@pytest.mark.slow  # the whole benchmark command (tens of seconds): the full suite runs it
def test_benchmark_command_writes_tables(tmp_path):
    proc = run_entry(
        "benchmark.py", "models=[glow_32,straightforward]", "processes=2",
        "model_overrides={depth: 1, hidden_channels: 8}", "repeats=1", "warmup=0",
        "batch_size=2", f"runs_dir={tmp_path / 'no_runs'}", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "benchmark.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["glow_32", "straightforward"]
    assert [r["depth"] for r in rows] == ["1", "1"]
    # The preset: 64 px, 4 levels, its own batch size of 8.
    assert (rows[1]["image_size"], rows[1]["levels"], rows[1]["batch"]) == ("64", "4", "8")
    assert all(r["heldout_bpd"] == NO_CHECKPOINT for r in rows)
    assert [r["processes"] for r in rows] == ["2", "2"]
    table = (tmp_path / "benchmark.md").read_text()
    assert "train step per process" in table
    assert "| glow_32 |" in table and "| straightforward |" in table
    assert f"torch {torch.__version__}" in table.splitlines()[0]


def test_benchmark_without_models_for_this_device_says_so(tmp_path):
    proc = run_entry(
        "benchmark.py", "models=[]", "gpu_models=[glow_256]", "device=cpu",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "nothing to benchmark on cpu" in proc.stderr
    assert not (tmp_path / "benchmark.csv").exists()


def test_codec_bits_per_dim_known_cases():
    import numpy as np

    flat = np.full((3, 32, 32), 7, dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    flat_bpd, noise_bpd = codec_bits_per_dim(flat), codec_bits_per_dim(noise)
    assert flat_bpd["png_bpd"] < 1.0  # a constant image costs little more than its header
    assert noise_bpd["png_bpd"] > 8.0  # incompressible noise costs more than raw 8 bits
    with pytest.raises(ValueError, match="uint8"):
        codec_bits_per_dim(flat.astype(np.float32))
