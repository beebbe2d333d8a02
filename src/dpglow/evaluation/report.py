"""Merge the rows of an evaluation sweep into ``results.csv``, ``results.md``, a privacy-utility
plot and an image grid (``python src/report.py <sweep_dir>``, and automatically when a multirun
of ``src/evaluate.py`` ends)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dpglow.evaluation.figures import image_grid, plot
from dpglow.evaluation.layout import CACHE_DIR, ORIGINAL, ROW_FILE
from dpglow.utils.tables import markdown_table

log = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
PLOT_FILE = "privacy_utility.png"
GRID_FILE = "image_grid.png"
# Settings that, when they vary within a sweep, name separate lines of the plot.
SERIES_KEYS = (
    "levels", "postprocess", "temperature", "other_levels_temperature", "cell", "accounting",
    "radius", "basis", "k", "label_fraction", "labeler", "flow_depth", "flow_hidden_channels",
    "flow_ckpt", "refiner", "classifier", "data", "shift", "shift_value", "shift_positive_fraction",
    "shift_data", "render", "render_candidates", "render_margin",
    "render_guidance",
)  # fmt: skip
MD_COLUMNS = (
    ("mechanism", "mechanism"), ("series", "setting"), ("epsilon_per_image", "eps/image"),
    ("epsilon_per_element", "eps/element"), ("epsilon_label", "eps labels"),
    ("epsilon_latent", "eps image"),
    ("d", "d"), ("u1/auc_priv_mean", "AUC"),
    ("u1/retention", "retention"), ("u1/retention_ceiling", "LDP ceiling"),
    ("u1/fraction_of_ceiling", "of ceiling"), ("u1/labeler_bound", "labeler bound"),
    ("p1/pixel_top1", "link@1 px"),
    ("p1/embed_top1", "link@1 emb"), ("p1/embed_top5", "link@5 emb"),
    ("p1/chance_top1", "chance@1"), ("p2/embed_top1", "re-id@1"),
    ("p2/constant_top1", "const@1"), ("p2/embed_map", "re-id mAP"),
    ("p2/chance_map", "chance mAP"), ("fidelity/psnr", "PSNR"), ("fidelity/ssim", "SSIM"),
    ("fidelity/cosine", "cos emb"), ("fidelity/frechet", "FD emb"), ("realism/auc", "real AUC"),
    ("realism/embedding_auc", "real AUC emb"), ("realism/prior_auc", "prior real AUC"),
    ("realism/control_auc", "real-real AUC"),
    ("artifacts/images_with_patches", "patched images"),
    ("u2/auc_train_priv_mean", "U2 AUC"),
    ("u2/retention", "U2 retention"),
)  # fmt: skip


# Row columns renamed after 0.1.0 (one name per concept: the record's epsilon_*, Glow's argument
# names, fidelity/ for fidelity); rows written before are read under the new names until 0.3.0
# (CHANGELOG.md).
RENAMED = {
    "eps_per_image": "epsilon_per_image",
    "eps_per_element": "epsilon_per_element",
    "eps_label": "epsilon_label",
    "eps_latent": "epsilon_latent",
    "flow_levels": "flow_num_levels",
    "flow_width": "flow_hidden_channels",
    "fid/psnr": "fidelity/psnr",
    "fid/ssim": "fidelity/ssim",
    "fid/frechet": "fidelity/frechet",
}


class NoRowsError(FileNotFoundError):
    """The folder holds no evaluation rows."""


def load_rows(sweep_dir: str | Path) -> pd.DataFrame:
    """Every job's ``row.json`` under ``sweep_dir`` (the folder itself and its job folders)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NoRowsError(f"{sweep_dir} is not a folder: pass the sweep folder of an evaluation")
    # Job folders are Hydra's job numbers, or any nesting (e.g. hydra.sweep.subdir set to
    # ${hydra.job.override_dirname}); numbered jobs sort numerically.
    paths = sorted(
        (p for p in sweep_dir.rglob(ROW_FILE) if CACHE_DIR not in p.relative_to(sweep_dir).parts),
        key=lambda p: (len(p.parts), len(str(p)), str(p)),
    )
    if not paths:
        raise NoRowsError(
            f"no {ROW_FILE} under {sweep_dir}: pass the folder of a "
            "`python src/evaluate.py -m ...` sweep (outputs/evaluate/multiruns/<date>_<time>) "
            "or of a single run"
        )
    rows, renamed = [], set()
    for path in paths:
        row = json.loads(path.read_text())
        renamed.update(old for old in RENAMED if old in row)
        # A list (a flow's per-level depth or width) is kept as the text results.csv holds, so
        # that the settings can be compared and grouped like any other value.
        row = {
            RENAMED.get(key, key): str(value) if isinstance(value, list) else value
            for key, value in row.items()
        }
        row["job"] = str(path.parent.relative_to(sweep_dir)) if path.parent != sweep_dir else "."
        rows.append(row)
    if renamed:
        log.warning(
            "rows under %s use old column names (%s); read as %s. Re-run the jobs to write the "
            "new names: the old ones are read only until 0.3.0.",
            sweep_dir,
            ", ".join(sorted(renamed)),
            ", ".join(RENAMED[old] for old in sorted(renamed)),
        )
    return pd.DataFrame(rows)


