"""Where an evaluation job writes: the file names of a job folder and the sweep folder its jobs
share. Light on purpose (no torch, no Lightning): the report reads these names too."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

ROW_FILE = "row.json"
SAMPLES_FILE = "samples.png"
ORIGINALS_FILE = "originals.png"
# The mechanism name of the no-privacy baseline row of a merged report.
ORIGINAL = "original (no privacy)"
# Under the sweep folder: tensors shared by the sweep's jobs (dpglow.evaluation.sweep_cache).
CACHE_DIR = "cache"


def sweep_dir(cfg: DictConfig) -> Path:
    """The multirun's sweep folder (shared by its jobs), else this run's folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return Path(hydra_cfg.sweep.dir)
    return Path(cfg.paths.output_dir)
