"""Lightning predict loop for privatization: file reading, batching, and an atomic writer.

Over several devices (``trainer.strategy=ddp``) each rank reads a disjoint shard of the files and
writes its outputs and manifest rows as they finish; ``pipeline.privatize`` merges the rows once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dpglow.data.io import _is_dicom, read_image
from dpglow.flow import to_uint8
from dpglow.privatization.dicom import write_deidentified_dicom
from dpglow.privatization.files import atomic_write_png, iter_inputs

log = logging.getLogger(__name__)


class InputImages(IterableDataset):
    """Streams ``{"path", "input", "output", "image" | None, "error" | None}`` for the images
    under ``root`` whose outputs do not exist yet (a re-run resumes). Unreadable files are passed
    on with their error, so they are reported and the rest continue.

    Files are listed lazily (one folder at a time) and dealt round-robin to ``world_size`` ranks
    times the DataLoader workers of each, so every file is read by exactly one worker of one rank.
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
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.root, self.output_dir = root, output_dir
        self.image_size, self.dicom_output = image_size, dicom_output
        self.rank, self.world_size = rank, world_size

    def _done(self, path: Path, output: str) -> bool:
        if not (self.output_dir / output).is_file():
            return False
        return (
            not (self.dicom_output and _is_dicom(path))
            or (self.output_dir / output).with_suffix(".dcm").is_file()
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        shards, shard = self.world_size * workers, self.rank * workers + worker_id
        for i, (path, output) in enumerate(iter_inputs(self.root)):
            if i % shards != shard or self._done(path, output):
                continue
            item = {
                "path": str(path),
                "input": path.relative_to(self.root).as_posix(),
                "output": output,
                "image": None,
                "error": None,
            }
            try:
                item["image"] = torch.tensor(read_image(path, self.image_size))[None]
            except Exception as err:  # any unreadable file is reported, never fatal
                item["error"] = f"{type(err).__name__}: {err}"
            yield item


def collate_inputs(items: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [i for i in items if i["image"] is not None]
    return {
        "images": torch.stack([i["image"] for i in ok]) if ok else None,
        "ok": [{k: i[k] for k in ("path", "input", "output")} for i in ok],
        "failed": [i for i in items if i["image"] is None],
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
    ) -> None:
        super().__init__()
        self.root, self.output_dir = root, output_dir
        self.image_size, self.dicom_output = image_size, dicom_output
        self.batch_size, self.num_workers = batch_size, num_workers

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
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_inputs,
        )


def image_noise_seed(noise_seed: int, key: str) -> int:
    """The seed of one image's noise in seeded (test) mode: 63 bits of SHA-256 of the run's
    ``noise_seed`` and the file's relative path, so an image gets the same noise whatever the
    batching, DataLoader workers or number of ranks."""
    digest = hashlib.sha256(f"{noise_seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class PrivatizeModule(pl.LightningModule):
    """Wraps a privatizer (latent or image space) for ``Trainer.predict``.

    Without ``noise_seed`` (a release) each rank draws batched noise from its own OS-entropy
    generator. With ``noise_seed`` (tests only, NOT private) every image is privatized on its own
    with the generator re-seeded by :func:`image_noise_seed`, so outputs are reproducible and
    identical on one process or several.
    """

    def __init__(self, privatizer: Any, *, noise_seed: int | None = None) -> None:
        super().__init__()
        self.privatizer = privatizer
        if isinstance(getattr(privatizer, "flow", None), torch.nn.Module):
            self.flow = privatizer.flow  # registered, so Lightning moves it to the device
        self.noise_seed = noise_seed
        self.generator: torch.Generator | None = None
        self.noise_source: str | None = None
        self.record: Any = None

    def on_predict_start(self) -> None:
        from dpglow.privacy import noise_generator

        self.generator, self.noise_source = noise_generator(
            noise_seed=self.noise_seed, device=self.device
        )

    def _privatize(self, images: torch.Tensor) -> torch.Tensor:
        out, self.record = self.privatizer(
            images, generator=self.generator, noise_source=self.noise_source
        )
        return out

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        result = {"ok": batch["ok"], "failed": batch["failed"], "images": None}
        images = batch["images"]
        if images is None:
            return result
        if self.noise_seed is None:
            result["images"] = self._privatize(images).cpu()
            return result
        outputs = []
        for image, item in zip(images.split(1), batch["ok"], strict=True):
            # Re-seeding keeps the generator registered as seeded (NOT PRIVATE) in the records.
            self.generator.manual_seed(image_noise_seed(self.noise_seed, item["input"]))
            outputs.append(self._privatize(image))
        result["images"] = torch.cat(outputs).cpu()
        return result


class ImagePrivatizer:
    """Image-space baselines (pixel_laplace, dp_pix): [0, 1] pixels -> mechanism -> clamp."""

    def __init__(self, *, mechanism: Any) -> None:
        self.mechanism = mechanism

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, *, generator, noise_source: str):
        noisy, record = self.mechanism(
            images.float() / 255.0, generator=generator, noise_source=noise_source
        )
        return to_uint8(noisy.clamp(0.0, 1.0) - 0.5), record


def rows_path(output_dir: Path, rank: int) -> Path:
    """Where rank ``rank`` streams its manifest rows, one JSON object per line, and its privacy
    record last (a temporary: removed once merged, and by ``remove_stale_temporaries`` when a
    killed run left it)."""
    return output_dir / f".manifest-rank{rank}.jsonl.tmp"


class PrivatizedImageWriter(BasePredictionWriter):
    """Writes each batch as it finishes (atomic PNGs, optional de-identified DICOMs) and streams
    its manifest rows, one JSON line each, to this rank's :func:`rows_path`; nothing per file is
    kept in memory, only the counts."""

    def __init__(self, output_dir: Path, *, dicom_output: bool) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.dicom_output = output_dir, dicom_output
        self.counts = {"ok": 0, "failed": 0}
        self._fh: Any = None

    def on_predict_start(self, trainer, pl_module) -> None:
        path = rows_path(self.output_dir, trainer.global_rank)
        self._fh = open(path, "w")  # noqa: SIM115  (closed in on_predict_end / teardown)

    def on_predict_end(self, trainer, pl_module) -> None:
        record = getattr(pl_module, "record", None)
        if record is not None:
            self._fh.write(json.dumps({"record": record.as_dict()}) + "\n")
        self._close()
        log.info(
            "rank %d: wrote %d images, %d failed",
            trainer.global_rank,
            self.counts["ok"],
            self.counts["failed"],
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

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        for item in prediction["failed"]:
            log.warning("failed: %s (%s)", item["path"], item["error"])
            self._row(item["input"], "", "failed", item["error"])
        if prediction["images"] is None:
            return
        for item, image in zip(prediction["ok"], prediction["images"], strict=True):
            target = self.output_dir / item["output"]
            try:
                pixels = image[0].numpy()
                atomic_write_png(target, pixels)
                if self.dicom_output and _is_dicom(Path(item["path"])):
                    write_deidentified_dicom(Path(item["path"]), pixels, target.with_suffix(".dcm"))
                self._row(item["input"], item["output"], "ok")
            except Exception as err:
                log.warning("failed to write %s: %s", target, err)
                self._row(item["input"], item["output"], "failed", f"{type(err).__name__}: {err}")
