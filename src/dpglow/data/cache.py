"""Decode image files once into an on-disk uint8 tensor store, reused while files are unchanged."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from dpglow.data.io import PREPROCESS_VERSION, read_image
from dpglow.data.paths import DataFormatError
from dpglow.utils.cache import key_of
from dpglow.utils.files import atomic_save

log = logging.getLogger(__name__)

_FORMAT = 1  # layout of the cache file itself


def default_cache_dir() -> Path:
    """``~/.cache/dpglow`` (used when no cache_dir is configured)."""
    return Path.home() / ".cache" / "dpglow"


def file_stamp(path: str) -> tuple[int, int]:
    """(size in bytes, mtime in ns): changes whenever the file is rewritten."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@dataclass
class CacheResult:
    """Images for the requested paths that could be decoded, in request order."""

    images: torch.Tensor  # uint8 [K, 1, S, S]
    kept: np.ndarray  # int64 [K]: positions in the requested path list
    failed: dict[str, str] = field(default_factory=dict)  # path -> error message
    n_decoded: int = 0


def _stamps(paths: Sequence[str]) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """(each readable path's size-and-mtime stamp, the unreadable paths with their errors)."""
    stamps: dict[str, tuple[int, int]] = {}
    failed: dict[str, str] = {}
    for p in paths:
        try:
            stamps[p] = file_stamp(p)
        except OSError as exc:
            failed[p] = f"{p}: cannot read ({exc})"
    return stamps, failed


def _stale(stamps: dict, data: dict, row_of: dict[str, int], failed: dict[str, str]) -> list[str]:
    """The paths to decode: not cached, or changed since. A file that failed before and has not
    changed fails again without decoding (added to ``failed``)."""
    cached_stamps = data["stamps"].tolist()
    old_failed: dict[str, list] = data["failed"]
    todo = []
    for p, stamp in stamps.items():
        if p in row_of and tuple(cached_stamps[row_of[p]]) == stamp:
            continue
        if p in old_failed and tuple(old_failed[p][:2]) == stamp:
            failed[p] = old_failed[p][2]
            continue
        todo.append(p)
    return todo


