"""The release folder's writer: each batch's outputs written atomically as it finishes, and its
manifest rows streamed to this rank's rows file."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning.callbacks import BasePredictionWriter

from dpglow.data.io import is_dicom
from dpglow.release.dicom import DicomDeidentifier
from dpglow.release.files import (
    atomic_write_png,
    check_token,
    new_run_token,
    shown,
)
from dpglow.release.manifest import rows_path
from dpglow.utils.files import atomic_write_bytes

log = logging.getLogger(__name__)


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