def _series(frame: pd.DataFrame) -> pd.Series:
    """A label per row from the settings that vary among the rows of its mechanism (besides
    epsilon), e.g. ``levels=coarsest`` or ``cell=16``."""
    varying = {
        mechanism: [k for k in SERIES_KEYS if k in group and group[k].nunique(dropna=True) > 1]
        for mechanism, group in frame.groupby("mechanism")
    }

    def label(row: pd.Series) -> str:
        parts = []
        for key in varying.get(row["mechanism"], []):
            value = row[key]
            if isinstance(value, float):
                if math.isnan(value):
                    continue
                if value.is_integer():
                    value = int(value)
            if key in ("flow_ckpt", "classifier") and isinstance(value, str):
                value = Path(value).parent.parent.name or value
            parts.append(f"{key}={value}")
        return ", ".join(parts)

    return frame.apply(label, axis=1) if len(frame) else pd.Series(dtype=str)


def _original_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The no-privacy baseline for each classifier/data in the sweep."""
    rows = []
    keys = [k for k in ("classifier", "data", "shift", "shift_value") if k in frame]
    for _, group in frame.groupby(keys, dropna=False) if keys else [(None, frame)]:
        first = group.iloc[0]
        row: dict[str, Any] = {k: first[k] for k in keys}
        row.update(
            mechanism=ORIGINAL,
            series="",
            epsilon_per_image=math.inf,
            epsilon_per_element=math.inf,
            n_images=first.get("n_images"),
            private=False,
        )
        row["u1/auc_priv_mean"] = first["u1/auc_orig_mean"]
        row["u1/retention"] = 1.0
        for col in frame.columns:
            if col.startswith("u1/auc_orig_"):
                row[col] = first[col]
                row["u1/auc_priv_" + col.removeprefix("u1/auc_orig_")] = first[col]
            if col.startswith("p2/orig_"):
                row["p2/" + col.removeprefix("p2/orig_")] = first[col]
        for col in (
            "p2/chance_top1", "p2/chance_map", "p2/constant_top1", "p1/chance_top1",
            "p1/chance_top5",
        ):  # fmt: skip
            if col in frame:
                row[col] = first[col]
        if "u2/auc_train_orig_mean" in frame:
            row["u2/auc_train_priv_mean"] = group["u2/auc_train_orig_mean"].dropna().mean()
            row["u2/retention"] = 1.0
        row.update(
            {
                "fidelity/psnr": math.inf,
                "fidelity/ssim": 1.0,
                "fidelity/cosine": 1.0,
                "fidelity/frechet": 0.0,
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def merge(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by mechanism, setting and per-image epsilon, with the baseline on top."""
    frame = frame.copy()
    frame["series"] = _series(frame)
    frame = frame.sort_values(["mechanism", "series", "epsilon_per_image"], kind="stable")
    return pd.concat([_original_rows(frame), frame], ignore_index=True)


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return "" if value is None else str(value)


def markdown(frame: pd.DataFrame) -> str:
    columns = [(c, h) for c, h in MD_COLUMNS if c in frame and frame[c].notna().any()]
    rows = [{h: row[c] for c, h in columns} for _, row in frame.iterrows()]
    table = markdown_table(rows, columns=[h for _, h in columns], fmt=_fmt)
    n = frame["n_images"].dropna()
    splits = frame["split"].dropna().unique() if "split" in frame else []
    split = "/".join(map(str, splits)) or "test"
    note = (
        f"\n{int(n.iloc[0])} {split} images. retention = (AUC_priv - 0.5) / (AUC_orig - 0.5); "
        "link@k: privatized image's own original among the k nearest originals (pixel L2 / "
        "classifier-embedding cosine); re-id: another image of the same patient ranked first / "
        "mean average precision (const@1: what a fixed ranking scores, i.e. the largest patient's "
        "share of the queries); FD emb: Frechet distance in the classifier's embedding; real AUC: "
        "a fixed discriminator's cross-validated AUC for released vs original images (prior: "
        "the flow's prior samples vs originals; real-real: two halves of the originals, the "
        "chance level), 0.5 = indistinguishable.\n"
        if len(n)
        else ""
    )
    return table + "\n" + note


def build_report(sweep_dir: str | Path) -> pd.DataFrame:
    """Write ``results.csv``, ``results.md``, the plot and the grid into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    frame = merge(load_rows(sweep_dir))
    frame.to_csv(sweep_dir / RESULTS_CSV, index=False)
    (sweep_dir / RESULTS_MD).write_text(markdown(frame))
    plot(frame, sweep_dir / PLOT_FILE)
    image_grid(frame, sweep_dir, sweep_dir / GRID_FILE)
    log.info("merged %d rows into %s", len(frame) - 1, sweep_dir / RESULTS_CSV)
    return frame


class MergeResults(Callback):
    """Hydra callback: merge the jobs' rows when a multirun (or a single run) ends."""

    def _merge(self, folder: str) -> None:
        from lightning_fabric.utilities.rank_zero import rank_zero_only

        if getattr(rank_zero_only, "rank", 0) != 0:
            return  # an extra rank of a multi-device job: rank 0 writes the row and merges
        try:
            build_report(folder)
        except NoRowsError:
            log.warning("no evaluation rows in %s: nothing to merge (did every job fail?)", folder)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._merge(config.hydra.sweep.dir)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._merge(config.hydra.runtime.output_dir)
