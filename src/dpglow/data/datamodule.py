"""LightningDataModule serving cached uint8 chest X-rays with patient-grouped splits."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dpglow.data.augment import Augment, AugmentedDataset
from dpglow.data.cache import ImageCache
from dpglow.data.io import center_crop_resize
from dpglow.data.paths import (
    NO_DATA_DIR,
    DataFormatError,
    DatasetNotFoundError,
    not_found_message,
)
from dpglow.data.sources import RecordSource
from dpglow.data.splits import SPLITS, make_splits

log = logging.getLogger(__name__)


class ChestXrayDataset(Dataset):
    """In-memory split; items ``{"image": uint8 [1,S,S], "labels": float32 [P], "index": int64}``.

    ``index`` is the row of the image in the datamodule's ``splits`` table (global, so it maps
    back to ``image_id`` whatever the split).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> None:
        if not len(images) == len(labels) == len(index):
            raise ValueError("images, labels and index must have the same length")
        self.images, self.labels, self.index = images, labels, index

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "labels": self.labels[i], "index": self.index[i]}


class EpochSeededSampler(Sampler[int]):
    """Random permutation seeded by ``(seed, epoch)`` only.

    A run resumed at an epoch boundary therefore sees exactly the order of an uninterrupted
    run; Lightning calls ``set_epoch`` before each training epoch. Under DDP Lightning wraps it in
    a ``DistributedSamplerWrapper`` (no extra shuffle) that forwards ``set_epoch``: rank ``r`` of
    ``W`` reads ``permutation[r::W]`` (padded to a multiple of ``W``), so the ranks' shares are
    disjoint and each epoch reshuffles deterministically (tests/training/test_ddp.py).
    """

    def __init__(self, num_samples: int, seed: int, dataset: Dataset | None = None) -> None:
        self.num_samples, self.seed, self.epoch = int(num_samples), int(seed), 0
        self.dataset = dataset  # told the epoch too, where it has set_epoch (augmentation)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (and the dataset's augmentation of it)."""
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed % 2**64, self.epoch])
        return iter(rng.permutation(self.num_samples).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ChestXrayDataModule(pl.LightningDataModule):
    """Records -> patient-grouped splits -> decoded uint8 tensors ``[N, 1, S, S]`` in memory.

    ``source`` is a partial of a source class (Hydra ``_partial_: true``) holding all its
    arguments, ``root`` included (the data configs give it ``root: ${..root}``, and MedMNIST's
    ``download: ${..download}``); it is called as configured. ``root`` and ``download`` are the
    user's ``data.root`` / ``data.download``: a missing ``root`` fails here with instructions,
    and ``download=True`` needs a source that takes ``download``. Batches are dicts with
    ``image`` uint8 ``[B,1,S,S]``, ``labels`` float32 ``[B,P]`` (NaN = unknown) and ``index``
    int64 ``[B]``.

    ``augment`` (a :class:`~dpglow.data.augment.RandomZoom` or
    :class:`~dpglow.data.acquisition.AcquisitionAugment`: anything with ``source_size`` that maps
    ``(image, size, rng)`` to an image) serves the training split as random changes of the images
    decoded at ``augment.source_size``, new each epoch; validation, test and :meth:`init_batch`
    keep the unaugmented images.
    """

    def __init__(
        self,
        *,
        source: Callable[..., RecordSource],
        root: str | os.PathLike[str],
        image_size: int,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 12345,
        cache_dir: str | None = None,
        max_images: int | None = None,
        skip_unreadable: bool = False,
        download: bool = False,
        decode_workers: int | None = None,
        augment: Augment | None = None,
    ) -> None:
        super().__init__()
        if image_size < 1 or batch_size < 1:
            raise ValueError(
                f"image_size and batch_size must be >= 1, got {image_size}, {batch_size}"
            )
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        if augment is not None and augment.source_size < image_size:
            raise ValueError(
                f"data.augment.source_size={augment.source_size} is below image_size="
                f"{image_size}: decode the images for augmentation at least at the training size"
            )
        self.save_hyperparameters(ignore=["source", "augment"], logger=False)
        self.augment = augment
        self.source_factory = source
        self.root = str(root)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self.max_images = max_images
        self.skip_unreadable = skip_unreadable
        self.download = download
        self.decode_workers = decode_workers

        self.source: RecordSource | None = None
        self.pathologies: list[str] = []
        self.splits: pd.DataFrame | None = None
        self.train_sampler: EpochSeededSampler | None = None
        self._rows: dict[str, np.ndarray] = {}
        self._datasets: dict[str, ChestXrayDataset] = {}

    # ----------------------------------------------------------------- building
    def _build_source(self) -> RecordSource:
        if self.source is None:
            configured = getattr(self.source_factory, "keywords", {})
            if self.download and "download" not in configured:
                name = getattr(self.source_factory, "func", self.source_factory).__name__
                raise ValueError(
                    f"data.download=true is only supported for MedMNIST sources, not {name}; "
                    "use data=chestmnist or data=pneumoniamnist."
                )
            if NO_DATA_DIR in self.root and self.download:
                # No data folder anywhere: download into medmnist's own default folder rather
                # than a literal "<no-data-dir>" folder under the working directory.
                root = str(Path("~/.medmnist").expanduser())
                log.info("no data folder found; downloading MedMNIST into %s", root)
                self.source = self.source_factory(root=root)
            elif NO_DATA_DIR in self.root or not (
                self.download or Path(self.root).expanduser().is_dir()
            ):
                raise DatasetNotFoundError(not_found_message(self.root))
            else:
                self.source = self.source_factory()
        return self.source

    def prepare_data(self) -> None:
        """Download MedMNIST when ``download=True`` (Lightning runs this on one process only)."""
        if self.download:
            self._build_source().records()

    def _subset(self, records: pd.DataFrame, split: pd.Series) -> pd.Series:
        """Seeded patient-grouped subset of ``max_images`` rows, keeping each split's share."""
        rng = np.random.default_rng([self.seed % 2**64, 1])
        shares = split.value_counts()
        quotas = {s: round(self.max_images * int(shares.get(s, 0)) / len(records)) for s in SPLITS}
        quotas["train"] = self.max_images - quotas["val"] - quotas["test"]
        keep = pd.Series(False, index=records.index)
        for name in SPLITS:
            rows = records.index[split == name]
            if len(rows) == 0 or quotas[name] <= 0:
                continue
            patient = records.loc[rows, "patient_id"]
            shuffled = rng.permutation(np.sort(patient.unique()))
            rank = patient.map(dict(zip(shuffled, range(len(shuffled)), strict=True)))
            ranked = records.loc[rows].assign(_rank=rank).sort_values(["_rank", "image_id"])
            keep[ranked.index[: quotas[name]]] = True
        return keep

    def _decode(
        self, records: pd.DataFrame, size: int | None = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """uint8 ``[K,1,S,S]`` (``S = size``, by default ``image_size``) for the records that could
        be read, and their positions."""
        assert self.source is not None
        size = size or self.image_size
        if records["path"].isna().all() and hasattr(self.source, "array_images"):
            arrays = self.source.array_images(records["image_id"].tolist())
            if arrays.shape[1:] != (size, size):
                arrays = np.stack([center_crop_resize(a, size) for a in arrays])
            return torch.from_numpy(arrays)[:, None], np.arange(len(records))
        cache = ImageCache(
            self.cache_dir, self.source.name, self.source.root, size, self.decode_workers
        )
        result = cache.get(records["path"].tolist(), skip_unreadable=self.skip_unreadable)
        if result.failed:
            shown = "\n  ".join(list(result.failed.values())[:50])  # messages name the files
            more = f"\n  ... and {len(result.failed) - 50} more" if len(result.failed) > 50 else ""
            log.warning("skipping %d unreadable images:\n  %s%s", len(result.failed), shown, more)
        return result.images, result.kept

    def setup(self, stage: str | None = None) -> None:
        """Load records, split them and decode (or load cached) images; idempotent."""
        if self._datasets:
            return
        source = self._build_source()
        records = source.records()
        split = make_splits(
            records,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
        )
        if self.max_images is not None and self.max_images < len(records):
            keep = self._subset(records, split)
            records, split = (
                records.loc[keep].reset_index(drop=True),
                split[keep].reset_index(drop=True),
            )
        images, kept = self._decode(records)
        records, split = (
            records.iloc[kept].reset_index(drop=True),
            split.iloc[kept].reset_index(drop=True),
        )

        self.pathologies = list(source.pathologies)
        self.splits = pd.DataFrame(
            {
                "image_id": records["image_id"],
                "patient_id": records["patient_id"],
                "split": split,
                "path": records["path"],
            }
        )
        labels = records[self.pathologies].to_numpy(dtype=np.float32, copy=True)
        labels_t = torch.from_numpy(labels.reshape(len(records), len(self.pathologies)))
        self._rows = {s: np.flatnonzero(split.to_numpy() == s) for s in SPLITS}
        # One in-memory copy per split; `images` (possibly the memory-mapped cache) is released.
        for name, rows in self._rows.items():
            index = torch.from_numpy(rows).to(torch.int64)
            self._datasets[name] = ChestXrayDataset(images[index], labels_t[index], index)
        if self.augment is not None:
            self._augment_train(records)
        self.train_sampler = EpochSeededSampler(
            len(self._rows["train"]), self.seed, self._datasets["train"]
        )
        log.info(
            "%s at %dpx: %s images (train/val/test), %d pathologies",
            source.name,
            self.image_size,
            "/".join(str(len(self._rows[s])) for s in SPLITS),
            len(self.pathologies),
        )

    def _augment_train(self, records: pd.DataFrame) -> None:
        """Replace the training dataset by an :class:`AugmentedDataset` over its images decoded
        at ``augment.source_size``."""
        assert self.augment is not None
        train = self._datasets["train"]
        sources, kept = self._decode(records.iloc[self._rows["train"]], self.augment.source_size)
        if len(kept) != len(train):
            raise DataFormatError(
                f"{len(train) - len(kept)} training images decoded at {self.image_size}px could "
                f"not be decoded at data.augment.source_size={self.augment.source_size}px"
            )
        self._datasets["train"] = AugmentedDataset(
            train.images, sources, train.labels, train.index, augment=self.augment, seed=self.seed
        )
        log.info(
            "training images augmented from %dpx sources: %r",
            self.augment.source_size,
            self.augment,
        )

    # ------------------------------------------------------------------ access
    def _require_setup(self) -> None:
        if not self._datasets:
            raise RuntimeError("call setup() before using the datamodule's data")

    def dataset(self, split: str) -> ChestXrayDataset:
        """Return the in-memory dataset of ``split`` ("train", "val" or "test")."""
        self._require_setup()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self._datasets[split]

    def _loader(self, split: str, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            num_workers=self.num_workers,
            # Augmenting workers must be re-created each epoch to see the new epoch's boxes.
            persistent_workers=self.num_workers > 0 and (split != "train" or not self.augment),
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by ``(seed, epoch)``; drops the last partial batch unless it is the only one."""
        self._require_setup()
        n = len(self._rows["train"])
        return self._loader(
            "train", self.batch_size, sampler=self.train_sampler, drop_last=n >= self.batch_size
        )

    def val_dataloader(self) -> DataLoader:
        """Validation split, in order."""
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test split, in order."""
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in order (the images to privatize)."""
        return self.test_dataloader()

    def init_batch(self, n: int = 256) -> torch.Tensor:
        """Return a seeded random subset of ``min(n, N_train)`` train images, uint8 ``[n,1,S,S]``.

        Used for ActNorm's data-dependent initialisation; the same images for a given seed.
        """
        self._require_setup()
        images = self._datasets["train"].images
        rng = np.random.default_rng([self.seed % 2**64, 2])
        pick = np.sort(rng.choice(len(images), min(n, len(images)), replace=False))
        return images[torch.from_numpy(pick)]

    def save_splits(self, path: str | os.PathLike[str]) -> Path:
        """Write the ``splits`` table (image_id, patient_id, split, path) as CSV."""
        self._require_setup()
        assert self.splits is not None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.splits.to_csv(path, index=False)
        return path
