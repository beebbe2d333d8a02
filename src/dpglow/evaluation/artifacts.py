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

log = logging.getLogger(__name__)


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and bytes."""
    t = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def key_of(parts: Any) -> str:
    """A short stable hash of JSON-able ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def cached(cache_dir: str | Path | None, kind: str, key: str, make: Callable[[], dict]) -> dict:
    """Load ``<cache_dir>/<kind>/<key>.pt`` or make it, write it atomically and return it."""
    if cache_dir is None:
        return make()
    path = Path(cache_dir) / kind / f"{key}.pt"
    if path.is_file():
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
            log.info("reusing %s %s", kind, path)
            return value
        except Exception as err:  # a damaged cache file is rebuilt, never trusted
            log.warning("ignoring unreadable cache file %s (%s); recomputing", path, err)
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(value, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return value
