"""``privatize(cfg)``: the plain function behind ``src/privatize.py``."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dpglow.privatization.build import build_privatizer, mechanism_name
from dpglow.privatization.checkpoint import architecture, load_flow
from dpglow.privatization.files import (
    atomic_write_bytes,
    atomic_writer,
    check_folders,
    iter_inputs,
    remove_stale_temporaries,
)
from dpglow.privatization.predict import (
    InputFolder,
    PrivatizedImageWriter,
    PrivatizeModule,
    rows_path,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
REPORT = "privacy_report.json"
MANIFEST_FIELDS = ("input", "output", "status", "error")


class SettingsMismatchError(ValueError):
    """output_dir holds images privatized with other settings."""


def _required(cfg: DictConfig, key: str, hint: str) -> Any:
    value = cfg.get(key)
    if value in (None, "", "???"):
        raise ValueError(f"{key} is required: {hint}")
    return value


def _build(cfg: DictConfig) -> tuple[Any, int, dict[str, Any] | None]:
    privacy = cfg.privacy
    if privacy.space == "image":
        size = cfg.get("image_size")
        checkpoint = None
        if size is None and cfg.get("ckpt_path"):
            flow, checkpoint = load_flow(cfg.ckpt_path)
            size = flow.image_size
        if size is None:
            raise ValueError(
                f"privacy={mechanism_name(privacy)} works on pixels: pass "
                "image_size=<side in pixels> (or a ckpt_path to take the flow's resolution)"
            )
        return build_privatizer(privacy, flow=None), int(size), checkpoint
    ckpt = _required(cfg, "ckpt_path", "pass ckpt_path=<run>/checkpoints/last.ckpt from train.py")
    expected = architecture(cfg.model) if cfg.get("model") else None
    flow, checkpoint = load_flow(ckpt, expected=expected)
    privatizer = build_privatizer(
        privacy, flow=flow, temperature=cfg.temperature, n_bits=checkpoint["n_bits"]
    )
    return privatizer, flow.image_size, checkpoint


def _settings(cfg: DictConfig, image_size: int, checkpoint: dict | None) -> dict[str, Any]:
    """What determines the outputs' distribution: a resumed run must not change any of it."""
    privacy = OmegaConf.to_container(cfg.privacy, resolve=True)
    return {
        "privacy": privacy,
        "temperature": cfg.temperature if privacy.get("space") == "latent" else None,
        "image_size": image_size,
        "checkpoint_sha256": checkpoint["sha256"] if checkpoint else None,
        "noise_seed": cfg.get("noise_seed"),
    }


# The manifest in memory: input -> (output, status, error), a few hundred bytes per file (50,000
# files: ~15 MB); images are never held.
Rows = dict[str, tuple[str, str, str]]
_STATUSES = {"ok": "ok", "failed": "failed"}  # one string object per status, not one per row


def _row(output: str, status: str, error: str) -> tuple[str, str, str]:
    return output, _STATUSES.get(status, status), error


def _read_manifest(path: Path) -> Rows:
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {
            row["input"]: _row(row["output"], row["status"], row["error"])
            for row in csv.DictReader(fh)
        }


def _merge_rank_rows(path: Path, rows: Rows) -> tuple[int, dict[str, Any] | None]:
    """Add the rows one rank streamed (see ``PrivatizedImageWriter``) to ``rows``; returns the
    number it wrote and its privacy record."""
    written, record = 0, None
    with open(path) as fh:
        for line in fh:
            entry = json.loads(line)
            if "record" in entry:
                record = entry["record"]
                continue
            rows[entry["input"]] = _row(entry["output"], entry["status"], entry["error"])
            written += entry["status"] == "ok"
    return written, record


def _write_manifest(path: Path, rows: Rows) -> None:
    with atomic_writer(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_FIELDS)
        for key in sorted(rows):
            writer.writerow((key, *rows[key]))


