"""Lightning predict loop for privatization: file reading, batching, and an atomic writer.

Over several devices (``trainer.strategy=ddp``) each rank reads a disjoint shard of the files and
writes its outputs and manifest rows as they finish; ``task.privatize`` merges the rows once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dpglow.data.io import DEFAULT_MAX_PIXELS, check_max_pixels, read_image
from dpglow.release.files import (
    is_done,
    iter_inputs,
)

log = logging.getLogger(__name__)


class InputImages(IterableDataset):
    """Streams ``{"path", "input", "output", "status", "image" | None, "error" | None}`` for
    every file under ``root`` but the images whose outputs exist already (a re-run resumes).
    Unreadable files are passed on with their error, files that are not images with the reason
    they are skipped (``status`` "skipped"), so every file gets a manifest row.

    Files are listed lazily (one folder at a time) and dealt round-robin to ``world_size`` ranks
    times the DataLoader workers of each, so every file is read by exactly one worker of one rank.
    Images above ``max_pixels`` are refused before they are decoded.
    """

    def __init__(
        self,
        root: Path,
        output_dir: Path,
        *,
        image_size: int,
        dicom_output: bool,
        rank: int = 0,
        world_size: int = 1,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.root, self.output_dir = root, output_dir
        self.image_size, self.dicom_output = image_size, dicom_output
        self.rank, self.world_size = rank, world_size
        self.max_pixels = check_max_pixels(max_pixels)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        shards, shard = self.world_size * workers, self.rank * workers + worker_id
        for i, entry in enumerate(iter_inputs(self.root)):
            if i % shards != shard:
                continue
            pending = entry.status == "pending"
            if pending and is_done(self.output_dir, entry, dicom_output=self.dicom_output):
                continue
            item = {
                "path": str(entry.path),
                "input": entry.input,
                "output": entry.output,
                "status": entry.status,
                "image": None,
                "error": None if pending else entry.reason,
            }
            if pending:
                try:
                    image = read_image(entry.path, self.image_size, max_pixels=self.max_pixels)
                    item["image"] = torch.tensor(image)[None]
                except Exception as err:  # any unreadable file is reported, never fatal
                    item["error"] = f"{type(err).__name__}: {err}"
            yield item


def collate_inputs(items: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [i for i in items if i["image"] is not None]
    return {
        "images": torch.stack([i["image"] for i in ok]) if ok else None,
        "ok": [{k: i[k] for k in ("path", "input", "output")} for i in ok],
        # The images' relative paths, for a labeler that reads the data holder's label table.
        "names": [i["input"] for i in ok],
        "failed": [i for i in items if i["image"] is None and i["status"] != "skipped"],
        "skipped": [i for i in items if i["status"] == "skipped"],
    }


class InputFolder(pl.LightningDataModule):
    """The predict dataloader over :class:`InputImages`, built once the strategy knows this
    process's global rank and the world size."""

    def __init__(
        self,
        root: Path,
        output_dir: Path,
        *,
        image_size: int,
        dicom_output: bool,
        batch_size: int,
        num_workers: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__()
        self.root, self.output_dir = root, output_dir
        self.image_size, self.dicom_output = image_size, dicom_output
        self.batch_size, self.num_workers = batch_size, num_workers
        self.max_pixels = check_max_pixels(max_pixels)

    def predict_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world_size = (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)
        dataset = InputImages(
            self.root,
            self.output_dir,
            image_size=self.image_size,
            dicom_output=self.dicom_output,
            rank=rank,
            world_size=world_size,
            max_pixels=self.max_pixels,
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_inputs,
        )
