"""The per-image work of an evaluation job, through Lightning's predict loop on one device or
several: privatize the test images and score original and privatized images with the classifier.

The test images are cut into fixed batches of ``eval.batch_size`` (batch ``k`` holds images
``[k*B, (k+1)*B)``), one batch per dataset item; over several devices Lightning's predict sampler
deals the items to the ranks without repeats (rank ``r`` of ``W`` gets batches ``r, r+W, ...``).
A batch is computed the same way whatever the number of ranks: same images in it, and with a
``noise_seed`` the same noise (its generator is re-seeded from the seed and ``k``). Each rank
saves its outputs to one file; rank 0 merges them once, in batch order, so the merged result equals
one process's.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from dpglow.privatizers import PrivatizeModule
from dpglow.utils.files import atomic_save

log = logging.getLogger(__name__)

SHARD_DIR = ".eval-shards"
# Tensors of a batch's outputs, concatenated over the batches when merged.
_TENSORS = ("released", "priv_scores", "priv_emb", "orig_scores", "orig_emb")


def batch_noise_keys(batch: dict[str, Any]) -> list[str]:
    """Seeded (test) mode draws fixed batch ``k``'s noise from one key for the whole batch."""
    return [f"evaluation batch {int(batch['index'])}"]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def privatize_in_batches(
    privatizer: Any,
    images: torch.Tensor,
    *,
    noise_seed: int | None,
    batch_size: int,
    device,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """``{"images", "record"}``: ``images`` privatized in this process, in the fixed batches and
    with the batch noise keys of the evaluation pass (the same release for the same images)."""
    module = PrivatizeModule(privatizer, noise_keys=batch_noise_keys, noise_seed=noise_seed)
    module.to(device)
    module.on_predict_start()
    outputs = []
    for index, chunk in enumerate(images.split(batch_size)):
        batch = {"index": index, "images": chunk.to(device)}
        if names is not None:
            batch["names"] = names[index * batch_size : (index + 1) * batch_size]
        outputs.append(module.predict_step(batch, index)["released"])
    return {"images": torch.cat(outputs), "record": module.record.as_dict()}


class FixedBatches(Dataset):
    """Item ``k``: ``{"index": k, "images": images[k*B:(k+1)*B]}`` (+ ``"released"``, the same rows
    of an already privatized set, when one is given)."""

    def __init__(
        self,
        images: torch.Tensor,
        private: torch.Tensor | None,
        batch_size: int,
        names: list[str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"eval.batch_size must be positive, got {batch_size}")
        if private is not None and private.shape != images.shape:
            raise ValueError(
                f"privatized set of shape {list(private.shape)} for images of shape "
                f"{list(images.shape)}"
            )
        self.images, self.private, self.batch_size = images, private, batch_size
        self.names = names

    def __len__(self) -> int:
        return num_batches(len(self.images), self.batch_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        item = {"index": index, "images": self.images[rows]}
        if self.names is not None:
            item["names"] = self.names[rows]
        if self.private is not None:
            item["released"] = self.private[rows]
        return item


class EvalData(pl.LightningDataModule):
    def __init__(
        self,
        images: torch.Tensor,
        private: torch.Tensor | None,
        batch_size: int,
        names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.batches = FixedBatches(images, private, batch_size, names)

    def predict_dataloader(self) -> DataLoader:
        # batch_size=None: each item is already a batch. Lightning shards the items over the
        # ranks (UnrepeatedDistributedSampler: no padding, no item twice).
        return DataLoader(self.batches, batch_size=None, shuffle=False)


def merge_shards(shard_dir: Path, world_size: int, n_batches: int) -> dict[str, Any]:
    """The ranks' outputs in batch order: each field concatenated over the batches (a field only
    when every batch has it). Every batch must come exactly once."""
    by_index: dict[int, dict[str, Any]] = {}
    for rank in range(world_size):
        path = shard_dir / f"rank{rank}.pt"
        if not path.is_file():
            raise RuntimeError(f"rank {rank} left no outputs ({path}): did it fail?")
        for out in torch.load(path, map_location="cpu", weights_only=True):
            if out["index"] in by_index:
                raise RuntimeError(f"evaluation batch {out['index']} was computed twice")
            by_index[out["index"]] = out
    missing = sorted(set(range(n_batches)) - set(by_index))
    if missing or len(by_index) != n_batches:
        raise RuntimeError(f"evaluation batches {missing[:10]} are missing from the ranks' outputs")
    outs = [by_index[k] for k in range(n_batches)]
    merged: dict[str, Any] = {}
    for name in _TENSORS:
        if all(name in out for out in outs):
            merged[name] = torch.cat([out[name] for out in outs])
    return merged


def per_image_pass(
    trainer: pl.Trainer,
    *,
    images: torch.Tensor,
    released: torch.Tensor | None,
    classifier: torch.nn.Module,
    privatizer: Any,
    score_originals: bool,
    noise_seed: int | None,
    batch_size: int,
    out_dir: Path,
    names: list[str] | None = None,
) -> dict[str, Any] | None:
    """Run the pass on ``trainer``'s devices; rank 0 returns the merged outputs (see
    :func:`merge_shards`) with the run's privacy ``record``, the other ranks ``None``."""
    module = PrivatizeModule(
        privatizer,
        noise_keys=batch_noise_keys,
        noise_seed=noise_seed,
        classifier=classifier,
        score_originals=score_originals,
    )
    data = EvalData(images, released, batch_size, names)
    outputs = trainer.predict(module, datamodule=data, return_predictions=True) or []
    shard_dir = out_dir / SHARD_DIR
    atomic_save(list(outputs), shard_dir / f"rank{trainer.global_rank}.pt")
    trainer.strategy.barrier("evaluation_shards")
    if not trainer.is_global_zero:
        log.info("rank %d: %d batches done; rank 0 merges", trainer.global_rank, len(outputs))
        return None
    merged = merge_shards(shard_dir, trainer.world_size, len(data.batches))
    merged["record"] = module.record.as_dict()
    shutil.rmtree(shard_dir, ignore_errors=True)
    return merged
