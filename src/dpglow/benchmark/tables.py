"""The benchmark's output: ``benchmark.csv`` with every measure, ``benchmark.md`` for the docs."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpglow.benchmark.heldout import NO_CHECKPOINT
from dpglow.utils.tables import markdown_table


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _spread(row: Mapping[str, Any], name: str) -> str:
    return f"{row[name + '_s']:.3g} s ({row[name + '_s_min']:.3g}-{row[name + '_s_max']:.3g})"


def _speed_cells(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "train step (fwd+bwd+Adam)": (
            f"{_spread(row, 'train_step')}, {row['train_steps_per_s']} steps/s"
        ),
        "encode (per batch)": f"{_spread(row, 'encode')}, {row['encode_img_per_s']} img/s",
        "decode (per batch)": f"{_spread(row, 'decode')}, {row['decode_img_per_s']} img/s",
        "privatize (per batch)": (
            f"{_spread(row, 'privatize')}, {row['privatize_img_per_s']} img/s"
        ),
        "privatize / (encode + decode)": row["privatize_over_encode_decode"],
        "peak RSS": f"{row['peak_rss_mb']:.0f} MB",
    }


def _heldout_cells(row: Mapping[str, Any]) -> dict[str, Any]:
    images = ""
    if row.get("heldout_images"):
        images = f"{row['heldout_images']}, {row['heldout_source']}"
        if row.get("heldout_draws", 1) > 1:
            images += f", importance-weighted over {row['heldout_draws']} dequantisations"
    return {
        "held-out bits/dim": row.get("heldout_bpd", NO_CHECKPOINT),
        "PNG (optimised)": row.get("png_bpd", ""),
        "WebP lossless": row.get("webp_bpd", ""),
        "held-out images": images,
    }


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The docs' view of the benchmark rows: one readable cell per measure."""
    out = []
    for row in rows:
        summary = {
            "model": row["model"],
            "precision": row.get("precision", "32"),
            "L / K / width": f"{row['levels']} / {row['depth']} / {row['width']}"
            + (f", {row['spline_bins']}-bin spline" if row.get("spline_bins") else ""),
            "params": f"{row['params_m']} M",
            "batch": row["batch"],
            "threads": row["threads"],
            **_speed_cells(row),
        }
        if row.get("processes", 1) > 1:
            summary["train step per process"] = row["train_step_s_per_process"]
        if "cuda_max_allocated_mb" in row:
            summary["CUDA max allocated"] = f"{row['cuda_max_allocated_mb']:.0f} MB"
        out.append(summary | _heldout_cells(row))
    return [{k: ("" if v is None else v) for k, v in r.items()} for r in out]


def write_tables(rows: list[dict[str, Any]], *, out_dir: Path, machine: str) -> str:
    """``benchmark.csv`` (every measure) and ``benchmark.md`` (the docs/benchmarks.md table,
    headed by ``machine`` and the torch threads) in ``out_dir``; returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "benchmark.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    threads = sorted({str(r["threads"]) for r in rows})
    table = (
        f"Machine: {machine}; torch threads: {', '.join(threads)}\n\n"
        f"{markdown_table(summary_rows(rows), fmt=_cell)}\n"
    )
    (out_dir / "benchmark.md").write_text(table)
    return table


def write_release_table(rows: list[dict[str, Any]], *, out_dir: Path) -> str:
    """``release.csv`` (every column) and ``release.md`` (the docs' view); returns the
    Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(out_dir / "release.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in ("release", "privatizer", "epsilon", "render_candidates", "render_margin",
                         "render_guidance", "images", "batch", "threads", "images_per_s")
             if c in columns]  # fmt: skip
    table = markdown_table(rows, columns=shown, fmt=_cell)
    (out_dir / "release.md").write_text(table + "\n")
    return table
