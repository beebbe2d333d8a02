"""The benchmark's CSV and README table for handmade rows: exact text."""

from __future__ import annotations

import csv

from dpglow.benchmark import NO_CHECKPOINT, write_tables

SPEED = {
    "train_step_s": 0.5, "train_step_s_min": 0.4, "train_step_s_max": 0.75,
    "train_steps_per_s": 2.0,
    "encode_s": 0.25, "encode_s_min": 0.2, "encode_s_max": 0.3, "encode_img_per_s": 16.0,
    "decode_s": 0.75, "decode_s_min": 0.7, "decode_s_max": 0.8, "decode_img_per_s": 5.33,
    "privatize_s": 2.0, "privatize_s_min": 1.5, "privatize_s_max": 2.5,
    "privatize_img_per_s": 2.0, "privatize_over_encode_decode": 2.0,
}  # fmt: skip
CPU_ROW = {
    "model": "glow_32", "precision": "32", "levels": 3, "depth": 1, "width": 8,
    "params_m": 0.12, "batch": 4, "threads": 2, **SPEED, "peak_rss_mb": 512.4,
    "processes": 2, "train_step_s_per_process": "0.5 / 0.6",
    "heldout_bpd": NO_CHECKPOINT, "png_bpd": "", "webp_bpd": "", "checkpoint": "",
}  # fmt: skip
GPU_ROW = {
    "model": "glow_256", "precision": "bf16-mixed", "levels": 6, "depth": 32, "width": 512,
    "spline_bins": 8, "params_m": 101.5, "batch": 64, "threads": 16, **SPEED, "peak_rss_mb": 3000.0,
    "cuda_max_allocated_mb": 1000.6, "processes": 1,
    "heldout_bpd": 3.5, "png_bpd": 4.25, "webp_bpd": "no WebP in Pillow",
    "heldout_images": 10, "heldout_source": "test split of run", "checkpoint": "a/last.ckpt",
}  # fmt: skip
SPEED_CELLS = (
    "0.5 s (0.4-0.75), 2.0 steps/s | 0.25 s (0.2-0.3), 16.0 img/s | "
    "0.75 s (0.7-0.8), 5.33 img/s | 2 s (1.5-2.5), 2.0 img/s | 2"
)
EXPECTED = "\n".join(
    [
        "Machine: test box; torch threads: 16, 2",
        "",
        "| model | precision | L / K / width | params | batch | threads "
        "| train step (fwd+bwd+Adam) | encode (per batch) | decode (per batch) "
        "| privatize (per batch) | privatize / (encode + decode) | peak RSS "
        "| train step per process | held-out bits/dim | PNG (optimised) | WebP lossless "
        "| held-out images | CUDA max allocated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| glow_32 | 32 | 3 / 1 / 8 | 0.12 M | 4 | 2 | {SPEED_CELLS} | 512 MB | 0.5 / 0.6 "
        f"| {NO_CHECKPOINT} |  |  |  |  |",
        "| glow_256 | bf16-mixed | 6 / 32 / 512, 8-bin spline | 101.5 M | 64 | 16 "
        f"| {SPEED_CELLS} | 3000 MB "
        "|  | 3.5 | 4.25 | no WebP in Pillow | 10, test split of run | 1001 MB |",
        "",
    ]
)


def test_write_tables_writes_the_readme_table_and_every_measure(tmp_path):
    table = write_tables([CPU_ROW, GPU_ROW], out_dir=tmp_path / "out", machine="test box")
    assert table == EXPECTED
    assert (tmp_path / "out" / "benchmark.md").read_text() == EXPECTED
    with open(tmp_path / "out" / "benchmark.csv", newline="") as fh:
        header, *lines = list(csv.reader(fh))
    assert header == list(dict.fromkeys([*CPU_ROW, *GPU_ROW]))
    assert len(lines) == 2
    assert dict(zip(header, lines[1], strict=True))["cuda_max_allocated_mb"] == "1000.6"
    assert dict(zip(header, lines[0], strict=True))["cuda_max_allocated_mb"] == ""


def test_importance_weighted_heldout_figures_say_over_how_many_draws():
    from dpglow.benchmark import summary_rows

    one, many = summary_rows([GPU_ROW | {"heldout_draws": 1}, GPU_ROW | {"heldout_draws": 16}])
    assert one["held-out images"] == "10, test split of run"
    assert many["held-out images"] == (
        "10, test split of run, importance-weighted over 16 dequantisations"
    )
