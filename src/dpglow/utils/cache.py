"""The one content-keyed on-disk cache: a value stored under ``<dir>/<kind>/<key>.pt``, where
``key`` hashes everything the value depends on (:func:`key_of`), written atomically and loaded
with ``weights_only=True``; an unreadable entry is recomputed, never trusted."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

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