class ImageCache:
    """A decoded uint8 image store for one dataset root at one resolution.

    The file ``<cache_dir>/<name>_<size>px_<version>_<hash(root)>.pt`` holds, per image path,
    its (size, mtime) stamp and its decoded pixels. Only entries whose stamp no longer matches
    (or that are new) are decoded again; unreadable files are remembered with their error so a
    ``skip_unreadable`` run does not retry them. Writes are atomic (temporary file + rename), so
    concurrent processes (e.g. DDP ranks) never read a half-written cache.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None,
        name: str,
        root: str | os.PathLike[str],
        size: int,
        workers: int | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.size = int(size)
        root_hash = key_of([str(Path(root).resolve())])[:10]
        self.path = self.cache_dir / f"{name}_{self.size}px_{PREPROCESS_VERSION}_{root_hash}.pt"
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)

    def _empty(self) -> dict:
        return {
            "format": _FORMAT,
            "version": PREPROCESS_VERSION,
            "size": self.size,
            "keys": [],
            "stamps": torch.zeros(0, 2, dtype=torch.int64),
            "images": torch.zeros(0, 1, self.size, self.size, dtype=torch.uint8),
            "failed": {},
        }

    def _load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            # mmap: pages are read on use and shared between processes (e.g. loader workers).
            data = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            ok = (
                data.get("format") == _FORMAT
                and data.get("version") == PREPROCESS_VERSION
                and data.get("size") == self.size
            )
        except Exception as exc:  # a corrupt cache is only a lost speed-up: rebuild it
            log.warning("ignoring unreadable image cache %s (%s)", self.path, exc)
            return None
        return data if ok else None

    def _save(self, data: dict) -> None:
        atomic_save(data, self.path)

    def _decode(self, paths: Sequence[str]) -> tuple[torch.Tensor, np.ndarray, dict[str, str]]:
        """Decode ``paths`` into a preallocated ``[N,1,S,S]`` tensor (no second full copy)."""
        out = torch.empty(len(paths), 1, self.size, self.size, dtype=torch.uint8)
        ok = np.zeros(len(paths), dtype=bool)
        failed: dict[str, str] = {}

        def work(i: int) -> None:
            try:
                out[i, 0].numpy()[...] = read_image(paths[i], self.size)
                ok[i] = True
            except (DataFormatError, OSError) as exc:
                failed[paths[i]] = str(exc)

        # Threads suffice: PIL releases the GIL while decoding and resizing (about 2x on 2
        # cores), without the start-up cost and fork hazards of a process pool next to torch.
        # rich's bar on a terminal (transient), nothing in logs and CI
        with (
            Progress(transient=True, disable=not sys.stderr.isatty()) as bar,
            ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool,
        ):
            task = bar.add_task(f"decoding {self.size}px", total=len(paths))
            for _ in pool.map(work, range(len(paths))):
                bar.advance(task)
        return out[torch.from_numpy(ok)], ok, failed

    def get(self, paths: Sequence[str], *, skip_unreadable: bool = False) -> CacheResult:
        """Return decoded images ``[K, 1, S, S]`` for ``paths``, decoding only what is missing.

        Raises DataFormatError naming the first unreadable file unless ``skip_unreadable``.
        """
        t0 = time.perf_counter()
        stamps, failed = _stamps(paths)
        data = self._load() or self._empty()
        row_of = {k: i for i, k in enumerate(data["keys"])}
        todo = _stale(stamps, data, row_of, failed)

        if todo:
            images, ok, new_failed = self._decode(todo)
            failed.update(new_failed)
            elapsed = time.perf_counter() - t0
            log.info(
                "decoded %d images at %dpx in %.1f s (%.2f ms/image); cache %s",
                len(todo),
                self.size,
                elapsed,
                1e3 * elapsed / len(todo),
                self.path,
            )
            decoded = [p for p, good in zip(todo, ok, strict=True) if good]
            data = self._merge(data, decoded, images, new_failed, stamps)
            self._save(data)
            row_of = {k: i for i, k in enumerate(data["keys"])}

        if failed and not skip_unreadable:
            first = next(iter(failed.values()))
            raise DataFormatError(
                f"{len(failed)} unreadable image(s), first: {first}. Fix or remove the files, or "
                "set data.skip_unreadable=true to drop them."
            )
        kept = np.array([i for i, p in enumerate(paths) if p not in failed], dtype=np.int64)
        rows = np.array([row_of[paths[i]] for i in kept], dtype=np.int64)
        if len(rows) == len(data["keys"]) and np.array_equal(rows, np.arange(len(rows))):
            images = data["images"]  # the usual case: the whole cache, in order, no copy
        else:
            images = data["images"][torch.from_numpy(rows)]
        if not todo:
            log.info(
                "loaded %d cached images at %dpx from %s in %.2f s",
                len(kept),
                self.size,
                self.path,
                time.perf_counter() - t0,
            )
        return CacheResult(images=images, kept=kept, failed=failed, n_decoded=len(todo))

    def _merge(
        self,
        data: dict,
        decoded: list[str],
        images: torch.Tensor,
        new_failed: dict[str, str],
        stamps: dict[str, tuple[int, int]],
    ) -> dict:
        """Old entries that were not decoded again, then the new ones."""
        replaced = set(decoded) | set(new_failed)
        keep = torch.as_tensor(
            [i for i, k in enumerate(data["keys"]) if k not in replaced], dtype=torch.int64
        )
        failed = {k: v for k, v in data["failed"].items() if k not in replaced}
        failed.update({k: [*stamps[k], msg] for k, msg in new_failed.items()})
        new_stamps = torch.tensor([stamps[k] for k in decoded], dtype=torch.int64).reshape(-1, 2)
        return {
            "format": _FORMAT,
            "version": PREPROCESS_VERSION,
            "size": self.size,
            "keys": [data["keys"][i] for i in keep.tolist()] + decoded,
            "stamps": torch.cat([data["stamps"][keep], new_stamps]),
            "images": torch.cat([data["images"][keep], images]),
            "failed": failed,
        }
