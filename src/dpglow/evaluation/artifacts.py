"""Content-keyed, atomically written tensors shared by the jobs of one sweep.

The original images' classifier scores and embeddings are computed once per sweep, and a
privatized set is reused by every job that only changes the attacker or a metric: each is stored
under ``<sweep>/cache/<kind>/<key>.pt`` where ``key`` hashes everything that determines it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dpglow.data.subsets import tensor_digest  # noqa: F401  (re-exported)

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


def atomic_save(value: Any, path: Path) -> None:
    """``torch.save`` to a temporary beside ``path``, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(value, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached(cache_dir: str | Path | None, kind: str, key: str, make: Callable[[], dict]) -> dict:
    """Load ``<cache_dir>/<kind>/<key>.pt`` or make it, write it atomically and return it."""
    value = load_cached(cache_dir, kind, key)
    if value is None:
        value = make()
        store(cache_dir, kind, key, value)
    return value
