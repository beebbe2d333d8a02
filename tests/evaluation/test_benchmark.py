"""The benchmark and noise-table commands compute what they claim (no timing assertions)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import run_entry
from dpglow.evaluation.benchmark import (
    NO_CHECKPOINT,
    TIMINGS,
    bench_model,
    combine_processes,
    find_checkpoint,
    heldout_bits_per_dim,
    heldout_images,
    largest_batch,
    markdown_table,
    summary_rows,
)
from dpglow.evaluation.codecs import codec_bits_per_dim
from dpglow.evaluation.noise_table import noise_scale_rows
from dpglow.flow import Glow

TINY = dict(image_size=16, num_levels=2, depth=1, hidden_channels=8)


def test_bench_model_reports_every_measure(data_dir):
    row = bench_model(
        dict(name="tiny", model=TINY, device="cpu", batch_size=4, warmup=1, repeats=2,
             threads=None, data_dir=str(data_dir), checkpoint=None)
    )  # fmt: skip
    assert row["images"] == "pediatric" and row["batch"] == 4
    for name in ("train_step", "encode", "decode", "privatize"):
        assert row[f"{name}_s_min"] <= row[f"{name}_s"] <= row[f"{name}_s_max"], name
    for name in ("encode", "decode", "privatize"):
        assert row[f"{name}_img_per_s"] == pytest.approx(4 / row[f"{name}_s"], rel=1e-2)
    assert row["privatize_over_encode_decode"] == pytest.approx(
        row["privatize_s"] / (row["encode_s"] + row["decode_s"]), rel=1e-2
    )
    assert row["peak_rss_mb"] > 0
    # An untrained net has no held-out bits/dim worth reporting: the table says so.
    assert row["heldout_bpd"] == NO_CHECKPOINT
    assert summary_rows([row])[0]["held-out bits/dim"] == NO_CHECKPOINT


def test_heldout_bits_per_dim_reproduces_the_training_run(compose_train, tmp_path):
    from dpglow.training.pipeline import train

    cfg = compose_train(output_dir=tmp_path / "runs" / "run")
    train(cfg)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("_target_", "optimizer", "scheduler"):
        model.pop(key)
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
    # The codecs see the same test images as the training run's summary...
    assert codec_bits_per_dim(images.numpy())["png_bpd"] == pytest.approx(summary["test/png_bpd"])
    # ...and the held-out bits/dim use its evaluation protocol (one test batch of 4 there).
    from dpglow.privatization.checkpoint import load_flow

    flow, _ = load_flow(ckpt)
    bpd = heldout_bits_per_dim(flow, images[:4], batch_size=4)
    assert bpd == pytest.approx(summary["test/bpd"], abs=1e-4)

    row = bench_model(
        dict(name="run", model=model, device="cpu", batch_size=2, warmup=0, repeats=1,
             threads=None, data_dir=None, checkpoint=str(ckpt), heldout_images=4,
             heldout_batch_size=4)
    )  # fmt: skip
    assert row["heldout_bpd"] == pytest.approx(bpd, abs=1e-4)
    assert row["heldout_images"] == 4 and row["checkpoint"] == str(ckpt)
    assert row["png_bpd"] == pytest.approx(
        codec_bits_per_dim(images[:4].numpy())["png_bpd"], abs=1e-4
    )
    assert row["inverse_max_abs_error"] < 1e-3


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


def test_largest_batch_doubles_until_memory_runs_out():
    tried = []

    def fits(batch):
        tried.append(batch)
        if batch > 48:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    assert largest_batch(fits, start=4, limit=1024) == 32
    assert tried == [4, 8, 16, 32, 64]
    assert largest_batch(fits, start=4, limit=16) == 16  # the limit stops the search
    with pytest.raises(RuntimeError, match="does not fit"):
        largest_batch(fits, start=64, limit=1024)

    def broken(batch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):  # not a memory error: not swallowed
        largest_batch(broken, start=4, limit=1024)


def test_bf16_mixed_training_step_is_measured(data_dir):
    spec = dict(name="tiny", model=TINY, device="cpu", batch_size=4, warmup=0, repeats=1,
                threads=None, data_dir=str(data_dir), checkpoint=None)  # fmt: skip
    row = bench_model(dict(spec, precision="bf16-mixed"))
    assert row["precision"] == "bf16-mixed" and row["train_step_s"] > 0
    assert row["train_steps_per_s"] == pytest.approx(1 / row["train_step_s"], rel=1e-3)
    with pytest.raises(ValueError, match="precision"):
        bench_model(dict(spec, precision="16"))


def test_processes_combine_into_median_and_overall_spread():
    def row(t, rss):
        timings = {f"{n}_s": t for n in TIMINGS}
        timings |= {f"{n}_s_min": t - 1 for n in TIMINGS} | {f"{n}_s_max": t + 1 for n in TIMINGS}
        return {"model": "m", "batch": 4, "peak_rss_mb": rss, "heldout_bpd": 3.9, **timings}

    out = combine_processes([row(10.0, 100.0), row(30.0, 300.0), row(12.0, 200.0)])
    assert out["train_step_s"] == 12.0 and out["privatize_s"] == 12.0  # median of the medians
    assert (out["encode_s_min"], out["encode_s_max"]) == (9.0, 31.0)
    assert out["encode_img_per_s"] == round(4 / 12.0, 2)
    assert out["privatize_over_encode_decode"] == 0.5
    assert out["peak_rss_mb"] == 300.0 and out["processes"] == 3
    assert out["train_step_s_per_process"] == "10 / 30 / 12"
    assert out["heldout_bpd"] == 3.9


def test_benchmark_without_models_for_this_device_says_so(tmp_path):
    proc = run_entry(
        "benchmark.py", "models=[]", "gpu_models=[glow_256]", "device=cpu",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "nothing to benchmark on cpu" in proc.stderr
    assert not (tmp_path / "benchmark.csv").exists()


def test_noise_table_matches_the_calibration_formulas():
    flow = Glow(image_size=64, num_levels=4, depth=1, hidden_channels=4)
    rows = {(r["mechanism"], r["levels"]): r for r in noise_scale_rows(flow, epsilons=[1, 10])}
    d, d_coarse = 4096, 512
    # laplace_elementwise, per-image accounting: b = 2c / (eps / d) with c = 3
    assert rows[("laplace_elementwise", "all")]["eps=1"] == pytest.approx(2 * 3 * d)
    # laplace_l1 with R = d sqrt(2/pi): b = 2R / eps
    r = d_coarse * math.sqrt(2 / math.pi)
    assert rows[("laplace_l1", "coarsest")]["eps=10"] == pytest.approx(2 * r / 10, rel=1e-6)
    assert rows[("pixel_laplace", "pixels")]["eps=1"] == pytest.approx(d)
    assert rows[("dp_pix (cell 16)", "pixels")]["eps=1"] == pytest.approx(16)
    # Less noise for fewer privatized elements, for every latent mechanism.
    for name in ("laplace_elementwise", "laplace_l1", "gaussian_l2"):
        assert rows[(name, "coarsest")]["eps=1"] < rows[(name, "all")]["eps=1"]


def test_codec_bits_per_dim_known_cases():
    import numpy as np

    flat = np.full((3, 32, 32), 7, dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    flat_bpd, noise_bpd = codec_bits_per_dim(flat), codec_bits_per_dim(noise)
    assert flat_bpd["png_bpd"] < 1.0  # a constant image costs little more than its header
    assert noise_bpd["png_bpd"] > 8.0  # incompressible noise costs more than raw 8 bits
    with pytest.raises(ValueError, match="uint8"):
        codec_bits_per_dim(flat.astype(np.float32))


def test_markdown_table():
    table = markdown_table([{"a": 1, "b": 0.5}, {"a": 2, "c": "x"}])
    assert table.splitlines()[0] == "| a | b | c |"
    assert table.splitlines()[3] == "| 2 |  | x |"