def privatize(cfg: DictConfig) -> tuple[dict[str, int], dict[str, Any]]:
    """Privatize every image under ``cfg.input_dir`` into ``cfg.output_dir``.

    Writes ``manifest.csv`` (input, output, status, error) and ``privacy_report.json`` (the
    accounting record, checkpoint hash, settings, config). A re-run resumes: finished outputs are
    kept, only the rest is done, and it refuses to mix in outputs made with other settings.

    Files stream through Lightning's predict loop and are written as they finish. With
    ``trainer.devices=N trainer.strategy=ddp`` each rank privatizes a disjoint shard and rank 0
    merges the manifest; with a ``noise_seed`` the outputs equal those of one process.
    """
    src, dst = check_folders(
        _required(cfg, "input_dir", "pass input_dir=<folder of images>"),
        _required(cfg, "output_dir", "pass output_dir=<new folder for the private images>"),
    )
    privatizer, image_size, checkpoint = _build(cfg)
    settings = _settings(cfg, image_size, checkpoint)
    report_path = dst / REPORT
    previous: dict[str, Any] = {}
    if report_path.is_file():
        previous = json.loads(report_path.read_text())
        if previous.get("settings") != settings:
            raise SettingsMismatchError(
                f"{dst} already holds images privatized with other settings ({report_path}); a "
                "folder must hold one release. Choose a new output_dir, or re-run with the same "
                "settings to resume."
            )
    dst.mkdir(parents=True, exist_ok=True)
    if removed := remove_stale_temporaries(dst):
        log.info("removed %d temporary files left by an interrupted run", removed)

    dicom_output = bool(cfg.get("dicom_output", False))
    data = InputFolder(
        src,
        dst,
        image_size=image_size,
        dicom_output=dicom_output,
        batch_size=cfg.batch_size,
        num_workers=cfg.get("num_workers", 0),
    )
    module = PrivatizeModule(privatizer, noise_seed=cfg.get("noise_seed"))
    writer = PrivatizedImageWriter(dst, dicom_output=dicom_output)
    trainer = instantiate(cfg.trainer, callbacks=[writer], logger=False)
    trainer.predict(module, datamodule=data, return_predictions=False)

    # Over several devices every rank has streamed its rows to its own file; rank 0 merges them
    # once, writes the manifest and the report, and tells the other ranks the counts.
    trainer.strategy.barrier("privatize_rows")
    counts, report = None, None
    if trainer.is_global_zero:
        counts, report = _finish(cfg, src, dst, trainer.world_size, settings, checkpoint, previous)
    counts = trainer.strategy.broadcast(counts, src=0)
    return counts, {"report": report, "trainer": trainer, "privatizer": privatizer}


def _finish(
    cfg: DictConfig,
    src: Path,
    dst: Path,
    world_size: int,
    settings: dict[str, Any],
    checkpoint: dict | None,
    previous: dict[str, Any],
) -> tuple[dict[str, int], dict[str, Any]]:
    """Merge the ranks' rows into ``manifest.csv`` and write ``privacy_report.json``."""
    manifest_path = dst / MANIFEST
    rows = _read_manifest(manifest_path)
    record, written = None, 0
    rank_files = [rows_path(dst, rank) for rank in range(world_size)]
    for path in rank_files:
        rank_written, rank_record = _merge_rank_rows(path, rows)
        written += rank_written
        record = record or rank_record
    for path, output in iter_inputs(src):  # finished by an earlier (maybe killed) run
        rel = path.relative_to(src).as_posix()
        if rel not in rows and (dst / output).is_file():
            rows[rel] = _row(output, "ok", "")
    _write_manifest(manifest_path, rows)
    for path in rank_files:
        path.unlink()

    statuses = Counter(status for _, status, _ in rows.values())
    counts = {"ok": statuses["ok"], "failed": statuses["failed"], "written_this_run": written}
    record = record or previous.get("record")
    report = {
        "record": record,
        "private": bool(record and record.get("private")),
        "settings": settings,
        "checkpoint": checkpoint,
        "counts": counts,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    atomic_write_bytes(dst / REPORT, json.dumps(report, indent=2, default=str).encode())
    if record and not record.get("private"):
        log.warning("these outputs are NOT private (%s)", record.get("noise_source"))
    log.info("privatized %d images into %s (%d failed)", counts["ok"], dst, counts["failed"])
    return counts, report
