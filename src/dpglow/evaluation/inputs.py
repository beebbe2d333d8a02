"""The images an evaluation job scores, and the check that no model it uses trained on them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dpglow.data.subsets import LabelledImages, load_split
from dpglow.evaluation.shift import build_shift
from dpglow.utils.discovery import training_paths

log = logging.getLogger(__name__)

# eval.split: the held-out test split reports; settings are searched on the validation split.
SPLITS = ("test", "val")


class LeakageError(ValueError):
    """Evaluation images were seen by the flow or the classifier during training."""


def evaluation_images(
    cfg: DictConfig, *, image_size: int
) -> tuple[str, LabelledImages, dict[str, Any]]:
    """``(eval.split, its images at image_size, the shift's description)``: all of them, or
    ``eval.max_images`` of them (a seeded subset, see :func:`~dpglow.data.subsets.load_split`),
    after the configured shift (:mod:`dpglow.evaluation.shift`; a collection replaces them)."""
    split = cfg.eval.split
    if split not in SPLITS:
        raise ValueError(f"eval.split must be test or val (a search scores on val), got {split!r}")
    images = load_split(cfg, image_size=image_size, split=split, limit=cfg.eval.max_images)
    shift = build_shift(cfg)
    return split, shift(images), shift.describe()


def check_no_leakage(
    images: LabelledImages, runs: dict[str, Path | None], split: str = "test"
) -> None:
    """Refuse to evaluate on images a model trained on, or (for the test split) validated on (the
    threat model; the validation split is where settings are searched). ``runs`` maps a model's
    name to its run folder (``None``: unknown, warned about)."""
    used = ("train",) if split == "val" else ("train", "val")
    for what, run_dir in runs.items():
        seen = training_paths(run_dir, used)
        if seen is None:
            log.warning(
                "cannot verify that the %s never saw the test images (no splits.csv beside its "
                "checkpoint); make sure it was trained on this data's training split",
                what,
            )
            continue
        leaked = [p for p in images.paths if p in seen]
        if leaked:
            raise LeakageError(
                f"{len(leaked)} of the {len(images.paths)} evaluation images were in the {what}'s "
                f"training or validation split (e.g. {leaked[0]}; run {run_dir}). Evaluate with "
                "the same data settings (seed, fractions, data.max_images) the models were "
                "trained with, or retrain them on this split."
            )
