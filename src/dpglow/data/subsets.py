"""One split of a task's data as tensors in memory, with its patients and files (the splits are
the seeded, patient-grouped splits every run of the same data and seed shares)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and bytes."""
    t = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass
class LabelledImages:
    images: torch.Tensor  # uint8 [N, 1, S, S]
    labels: torch.Tensor  # float [N, P], NaN = unknown
    pathologies: list[str]
    patients: list[str]
    paths: list[str]


def load_split(cfg: DictConfig, *, image_size: int, split: str, limit: int | None = None):
    """Split ``split`` of ``cfg.data`` at ``image_size``: all its images, or a seeded subset of
    ``limit`` (seeded by the data's split seed), in the split's order. ``cfg`` is a task's root
    config (its data node interpolates ``image_size``, which is set here)."""
    with open_dict(cfg):
        cfg.image_size = image_size
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    data = datamodule.dataset(split)
    keep = torch.arange(len(data.images))
    if limit is not None and limit < len(keep):
        # A seeded random subset, not the first N: splits list images grouped by class or patient.
        generator = torch.Generator().manual_seed(int(cfg.data.seed))
        order = torch.randperm(len(keep), generator=generator)
        keep = order[: int(limit)].sort().values
    rows = datamodule.splits.iloc[data.index[keep].numpy()]
    return LabelledImages(
        images=data.images[keep].clone(),
        labels=data.labels[keep].clone(),
        pathologies=list(datamodule.pathologies),
        patients=[str(p) for p in rows["patient_id"]],
        paths=[str(Path(p).resolve()) for p in rows["path"]],
    )
