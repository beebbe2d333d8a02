"""``privatize(cfg)``: the plain function behind ``src/privatize.py``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dpglow.data.io import check_max_pixels
from dpglow.flow import architecture, load_flow
from dpglow.privatizers.build import build_privatizer, privatizer_class
from dpglow.privatizers.fit import ensure_basis
from dpglow.privatizers.predict_module import PrivatizeModule
from dpglow.privatizers.refined import with_refiner
from dpglow.release.files import (
    check_folders,
    new_run_token,
    remove_stale_temporaries,
    shown,
)
from dpglow.release.inputs import InputFolder
from dpglow.release.manifest import (
    MANIFEST,
    Rows,
    count,
    merge_rows_file,
    read_manifest,
    reconcile,
    rows_path,
    stale_rows_files,
    write_manifest,
)
from dpglow.release.models import find_flow, find_labeler, flow_training_config
from dpglow.release.report import (
    REPORT,
    SettingsMismatchError,
    UnrecordedOutputsError,
    check_record,
    open_release,
    read_report,
    write_report,
)
from dpglow.release.writer import PrivatizedImageWriter
from dpglow.utils.deprecation import renamed_key

log = logging.getLogger(__name__)

__all__ = ["MANIFEST", "REPORT", "SettingsMismatchError", "UnrecordedOutputsError", "privatize"]


def image_noise_keys(batch: dict[str, Any]) -> list[str]:
    """Seeded (test) mode draws each image's noise from its own key: its relative path."""
    return [item["input"] for item in batch["ok"]]


def _required(cfg: DictConfig, key: str, hint: str) -> Any:
    value = OmegaConf.select(cfg, key)
    if value in (None, "", "???"):
        raise ValueError(f"{key} is required: {hint}")
    return value


def build_release(cfg: DictConfig) -> tuple[Any, int, dict[str, Any] | None]:
    """The privatizer of ``cfg.privacy``, the resolution images are read at, and the flow's
    checkpoint info (``None`` for a pixel baseline run without a checkpoint)."""
    cls = privatizer_class(cfg.privacy)
    flow, checkpoint = None, None
    if cls.needs_flow:
        find_flow(cfg)
        find_labeler(cfg)
        expected = architecture(cfg.model.net) if cfg.get("model") else None
        flow, checkpoint = load_flow(cfg.flow.ckpt_path, expected=expected)
        if cfg.privacy.get("basis") is not None:
            ensure_basis(cfg, flow, checkpoint, fit_config=lambda: flow_training_config(cfg))
    elif cfg.get("image_size") is None and OmegaConf.select(cfg, "flow.ckpt_path"):
        flow, checkpoint = load_flow(cfg.flow.ckpt_path)  # only for its resolution
    size = cfg.get("image_size") or (flow.image_size if flow is not None else None)
    privatizer = build_privatizer(
        cfg.privacy,
        flow=flow if cls.needs_flow else None,
        flow_info=checkpoint,
        temperature=cfg.temperature,
        image_size=size,
    )
    privatizer = with_refiner(
        privatizer,
        OmegaConf.select(cfg, "refiner.ckpt_path"),
        image_size=int(size),
        flow_info=checkpoint,
    )
    return privatizer, int(size), checkpoint


def _settings(
    cfg: DictConfig, privatizer: Any, image_size: int, checkpoint: dict | None
) -> dict[str, Any]:
    """What determines the outputs' distribution: a resumed run must not change any of it."""
    return {
        "privacy": OmegaConf.to_container(cfg.privacy, resolve=True),
        "privatizer": privatizer.describe(),
        "image_size": image_size,
        "checkpoint_sha256": checkpoint["sha256"] if checkpoint else None,
        "noise_seed": cfg.get("noise_seed"),
    }


def _record_up_front(
    privatizer: Any, noise_source: str, *, image_size: int | None = None
) -> dict[str, Any]:
    """The privacy record of every image ``privatizer`` releases, known before any image.

    ``privatizer.record(noise_source=...)`` where the privatizer has it; otherwise the
    mechanism's record for what it is applied to: ``(d,)`` latent elements
    (``num_private_elements``) or the ``(1, S, S)`` image.
    """
    if callable(getattr(privatizer, "record", None)):
        return privatizer.record(noise_source=noise_source).as_dict()
    if hasattr(privatizer, "num_private_elements"):
        shape: tuple[int, ...] = (int(privatizer.num_private_elements),)
    else:
        side = int(getattr(privatizer, "image_size", None) or image_size)
        shape = (1, side, side)
    return privatizer.mechanism.record(shape, noise_source=noise_source).as_dict()


def _launch_rank_zero() -> bool:
    """Before the trainer starts, whether this process will be global rank 0 (Lightning's DDP
    children get LOCAL_RANK, torchrun RANK, SLURM SLURM_PROCID; other nodes NODE_RANK)."""
    from pytorch_lightning.utilities import rank_zero_only

    return (rank_zero_only.rank or 0) == 0 and int(os.environ.get("NODE_RANK", 0) or 0) == 0


