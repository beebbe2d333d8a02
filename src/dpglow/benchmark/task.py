"""The tasks behind ``src/benchmark.py`` (speed, memory and held-out bits/dim of the flow configs,
and the release's own throughput) and ``src/noise_table.py`` (each mechanism's noise per element
at per-image epsilons)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dpglow.benchmark.heldout import find_checkpoint
from dpglow.benchmark.machine import load_average, machine_description
from dpglow.benchmark.release import release_rows
from dpglow.benchmark.run import run_benchmark
from dpglow.benchmark.tables import write_release_table, write_tables
from dpglow.data.paths import NO_DATA_DIR, project_root
from dpglow.privacy.noise_table import noise_scale_rows, scale_cell
from dpglow.utils.tables import markdown_table

log = logging.getLogger(__name__)


def conf_dir() -> Path:
    """The project's ``conf/`` (the benchmark composes the model and privatize configs)."""
    return project_root() / "conf"


def _compose(conf_dir: Path, name: str) -> tuple[dict, dict]:
    # Compose the model group exactly as train.py would, so the benchmark measures the real
    # configs: the flow is its model.net node. The data config comes along for runs without a
    # saved splits.csv.
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        cfg = compose(config_name="train", overrides=[f"model={name}"])
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    return net, OmegaConf.to_container(cfg.data, resolve=True)


def _entry(cfg: DictConfig, name: str) -> tuple[str, dict[str, Any], int]:
    """(model config name, overrides of its net node, batch size) of a model or a preset."""
    preset = (cfg.presets or {}).get(name)
    if preset is None:
        return name, {}, cfg.batch_size
    overrides = OmegaConf.to_container(preset.overrides or {}, resolve=True)
    return preset.model, overrides, preset.get("batch_size") or cfg.batch_size


def _specs(cfg: DictConfig, device: str, models: list[str]) -> list[dict[str, Any]]:
    """One benchmark spec per (model or preset, precision), each with its held-out checkpoint."""
    data_dir = None if NO_DATA_DIR in str(cfg.paths.data_dir) else cfg.paths.data_dir
    explicit = OmegaConf.to_container(cfg.checkpoints, resolve=True) if cfg.checkpoints else {}
    gpu_models = set(cfg.gpu_models or []) if device.startswith("cuda") else set()
    common = {
        "max_batch_limit": cfg.max_batch_limit,
        "device": device,
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
        "threads": cfg.threads,
        "data_dir": data_dir,
        "heldout_images": cfg.heldout_images,
        "heldout_split": cfg.heldout_split,
        "heldout_batch_size": cfg.heldout_batch_size,
        "heldout_draws": cfg.heldout_draws,
    }
    specs = []
    for name in models:
        model_name, overrides, batch_size = _entry(cfg, name)
        model, data = _compose(conf_dir(), model_name)
        model.update(overrides)
        if cfg.model_overrides:
            model.update(OmegaConf.to_container(cfg.model_overrides, resolve=True))
        checkpoint = explicit.get(name)
        if checkpoint is None and cfg.find_checkpoints:
            # A run on the data the table's held-out images come from (the default data).
            checkpoint = find_checkpoint(
                cfg.runs_dir, model, data_target=(data.get("source") or {}).get("_target_")
            )
        log.info("%s: held-out bits/dim from %s", name, checkpoint or "no trained checkpoint")
        on_gpu = name in gpu_models
        for precision in cfg.gpu_precisions if on_gpu else cfg.precisions:
            specs.append(
                common
                | {
                    "name": name,
                    "precision": str(precision),
                    "max_batch": bool(on_gpu and cfg.gpu_max_batch),
                    "model": model,
                    "batch_size": batch_size,
                    "checkpoint": str(checkpoint) if checkpoint else None,
                    "data": data if data_dir else None,
                }
            )
    return specs


def benchmark(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``python src/benchmark.py``: the release throughput (``release.settings``) and the models'
    rows, written to the run folder (``release.md``/``.csv``, ``benchmark.md``/``.csv``)."""
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = list(cfg.models) + (list(cfg.gpu_models) if device.startswith("cuda") else [])
    if not models and not cfg.release.run:
        raise ValueError(
            f"nothing to benchmark on {device}: models is empty and gpu_models "
            f"{list(cfg.gpu_models or [])} only run on a CUDA device; name models=[glow_64,...]"
        )
    load_before = load_average()
    out = Path(cfg.paths.output_dir)
    release, rows = [], []
    if cfg.release.run:
        release = release_rows(cfg, conf_dir())
        log.info(
            "release throughput written to %s\n%s", out, write_release_table(release, out_dir=out)
        )
    if models:
        rows = run_benchmark(_specs(cfg, device, models), processes=int(cfg.processes))
        machine = (
            f"{machine_description()}; load average (1 / 5 / 15 min) {load_before} at the start, "
            f"{load_average()} at the end"
        )
        table = write_tables(rows, out_dir=out, machine=machine)
        log.info("benchmark written to %s\n%s", out, table)
    return {}, {"rows": rows, "release": release}


def noise_table(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``python src/noise_table.py``: ``noise_table.md`` in the run folder."""
    flow = instantiate(cfg.model).net  # the architecture only: the calibration needs no weights
    rows = noise_scale_rows(
        latent_shapes=flow.latent_shapes,
        image_size=flow.image_size,
        epsilons=list(cfg.epsilons),
        delta=cfg.delta,
        dp_pix_cell=cfg.dp_pix_cell,
    )
    table = markdown_table(rows, fmt=scale_cell)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "noise_table.md").write_text(table + "\n")
    log.info("noise scale per element (%s px, delta=%g):\n%s", flow.image_size, cfg.delta, table)
    return {}, {"rows": rows}
