"""Throughput of the release itself: ``privatize``'s privatizer, models found as
``python src/privatize.py`` finds them, on real held-out images (``benchmark.release``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from dpglow.data.subsets import load_split
from dpglow.privacy import noise_generator
from dpglow.release.models import flow_training_config
from dpglow.release.task import build_release

log = logging.getLogger(__name__)


def _privatize_config(conf_dir: Path, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        return compose(config_name="privatize", overrides=overrides)


def release_row(
    *, conf_dir: Path, overrides: list[str], images: int, batch_size: int, repeats: int = 2
) -> dict[str, Any]:
    """Images per second of the privatizer ``conf/privatize.yaml`` + ``overrides`` builds, over
    ``images`` test images of the flow's data in batches of ``batch_size``, fresh OS-entropy
    noise, the best of ``repeats`` passes (after one warm-up batch)."""
    cfg = _privatize_config(conf_dir, overrides)
    privatizer, size, checkpoint = build_release(cfg)
    data_cfg = flow_training_config(cfg) if checkpoint else cfg
    test = load_split(data_cfg, image_size=size, split="test", limit=images).images
    generator, source = noise_generator()
    privatizer(test[:batch_size], generator=generator, noise_source=source)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for chunk in test.split(batch_size):
            privatizer(chunk, generator=generator, noise_source=source)
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    row = {
        "release": " ".join(overrides) or "default",
        "privatizer": privatizer.name,
        "epsilon": float(privatizer.record().epsilon_per_image),
        "images": len(test),
        "batch": batch_size,
        "threads": torch.get_num_threads(),
        "seconds": round(best, 3),
        "images_per_s": round(len(test) / best, 1),
        "flow": (checkpoint or {}).get("path"),
    }
    describe = privatizer.describe()
    keys = ("render_candidates", "render_margin", "render_guidance", "temperature",
            "other_levels_temperature", "labeler")  # fmt: skip
    for key in keys:
        if key in describe:
            row[key] = describe[key]
    log.info("release throughput: %s", row)
    return row


def release_rows(cfg: Any, conf_dir: Path) -> list[dict[str, Any]]:
    """One row per ``benchmark.release.settings`` entry (a list of privatize overrides) at each
    of ``release.epsilons``."""
    spec = cfg.release
    rows = []
    for overrides in OmegaConf.to_container(spec.settings, resolve=True):
        for epsilon in spec.epsilons:
            rows.append(
                release_row(
                    conf_dir=conf_dir,
                    overrides=[*overrides, f"epsilon={epsilon}"],
                    images=int(spec.images),
                    batch_size=int(spec.batch_size),
                )
            )
    return rows
