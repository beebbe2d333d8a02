"""U2 (docs/evaluation.md): train the classifier on privatized training images, test it on the
original test images, and compare with the same classifier trained, with the same budget, on
originals."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from dpglow import metrics as M
from dpglow.data.subsets import load_split, tensor_digest
from dpglow.evaluation.shards import privatize_in_batches
from dpglow.utils.cache import cached, key_of

log = logging.getLogger(__name__)

ARCH_KEYS = ("growth_rate", "block_config", "num_init_features", "drop_rate")


class _Labelled(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "labels": self.labels[i]}


def _architecture(classifier: Any, image_size: int) -> dict[str, Any]:
    hp = dict(classifier.hparams)
    if hp.get("weights"):  # pretrained evaluation classifier: train the default architecture
        return {"image_size": image_size}
    arch = {k: hp[k] for k in ARCH_KEYS if k in hp}
    arch["block_config"] = tuple(arch.get("block_config", (6, 12, 24, 16)))
    arch["image_size"] = hp.get("image_size", image_size)
    return arch


def train_and_test(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    pathologies: list[str],
    architecture: dict[str, Any],
    settings: DictConfig,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """Train a fresh classifier for ``settings.max_epochs`` and return its test AUCs."""
    from dpglow.classifier import ClassifierModule

    pl.seed_everything(seed, workers=True)
    module = ClassifierModule(
        pathologies=pathologies,
        optimizer=functools.partial(
            torch.optim.AdamW, lr=float(settings.lr), weight_decay=float(settings.weight_decay)
        ),
        **architecture,
    )
    loader = DataLoader(
        _Labelled(train_images, train_labels),
        batch_size=int(settings.batch_size),
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(train_images) > int(settings.batch_size),
    )
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=int(settings.max_epochs),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bool(settings.progress_bar),
        gradient_clip_val=float(settings.gradient_clip_val),
    )
    trainer.fit(module, train_dataloaders=loader)
    module.eval().to(device)
    with torch.no_grad():
        scores = torch.cat(
            [module(chunk.to(device)).float().cpu() for chunk in test_images.split(256)]
        )
    aucs = M.auc_per_pathology(scores, test_labels, pathologies)
    return {"mean": M.mean_auc(aucs), **aucs}


def u2(
    cfg: DictConfig,
    *,
    classifier: Any,
    privatizer: Any,
    test: Any,
    device: torch.device,
    cache_dir: Path | None,
) -> dict[str, float]:
    """The U2 columns: AUC on original test images of classifiers trained on private vs original
    training images, and the retention between them."""
    settings = cfg.eval.u2
    train = load_split(
        cfg, image_size=test.images.shape[-1], split="train", limit=settings.get("max_images")
    )
    arch = _architecture(classifier, test.images.shape[-1])
    common = dict(
        pathologies=test.pathologies,
        architecture=arch,
        settings=settings,
        seed=int(cfg.seed),
        device=device,
    )
    train_key = tensor_digest(train.images)
    budget = [OmegaConf.to_container(settings, resolve=True), arch, int(cfg.seed), train_key]
    reference = cached(
        cache_dir,
        "u2_original",
        key_of([*budget, tensor_digest(test.images)]),
        lambda: train_and_test(train.images, train.labels, test.images, test.labels, **common),
    )
    log.info("U2: privatizing %d training images", len(train.images))
    released = privatize_in_batches(
        privatizer,
        train.images,
        noise_seed=cfg.get("noise_seed"),
        batch_size=int(cfg.eval.batch_size),
        device=device,
        names=train.paths,
    )
    result = train_and_test(released["images"], train.labels, test.images, test.labels, **common)
    row = {
        "u2/auc_train_orig_mean": reference["mean"],
        "u2/auc_train_priv_mean": result["mean"],
        "u2/retention": M.auc_retention(result["mean"], reference["mean"]),
        "u2/n_train": float(len(train.images)),
    }
    for name in test.pathologies:
        row[f"u2/auc_train_priv_{name}"] = result[name]
    log.info(
        "U2: AUC on original test images %.3f (trained on originals) vs %.3f (trained on "
        "privatized)",
        row["u2/auc_train_orig_mean"],
        row["u2/auc_train_priv_mean"],
    )
    return row
