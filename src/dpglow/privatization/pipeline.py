"""``privatize(cfg)``: the plain function behind ``src/privatize.py``."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from dpglow.privatization.checkpoint import load_flow
from dpglow.privatization.files import (
    atomic_write_bytes,
    check_folders,
    iter_inputs,
    remove_stale_temporaries,
)
from dpglow.privatization.predict import (
    ImagePrivatizer,
    InputImages,
    PrivatizedImageWriter,
    PrivatizeModule,
    collate_inputs,
)
from dpglow.privatization.privatizer import DPGlowPrivatizer

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
REPORT = "privacy_report.json"
MANIFEST_FIELDS = ("input", "output", "status", "error")
ARCH_KEYS = (
    "in_channels", "image_size", "num_levels", "depth", "hidden_channels", "affine",
    "scale_floor", "split_prior",
)  # fmt: skip


class SettingsMismatchError(ValueError):
    """output_dir holds images privatized with other settings."""


def _required(cfg: DictConfig, key: str, hint: str) -> Any:
    value = cfg.get(key)
    if value in (None, "", "???"):
        raise ValueError(f"{key} is required: {hint}")
    return value


def _build(cfg: DictConfig) -> tuple[Any, int, dict[str, Any] | None]:
    privacy = cfg.privacy
    mechanism = instantiate(privacy.mechanism)
    if privacy.space == "image":
        size = cfg.get("image_size")
        checkpoint = None
        if size is None and cfg.get("ckpt_path"):
            flow, checkpoint = load_flow(cfg.ckpt_path)
            size = flow.image_size
        if size is None:
            raise ValueError(
                f"privacy={privacy.mechanism._target_.rsplit('.', 1)[-1]} works on pixels: pass "
                "image_size=<side in pixels> (or a ckpt_path to take the flow's resolution)"
            )
        return ImagePrivatizer(mechanism=mechanism), int(size), checkpoint
    ckpt = _required(cfg, "ckpt_path", "pass ckpt_path=<run>/checkpoints/last.ckpt from train.py")
    expected = {k: cfg.model[k] for k in ARCH_KEYS if k in cfg.model} if cfg.get("model") else None
    flow, checkpoint = load_flow(ckpt, expected=expected)
    privatizer = DPGlowPrivatizer(
        flow=flow,
        mechanism=mechanism,
        levels=OmegaConf.to_object(privacy.levels)
        if OmegaConf.is_config(privacy.levels)
        else privacy.levels,
        postprocess=privacy.postprocess,
        temperature=cfg.temperature,
        n_bits=checkpoint["n_bits"],
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


def _read_manifest(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {row["input"]: row for row in csv.DictReader(fh)}


def _write_manifest(path: Path, rows: dict[str, dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    for key in sorted(rows):
        writer.writerow({k: rows[key].get(k, "") for k in MANIFEST_FIELDS})
    atomic_write_bytes(path, buf.getvalue().encode())


def privatize(cfg: DictConfig) -> tuple[dict[str, int], dict[str, Any]]:
    """Privatize every image under ``cfg.input_dir`` into ``cfg.output_dir``.

    Writes ``manifest.csv`` (input, output, status, error) and ``privacy_report.json`` (the
    accounting record, checkpoint hash, settings, config). A re-run resumes: finished outputs are
    kept, only the rest is done, and it refuses to mix in outputs made with other settings.
    """
    src, dst = check_folders(
        _required(cfg, "input_dir", "pass input_dir=<folder of images>"),
        _required(cfg, "output_dir", "pass output_dir=<new folder for the private images>"),
    )
    privatizer, image_size, checkpoint = _build(cfg)
    settings = _settings(cfg, image_size, checkpoint)
    report_path, manifest_path = dst / REPORT, dst / MANIFEST
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
    dataset = InputImages(src, dst, image_size=image_size, dicom_output=dicom_output)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        num_workers=cfg.get("num_workers", 0),
        collate_fn=collate_inputs,
    )
    module = PrivatizeModule(privatizer, noise_seed=cfg.get("noise_seed"))
    writer = PrivatizedImageWriter(src, dst, dicom_output=dicom_output)
    trainer = instantiate(cfg.trainer, callbacks=[writer], logger=False)
    trainer.predict(module, dataloaders=loader, return_predictions=False)

    rows = _read_manifest(manifest_path)
    rows.update({row["input"]: row for row in writer.rows})
    for path, output in iter_inputs(src):  # finished by an earlier (maybe killed) run
        rel = str(path.relative_to(src))
        if rel not in rows and (dst / output).is_file():
            rows[rel] = {"input": rel, "output": output, "status": "ok", "error": ""}
    _write_manifest(manifest_path, rows)

    counts = {
        "ok": sum(r["status"] == "ok" for r in rows.values()),
        "failed": sum(r["status"] == "failed" for r in rows.values()),
        "written_this_run": sum(r["status"] == "ok" for r in writer.rows),
    }
    record = module.record.as_dict() if module.record is not None else previous.get("record")
    report = {
        "record": record,
        "private": bool(record and record.get("private")),
        "settings": settings,
        "checkpoint": checkpoint,
        "counts": counts,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    atomic_write_bytes(report_path, json.dumps(report, indent=2, default=str).encode())
    if record and not record.get("private"):
        log.warning("these outputs are NOT private (%s)", record.get("noise_source"))
    log.info("privatized %d images into %s (%d failed)", counts["ok"], dst, counts["failed"])
    return counts, {"report": report, "trainer": trainer, "privatizer": privatizer}
