"""Content-keyed, atomically written tensors shared by the jobs of one sweep.

The original images' classifier scores and embeddings are computed once per sweep, and a
privatized set is reused by every job that only changes the attacker or a metric: each is stored
under ``<sweep>/cache/<kind>/<key>.pt`` where ``key`` hashes everything that determines it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dpglow.data.subsets import LabelledImages, tensor_digest
from dpglow.utils.files import atomic_save

log = logging.getLogger(__name__)


def key_of(parts: Any) -> str:
    """A short stable hash of JSON-able ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def load_cached(cache_dir: str | Path | None, kind: str, key: str) -> dict | None:
    """``<cache_dir>/<kind>/<key>.pt`` when it is there and readable, else ``None``."""
    if cache_dir is None:
        return None
    path = Path(cache_dir) / kind / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged cache file is rebuilt, never trusted
        log.warning("ignoring unreadable cache file %s (%s); recomputing", path, err)
        return None
    log.info("reusing %s %s", kind, path)
    return value


def store(cache_dir: str | Path | None, kind: str, key: str, value: dict) -> None:
    """Write ``value`` to ``<cache_dir>/<kind>/<key>.pt`` atomically (nothing without a cache)."""
    if cache_dir is None:
        return
    atomic_save(value, Path(cache_dir) / kind / f"{key}.pt")


def cached(cache_dir: str | Path | None, kind: str, key: str, make: Callable[[], dict]) -> dict:
    """Load ``<cache_dir>/<kind>/<key>.pt`` or make it, write it atomically and return it."""
    value = load_cached(cache_dir, kind, key)
    if value is None:
        value = make()
        store(cache_dir, kind, key, value)
    return value


def cache_keys(
    cfg: DictConfig, images: LabelledImages, clf_info: dict, flow, flow_info: dict, privatizer
) -> tuple[str, str]:
    """(key of the originals' scores and embeddings, key of the privatized set): each hashes
    everything its tensors depend on, so a sweep computes each once."""
    images_key = tensor_digest(images.images)
    # (The "p2" tag keeps caches written before that entry existed from being read.)
    originals = key_of([clf_info["sha256"], images_key, "p2"])
    noise_seed = cfg.get("noise_seed")
    private = key_of(
        {
            "flow": flow_info["sha256"] if privatizer.needs_flow else flow.image_size,
            "privatizer": privatizer.describe(),
            "privacy": OmegaConf.to_container(cfg.privacy, resolve=True),
            "noise_seed": noise_seed,
            # Seeded noise is drawn per fixed batch of the images.
            "noise": "per batch" if noise_seed is None else f"per batch of {cfg.eval.batch_size}",
            "images": images_key,
        }
    )
    return originals, private
