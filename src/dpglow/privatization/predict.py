"""Lightning predict loop for privatization: file reading, batching, and an atomic writer.

Over several devices (``trainer.strategy=ddp``) each rank reads a disjoint shard of the files and
writes its outputs and manifest rows as they finish; ``pipeline.privatize`` merges the rows once.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dpglow.data.io import DEFAULT_MAX_PIXELS, check_max_pixels, is_dicom, read_image
from dpglow.privatization.dicom import DicomDeidentifier
from dpglow.privatization.files import (
    atomic_write_png,
    check_token,
    is_done,
    iter_inputs,
    new_run_token,
    shown,
)
from dpglow.privatization.manifest import rows_path
from dpglow.utils.files import atomic_write_bytes

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


class PrivatizedImageWriter(BasePredictionWriter):
    """Writes each batch as it finishes (atomic PNGs, optional de-identified DICOMs) and streams
    its manifest rows, one JSON line each, to this rank's :func:`rows_path`, flushed per batch;
    nothing per file is kept in memory, only the counts.

    ``run_token`` names this run's temporaries (rank 0's is sent to every rank when the loop
    starts); the DICOM UID key is drawn then too, shared by the ranks and never stored.
    """

    def __init__(self, output_dir: Path, *, dicom_output: bool, run_token: str | None = None):
        super().__init__(write_interval="batch")
        self.output_dir, self.dicom_output = output_dir, dicom_output
        self.run_token = None if run_token is None else check_token(run_token)
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self._fh: Any = None
        self._deidentifier: DicomDeidentifier | None = None

    def on_predict_start(self, trainer, pl_module) -> None:
        token, uid_key = trainer.strategy.broadcast(
            (self.run_token or new_run_token(), secrets.token_hex(16)), src=0
        )
        self.run_token = check_token(token)
        if self.dicom_output:
            self._deidentifier = DicomDeidentifier(uid_key=uid_key)
        path = rows_path(self.output_dir, trainer.global_rank, run_token=self.run_token)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "w", encoding="utf-8")  # noqa: SIM115  (closed in _close)

    def on_predict_end(self, trainer, pl_module) -> None:
        record = getattr(pl_module, "record", None)
        if record is not None:
            self._fh.write(json.dumps({"record": record.as_dict()}) + "\n")
        self._close()
        log.info(
            "rank %d: wrote %d images, %d failed, %d skipped",
            trainer.global_rank,
            self.counts["ok"],
            self.counts["failed"],
            self.counts["skipped"],
        )

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._close()

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _row(self, rel: str, output: str, status: str, error: str = "") -> None:
        row = {"input": rel, "output": output, "status": status, "error": error}
        self._fh.write(json.dumps(row) + "\n")
        self.counts[status] += 1

    def _write(self, item: dict[str, Any], pixels: np.ndarray) -> None:
        """The PNG (and the DICOM twin), the DICOM made first: a header that cannot be
        de-identified fails the file before anything of it is written."""
        target, source = self.output_dir / item["output"], Path(item["path"])
        dicom = None
        if self._deidentifier is not None and is_dicom(source):
            dicom = self._deidentifier.dicom_bytes(source, pixels)
        atomic_write_png(target, pixels, run_token=self.run_token)
        if dicom is not None:
            atomic_write_bytes(target.with_suffix(".dcm"), dicom, token=self.run_token)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        for item in batch.get("skipped", ()):
            log.info("skipped: %s (%s)", shown(item["path"]), item["error"])
            self._row(item["input"], "", "skipped", item["error"])
        for item in prediction["failed"]:
            log.warning("failed: %s (%s)", shown(item["path"]), shown(item["error"]))
            self._row(item["input"], "", "failed", item["error"])
        released = prediction["released"]
        if released is not None:
            for item, image in zip(prediction["ok"], released, strict=True):
                try:
                    self._write(item, image[0].numpy())
                    self._row(item["input"], item["output"], "ok")
                except Exception as err:
                    log.warning("failed to write %s: %s", shown(item["output"]), shown(str(err)))
                    error = f"{type(err).__name__}: {err}"
                    self._row(item["input"], item["output"], "failed", error)
        self._fh.flush()  # a killed run keeps the rows of every finished batch
