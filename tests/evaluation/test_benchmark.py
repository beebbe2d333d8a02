"""The benchmark and noise-table commands compute what they claim (no timing assertions)."""

from __future__ import annotations

import csv
import math

import pytest

from conftest import run_entry
from dpglow.evaluation.benchmark import bench_model, markdown_table
from dpglow.evaluation.codecs import codec_bits_per_dim
from dpglow.evaluation.noise_table import noise_scale_rows
from dpglow.flow import Glow

TINY = dict(image_size=16, num_levels=2, depth=1, hidden_channels=8)


def test_bench_model_reports_every_measure(data_dir):
    row = bench_model(
        dict(name="tiny", model=TINY, device="cpu", batch_size=4, warmup=1, repeats=2,
             threads=None, data_dir=str(data_dir))
    )  # fmt: skip
    assert row["images"] == "pediatric" and row["batch"] == 4
    for key in ("train_step_s", "encode_img_per_s", "decode_img_per_s", "privatize_img_per_s"):
        assert row[key] > 0, key
    assert row["train_step_s_min"] <= row["train_step_s"] <= row["train_step_s_max"]
    assert row["privatize_over_encode_decode"] > 0 and row["peak_rss_mb"] > 0


def test_benchmark_command_writes_tables(tmp_path):
    proc = run_entry(
        "benchmark.py", "models=[glow_32]", "model_overrides={depth: 1, hidden_channels: 8}",
        "repeats=1", "warmup=0", "batch_size=2", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "benchmark.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["glow_32"] and rows[0]["depth"] == "1"
    assert "| glow_32 |" in (tmp_path / "benchmark.md").read_text()


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
