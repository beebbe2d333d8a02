"""``train(cfg)``, the plain function behind ``src/train.py`` (tests call it directly)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from dpglow.data.codecs import codec_bits_per_dim
from dpglow.flow import (
    CHECKPOINT_KEY,
    architecture,
    check_architecture,
    flow_labels,
    read_checkpoint,
    to_flow_input,
)
from dpglow.training.callbacks import StepTimer
from dpglow.training.module import GlowModule
from dpglow.utils.deprecation import renamed_key
from dpglow.utils.instantiate import instantiate_callbacks, instantiate_loggers
from dpglow.utils.memory import peak_rss_mb

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit the flow, test the best checkpoint, and write ``splits.csv`` and ``summary.json``
    into ``cfg.paths.output_dir``. Returns (metrics, objects)."""
    resume_from = renamed_key(cfg, "ckpt_path", "resume_from")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    log.info("data: %s", cfg.data._target_)
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    model: pl.LightningModule = instantiate(cfg.model, **_label_arguments(cfg.model, datamodule))
    if resume_from and isinstance(model, GlowModule):
        _check_resume(resume_from, model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config)

    start = time.perf_counter()
    trainer.fit(model=model, datamodule=datamodule, ckpt_path=resume_from)
    fit_seconds = time.perf_counter() - start
    _validate_final_steps(trainer, model, datamodule)
    if trainer.is_global_zero and hasattr(datamodule, "save_splits"):
        datamodule.save_splits(output_dir / "splits.csv")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test"):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        if best is None:
            log.warning("no best checkpoint was saved: testing the current weights")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if trainer.is_global_zero and not trainer.fast_dev_run and isinstance(model, GlowModule):
            metrics.update(_held_out_checks(model, datamodule))

    if trainer.is_global_zero:
        summary = {
            "metrics": metrics,
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "fit_seconds": round(fit_seconds, 1),
            "seconds_per_step": round(fit_seconds / max(trainer.global_step, 1), 4),
            "best_checkpoint": getattr(trainer.checkpoint_callback, "best_model_path", None),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "batch_size": getattr(datamodule, "batch_size", None),
            "device": str(trainer.strategy.root_device),
            "peak_rss_mb": peak_rss_mb(),
        }
        for callback in callbacks:
            if isinstance(callback, StepTimer):
                summary.update(callback.summary(model))
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("summary: %s", json.dumps(summary))
        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("test/")})
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


def _validate_final_steps(trainer: pl.Trainer, model: Any, datamodule: Any) -> None:
    """Validate and checkpoint the final weights of a run that stopped inside an epoch.

    Lightning validates and checkpoints at epoch ends only, so a run that ``max_steps`` or
    ``max_time`` stops mid-epoch would leave its last steps (the cosine's lowest rates) out of
    the best-checkpoint choice and ``last.ckpt`` at the previous epoch's end. This runs the
    validation loop on the final weights (logged at the final step) and hands the result to the
    checkpoint callback as at an epoch end: ``last.ckpt`` is rewritten, and the final weights
    become the best checkpoint if they score best."""
    callback = trainer.checkpoint_callback
    if (
        not isinstance(callback, ModelCheckpoint)
        or trainer.fast_dev_run
        or trainer.global_step == 0
        or callback._last_global_step_saved == trainer.global_step  # an epoch end: done
        or not trainer.limit_val_batches
    ):
        return
    log.info("stopped inside an epoch: validating the final weights (step %d)", trainer.global_step)
    trainer.validate(model=model, datamodule=datamodule, verbose=False)
    candidates = dict(trainer.callback_metrics)
    # The epoch the last step belongs to: a partial epoch already counts in current_epoch.
    candidates["epoch"] = torch.tensor(max(trainer.current_epoch - 1, 0))
    candidates["step"] = torch.tensor(trainer.global_step)
    callback._save_topk_checkpoint(trainer, candidates)
    callback._save_last_checkpoint(trainer, candidates)


def _check_resume(resume_from: str, model: GlowModule) -> None:
    """Refuse to resume a flow of another architecture, naming every key that differs."""
    stored = read_checkpoint(resume_from)[CHECKPOINT_KEY]["net_config"]
    check_architecture(
        stored,
        architecture(model.net.config),
        what=f"resume_from={resume_from}",
        advice="Resume with the model settings that run was trained with (drop the model.net "
        "overrides), or start a new run without resume_from.",
    )


def _label_arguments(model_cfg: DictConfig, datamodule: Any) -> dict[str, list[str]]:
    """The model arguments that are the dataset's label names, known once its records are read:
    a classifier's outputs (``pathologies: null``) and, with ``condition: labels``, what a
    conditional flow's label vector means (``condition_pathologies``)."""
    classifier = "pathologies" in model_cfg and model_cfg.pathologies is None
    conditional = model_cfg.get("condition", "none") != "none"
    if not (classifier or conditional):
        return {}
    datamodule.prepare_data()
    datamodule.setup("fit")
    names = list(datamodule.pathologies)
    extra = {"pathologies": names} if classifier else {}
    if conditional:
        given = model_cfg.get("condition_pathologies")
        if given is not None and list(given) != names:
            raise ValueError(
                f"model.condition_pathologies={list(given)} but the data's labels are {names}: "
                "leave it null (train() fills it from the data)"
            )
        extra["condition_pathologies"] = names
    return extra


@torch.no_grad()
def _held_out_checks(model: GlowModule, datamodule: Any, max_images: int = 256) -> dict[str, float]:
    """Codec baselines on the very same test images, and the float32 inverse error (a
    conditional flow encodes and decodes each image with its own labels)."""
    batches = list(datamodule.test_dataloader())
    images = torch.cat([b["image"] for b in batches])
    codecs = codec_bits_per_dim(images.numpy())
    net = model.net.eval()
    x = to_flow_input(images[:max_images], n_bits=model.n_bits).to(model.device)
    if net.num_conditions:
        labels = torch.cat([flow_labels(b["labels"]) for b in batches])[:max_images]
        ys = labels.to(model.device).split(64)
    else:
        ys = [None] * len(x.split(64))
    errors = [
        (net.decode(net.encode(chunk, y=y), y=y) - chunk).abs().amax().item()
        for chunk, y in zip(x.split(64), ys, strict=True)
    ]
    checks = {f"test/{k}": v for k, v in codecs.items()}
    checks["test/inverse_max_abs_error"] = max(errors)
    log.info("held-out checks: %s", checks)
    return checks
