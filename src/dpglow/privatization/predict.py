"""Lightning predict loop for privatization: file reading, batching, and an atomic writer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import IterableDataset, get_worker_info

from dpglow.data.io import _is_dicom, read_image
from dpglow.flow import to_uint8
from dpglow.privatization.dicom import write_deidentified_dicom
from dpglow.privatization.files import atomic_write_png, iter_inputs

log = logging.getLogger(__name__)


class InputImages(IterableDataset):
    """Streams ``{"path", "output", "image" | None, "error" | None}`` for the images under
    ``root`` whose outputs do not exist yet (a re-run resumes). Unreadable files are passed on
    with their error, so they are reported and the rest continue."""

    def __init__(self, root: Path, output_dir: Path, *, image_size: int, dicom_output: bool):
        self.root, self.output_dir = root, output_dir
        self.image_size, self.dicom_output = image_size, dicom_output

    def _done(self, path: Path, output: str) -> bool:
        if not (self.output_dir / output).is_file():
            return False
        return (
            not (self.dicom_output and _is_dicom(path))
            or (self.output_dir / output).with_suffix(".dcm").is_file()
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        for i, (path, output) in enumerate(iter_inputs(self.root)):
            if worker is not None and i % worker.num_workers != worker.id:
                continue
            if self._done(path, output):
                continue
            item = {"path": str(path), "output": output, "image": None, "error": None}
            try:
                item["image"] = torch.tensor(read_image(path, self.image_size))[None]
            except Exception as err:  # any unreadable file is reported, never fatal
                item["error"] = f"{type(err).__name__}: {err}"
            yield item


def collate_inputs(items: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [i for i in items if i["image"] is not None]
    return {
        "images": torch.stack([i["image"] for i in ok]) if ok else None,
        "ok": [{"path": i["path"], "output": i["output"]} for i in ok],
        "failed": [i for i in items if i["image"] is None],
    }


class PrivatizeModule(pl.LightningModule):
    """Wraps a privatizer (latent or image space) for ``Trainer.predict``."""

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

        seed = None if self.noise_seed is None else self.noise_seed + self.global_rank
        self.generator, self.noise_source = noise_generator(noise_seed=seed, device=self.device)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        result = {"ok": batch["ok"], "failed": batch["failed"], "images": None}
        if batch["images"] is not None:
            images, record = self.privatizer(
                batch["images"], generator=self.generator, noise_source=self.noise_source
            )
            self.record = record
            result["images"] = images.cpu()
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


class PrivatizedImageWriter(BasePredictionWriter):
    """Writes each batch as it finishes (atomic PNGs, optional de-identified DICOMs) and keeps the
    manifest rows."""

    def __init__(self, input_dir: Path, output_dir: Path, *, dicom_output: bool) -> None:
        super().__init__(write_interval="batch")
        self.input_dir, self.output_dir, self.dicom_output = input_dir, output_dir, dicom_output
        self.rows: list[dict[str, str]] = []

    def _row(self, path: str, output: str, status: str, error: str = "") -> None:
        rel = str(Path(path).relative_to(self.input_dir))
        self.rows.append({"input": rel, "output": output, "status": status, "error": error})

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        for item in prediction["failed"]:
            log.warning("failed: %s (%s)", item["path"], item["error"])
            self._row(item["path"], "", "failed", item["error"])
        if prediction["images"] is None:
            return
        for item, image in zip(prediction["ok"], prediction["images"], strict=True):
            target = self.output_dir / item["output"]
            try:
                pixels = image[0].numpy()
                atomic_write_png(target, pixels)
                if self.dicom_output and _is_dicom(Path(item["path"])):
                    write_deidentified_dicom(Path(item["path"]), pixels, target.with_suffix(".dcm"))
                self._row(item["path"], item["output"], "ok")
            except Exception as err:
                log.warning("failed to write %s: %s", target, err)
                self._row(item["path"], item["output"], "failed", f"{type(err).__name__}: {err}")