def _open(
    cfg: DictConfig, dst: Path, settings: dict[str, Any], record: dict[str, Any], checkpoint: Any
) -> tuple[str, list[str]]:
    """Rank 0, before any image: check ``dst``, write the report, delete what killed runs left.
    Returns this run's token and the earlier runs' tokens."""
    run_token = new_run_token()
    _, earlier = open_release(
        dst,
        settings=settings,
        record=record,
        checkpoint=checkpoint,
        config=OmegaConf.to_container(cfg, resolve=True),
        run_token=run_token,
    )
    if removed := remove_stale_temporaries(dst, run_tokens=earlier):
        log.info("removed %d temporary files left by an interrupted run", removed)
    return run_token, earlier


def privatize(cfg: DictConfig) -> tuple[dict[str, int], dict[str, Any]]:
    """Privatize every image under ``cfg.input_dir`` into ``cfg.output_dir``.

    Writes ``privacy_report.json`` (the accounting record, checkpoint hash, settings, config)
    before the first image and completes it at the end, and ``manifest.csv`` (input, output,
    status, error: one row per file under input_dir). A re-run resumes: finished outputs are
    kept, only the rest is done, and it refuses to mix in outputs made with other settings.

    Files stream through Lightning's predict loop and are written as they finish. With
    ``trainer.devices=N trainer.strategy=ddp`` each rank privatizes a disjoint shard and rank 0
    merges the manifest; with a ``noise_seed`` the outputs equal those of one process.
    """
    from dpglow.privacy import noise_generator

    renamed_key(cfg, "ckpt_path", "flow.ckpt_path")
    src, dst = check_folders(
        _required(cfg, "input_dir", "pass input_dir=<folder of images>"),
        _required(cfg, "output_dir", "pass output_dir=<new folder for the private images>"),
    )
    max_pixels = check_max_pixels(cfg.max_pixels)
    privatizer, image_size, checkpoint = build_release(cfg)
    settings = _settings(cfg, privatizer, image_size, checkpoint)
    noise_source = noise_generator(noise_seed=cfg.get("noise_seed"), device="cpu")[1]
    record = _record_up_front(privatizer, noise_source, image_size=image_size)
    # Only rank 0 writes; the other ranks get its token when the predict loop starts.
    run_token, earlier = (
        _open(cfg, dst, settings, record, checkpoint) if _launch_rank_zero() else (None, [])
    )

    dicom_output = bool(cfg.dicom_output)
    data = InputFolder(
        src,
        dst,
        image_size=image_size,
        dicom_output=dicom_output,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        max_pixels=max_pixels,
    )
    module = PrivatizeModule(
        privatizer, noise_seed=cfg.get("noise_seed"), noise_keys=image_noise_keys
    )
    writer = PrivatizedImageWriter(dst, dicom_output=dicom_output, run_token=run_token)
    trainer = instantiate(cfg.trainer, callbacks=[writer], logger=False)
    trainer.predict(module, datamodule=data, return_predictions=False)

    # Over several devices every rank has streamed its rows to its own file; rank 0 merges them
    # once, writes the manifest and the report, and tells the other ranks the counts.
    trainer.strategy.barrier("privatize_rows")
    counts, report = None, None
    if trainer.is_global_zero:
        run = {"token": writer.run_token, "earlier": earlier, "world_size": trainer.world_size}
        counts, report = _finish(src, dst, run, record, dicom_output=dicom_output)
    counts = trainer.strategy.broadcast(counts, src=0)
    return counts, {"report": report, "trainer": trainer, "privatizer": privatizer}


def _merge_rows(dst: Path, run: dict[str, Any], rows: Rows) -> tuple[int, list[dict], list[Path]]:
    """Earlier runs' unmerged row files, then this run's ranks', into ``rows``: returns the
    images written, the ranks' records and the files merged."""
    stale = stale_rows_files(dst, run["earlier"])
    mine = [rows_path(dst, rank, run_token=run["token"]) for rank in range(run["world_size"])]
    written, records = 0, []
    for path in stale + mine:
        rank_written, record = merge_rows_file(path, rows)
        if path in mine:
            written += rank_written
            records.append(record)
    return written, records, stale + mine


def _finish(
    src: Path, dst: Path, run: dict[str, Any], record: dict[str, Any], *, dicom_output: bool
) -> tuple[dict[str, int], dict[str, Any]]:
    """Merge the rows into ``manifest.csv`` (matching the folders as they are now) and complete
    ``privacy_report.json``. If this fails, the row files stay and the next run merges them."""
    rows = read_manifest(dst / MANIFEST)
    written, records, merged = _merge_rows(dst, run, rows)
    dropped = reconcile(src, dst, rows, dicom_output=dicom_output)
    write_manifest(dst / MANIFEST, rows, run_token=run["token"])
    for path in merged:
        path.unlink(missing_ok=True)
    for seen in records:
        check_record(record, seen)

    counts = {**count(rows), "written_this_run": written, "dropped_this_run": len(dropped)}
    report = read_report(dst) or {}
    report.update(status="complete", counts=counts, dropped_this_run=dropped[:1000])
    write_report(dst, report, run_token=run["token"])
    if not record.get("private"):
        log.warning("these outputs are NOT private (%s)", record.get("noise_source"))
    log.info(
        "privatized %d images into %s (%d failed, %d skipped)",
        counts["ok"],
        shown(str(dst)),
        counts["failed"],
        counts["skipped"],
    )
    return counts, report
