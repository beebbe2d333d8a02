"""MedMNIST's ChestMNIST and PneumoniaMNIST (array-backed; downloadable)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from dpglow.data.paths import DataFormatError, DatasetNotFoundError
from dpglow.data.sources.base import (
    SPLIT_NAMES,
    RecordSource,
    finish_records,
)

log = logging.getLogger(__name__)

# MedMNIST's ChestMNIST label order (medmnist.INFO["chestmnist"]["label"]) in xrv spelling.
CHESTMNIST_PATHOLOGIES: list[str] = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
]  # fmt: skip


class MedMNISTSource(RecordSource):
    """ChestMNIST / PneumoniaMNIST from MedMNIST's ``<flag>[_<size>].npz`` (array-backed).

    Loads offline from an existing .npz through the ``medmnist`` package; ``download=True``
    uses medmnist's own downloader when the file is absent. ``size`` is the file's resolution
    (one of ``available_sizes``); ``size=None`` takes the smallest not below ``image_size``
    (the resolution the images are read at), so nothing is upsampled. ``path`` is None and
    image ids are ``<split>_<index>``. MedMNIST ships no patient ids, so each image is its own
    patient; its official split (patient-disjoint for ChestMNIST, per NIH) is kept as
    ``official_split``.
    """

    pathologies_by_flag: ClassVar[dict[str, list[str]]] = {
        "chestmnist": CHESTMNIST_PATHOLOGIES,
        "pneumoniamnist": ["Pneumonia"],
    }
    available_sizes: ClassVar[tuple[int, ...]] = (28, 64, 128, 224)

    def __init__(
        self,
        flag: str = "chestmnist",
        root: str | os.PathLike[str] = "~/.medmnist",
        size: int | None = None,
        download: bool = False,
        image_size: int | None = None,
    ) -> None:
        if flag not in self.pathologies_by_flag:
            raise ValueError(f"flag must be one of {list(self.pathologies_by_flag)}, got {flag!r}")
        if size is None:
            if image_size is None:
                raise ValueError(
                    f"MedMNIST needs size (one of {self.available_sizes}) or image_size (the "
                    "resolution the images are read at, to choose the size from)"
                )
            size = self.size_for(image_size)
        if size not in self.available_sizes:
            raise ValueError(f"MedMNIST size must be one of {self.available_sizes}, got {size}")
        if download:
            Path(root).expanduser().mkdir(parents=True, exist_ok=True)
        super().__init__(root)
        self.flag, self.size, self.download = flag, size, download
        self.name = flag
        self.pathologies = list(self.pathologies_by_flag[flag])
        self._arrays: dict[str, np.ndarray] = {}

    @classmethod
    def size_for(cls, image_size: int) -> int:
        """The smallest MedMNIST size not below ``image_size`` (the largest when all are)."""
        return next((s for s in cls.available_sizes if s >= image_size), cls.available_sizes[-1])

    @property
    def npz_path(self) -> Path:
        """The file medmnist reads: ``<flag>.npz`` for 28 px, else ``<flag>_<size>.npz``."""
        return self.root / (
            f"{self.flag}.npz" if self.size == 28 else f"{self.flag}_{self.size}.npz"
        )

    def _load_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        import medmnist  # lazy: importing medmnist creates ~/.medmnist

        cls = getattr(medmnist, medmnist.INFO[self.flag]["python_class"])
        # Download only when the file is absent: medmnist would otherwise re-hash it each time.
        download = self.download and not self.npz_path.is_file()
        if not download and not self.npz_path.is_file():
            raise DatasetNotFoundError(
                f"{self.npz_path} does not exist. Run with `data={self.flag} data.download=true` "
                f"on a machine with internet (downloads {self.npz_path.name} from Zenodo), or "
                "copy the file there, or set data.root=/folder/with/the/npz."
            )
        try:
            ds = cls(split=split, root=str(self.root), size=self.size, download=download)
        except RuntimeError as exc:
            raise DatasetNotFoundError(f"{self.flag}: {exc}") from exc
        # ds.imgs / ds.labels, not len(ds): medmnist asserts its published sample counts.
        return np.asarray(ds.imgs), np.asarray(ds.labels)

    def _load_records(self) -> pd.DataFrame:
        frames = []
        for split in SPLIT_NAMES:
            imgs, labels = self._load_split(split)
            if imgs.ndim != 3:
                raise DataFormatError(
                    f"{self.npz_path}: expected grayscale images, got {imgs.shape}"
                )
            self._arrays[split] = imgs
            labels = labels.reshape(len(imgs), -1).astype(np.float32)
            if labels.shape[1] != len(self.pathologies):
                raise DataFormatError(
                    f"{self.npz_path}: {split}_labels has {labels.shape[1]} columns, "
                    f"expected {len(self.pathologies)} ({self.pathologies})"
                )
            ids = [f"{split}_{i:06d}" for i in range(len(imgs))]
            frame = pd.DataFrame(labels, columns=self.pathologies)
            frame.insert(0, "image_id", ids)
            frame.insert(1, "path", None)
            frame.insert(2, "patient_id", ids)
            frame.insert(3, "official_split", split)
            frames.append(frame)
        return finish_records(pd.concat(frames, ignore_index=True), self.pathologies, self.name)

    def array_images(self, image_ids: Sequence[str]) -> np.ndarray:
        """uint8 [N, H, W] pixels for ``image_ids`` (as produced by ``records()``)."""
        if not self._arrays:
            self.records()
        parts = pd.Series(list(image_ids), dtype=str).str.rsplit("_", n=1, expand=True)
        out = np.zeros((len(image_ids), self.size, self.size), np.uint8)
        if len(image_ids):
            idx = parts[1].astype(int).to_numpy()
            for split, arr in self._arrays.items():
                rows = (parts[0] == split).to_numpy()
                out[rows] = arr[idx[rows]]
        return out

    def __repr__(self) -> str:
        return f"MedMNISTSource(flag={self.flag!r}, root={str(self.root)!r}, size={self.size})"
