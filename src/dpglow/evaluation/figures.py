"""The figures of a merged evaluation report: the privacy-utility frontier and the image grid."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dpglow.evaluation.layout import ORIGINAL, ORIGINALS_FILE, SAMPLES_FILE
from dpglow.metrics import retention_ceiling

log = logging.getLogger(__name__)


def _eps_label(value: float) -> str:
    """1e-1 -> 0.1, 3 -> 3, 1000 -> 1e3, 10000 -> 1e4, inf -> inf: short labels that do not
    collide."""
    if math.isinf(value):
        return "inf"
    if value >= 1000:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}" if mantissa != "1" else f"1e{int(exponent)}"
    return f"{value:g}"


def _epsilon_axis(ax, low: float, high: float) -> None:
    """Log x from low / 1.5 to high * 1.5 with ticks at 1-2-5 steps, thinned so that at most
    eight labels show (no overlapping tick labels), no minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(low / 1.5, high * 1.5)
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
        for m in (1, 2, 5)
        if low / 1.5 <= m * 10.0**e <= high * 1.5
    ]
    while len(ticks) > 8:
        ticks = ticks[::2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _eps_label(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epsilon per image")


def plot(frame: pd.DataFrame, path: Path) -> bool:
    """Three panels against per-image epsilon (log x), one line per mechanism/setting: AUC
    retention with the LDP ceiling (the most any eps-LDP release allows, from the originals'
    AUC); realism AUC with its real-vs-real control (lower is more real); linkage top-1 in the
    embedding (dotted: pixels) with chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frame[(frame["mechanism"] != ORIGINAL) & np.isfinite(frame["epsilon_per_image"])]
    if rows.empty:
        log.info("no finite-epsilon rows: no privacy-utility plot")
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    retention, realism, linkage = axes
    for (mechanism, series), group in rows.groupby(["mechanism", "series"], sort=True):
        group = group.sort_values("epsilon_per_image")
        eps = group["epsilon_per_image"]
        label = mechanism + (f" ({series})" if series else "")
        color = retention.plot(eps, group["u1/retention"], "o-", label=label)[0].get_color()
        if "realism/auc" in group:
            realism.plot(eps, group["realism/auc"], "o-", color=color)
        linkage.plot(eps, group["p1/embed_top1"], "o-", color=color)
        linkage.plot(eps, group["p1/pixel_top1"], ":", color=color)
    low, high = rows["epsilon_per_image"].min(), rows["epsilon_per_image"].max()
    grid = np.geomspace(low / 1.5, high * 1.5, 200)
    auc_orig = float(rows["u1/auc_orig_mean"].mean())
    retention.plot(
        grid, [retention_ceiling(e, auc_orig) for e in grid], "k--", lw=1.2, label="LDP ceiling"
    )
    retention.axhline(1.0, color="grey", ls=":", lw=1, label="no privacy")
    if "realism/control_auc" in rows and rows["realism/control_auc"].notna().any():
        control = float(rows["realism/control_auc"].mean())
        realism.axhline(control, color="grey", ls="--", lw=1, label="real vs real")
        realism.legend(fontsize=7, loc="best")
    linkage.axhline(rows["p1/chance_top1"].iloc[0], color="grey", ls="--", lw=1, label="chance")
    titles = (
        (retention, "AUC retention (U1)", "(AUC_priv - 0.5) / (AUC_orig - 0.5)"),
        (realism, "realism: discriminator AUC (0.5 = real)", "released vs original AUC"),
        (linkage, "linkage top-1 (embedding; dotted: pixel)", "top-1 accuracy"),
    )
    for ax, title, ylabel in titles:
        _epsilon_axis(ax, low, high)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    retention.legend(fontsize=7, loc="best")
    linkage.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _blocks(frame: pd.DataFrame, sweep_dir: Path) -> list[tuple[str, np.ndarray, list]]:
    """Per mechanism/setting: (label, originals strip, [(epsilon, samples), ...])."""
    rows = frame[frame["mechanism"] != ORIGINAL]
    blocks = []
    for (mechanism, series), group in rows.groupby(["mechanism", "series"], sort=True):
        strips = []
        for _, row in group.sort_values("epsilon_per_image").iterrows():
            job = sweep_dir / row["job"]
            if (job / SAMPLES_FILE).is_file():
                strips.append(
                    (row["epsilon_per_image"], np.asarray(Image.open(job / SAMPLES_FILE)))
                )
        first = sweep_dir / group.iloc[0]["job"] / ORIGINALS_FILE
        if strips and first.is_file():
            label = mechanism + (f"\n{series}" if series else "")
            blocks.append((label, np.asarray(Image.open(first)), strips))
    return blocks


def image_grid(frame: pd.DataFrame, sweep_dir: Path, path: Path) -> bool:
    """Originals vs releases: for each mechanism/setting a block whose rows are test images and
    whose columns are the original, then for each epsilon (increasing) the job's releases of
    that image (several independent releases where the job saved them, so diversity shows).
    False when no job saved samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = _blocks(frame, sweep_dir)
    if not blocks:
        return False
    side = blocks[0][1].shape[0]
    n_images = blocks[0][1].shape[1] // side
    releases = max(strip.shape[0] // side for b in blocks for _, strip in b[2])
    n_cols = 1 + max(len(b[2]) for b in blocks) * releases
    fig, axes = plt.subplots(
        len(blocks) * n_images,
        n_cols,
        figsize=(1.1 * n_cols + 1.2, 1.2 * n_images * len(blocks)),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    for b, (label, originals, strips) in enumerate(blocks):
        for i in range(n_images):
            r = b * n_images + i
            cut = slice(i * side, (i + 1) * side)
            axes[r, 0].imshow(originals[:, cut], cmap="gray", vmin=0, vmax=255)
            for e, (eps, strip) in enumerate(strips):
                for k in range(strip.shape[0] // side):
                    ax = axes[r, 1 + e * releases + k]
                    ax.imshow(strip[k * side : (k + 1) * side, cut], cmap="gray", vmin=0, vmax=255)
                    if i == 0 and k == 0:
                        ax.set_title(f"eps={_eps_label(eps)}", fontsize=7, loc="left")
            if i == 0:
                axes[r, 0].set_title("original", fontsize=7)
                _side_label(axes[r, 0], label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _side_label(ax: Any, label: str) -> None:
    ax.text(-0.1, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=7)
