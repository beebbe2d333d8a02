"""Fill in what a ``train_refiner`` config leaves to the flow: its checkpoint and resolution."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf, open_dict

from dpglow.flow import read_checkpoint
from dpglow.flow.checkpoint import CHECKPOINT_KEY
from dpglow.utils.discovery import find_latest

log = logging.getLogger(__name__)


def resolve_flow(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``flow.ckpt_path`` set (null: the newest finished ``python src/train.py`` run
    on the same data) and ``image_size`` set to that flow's resolution (a different explicit
    ``image_size`` is refused: the refiner works on the flow's samples)."""
    path = OmegaConf.select(cfg, "flow.ckpt_path")
    if not path:
        raw = OmegaConf.to_container(cfg.data, resolve=False)
        found = find_latest(
            "train",
            log_dir=cfg.paths.log_dir,
            data_target=raw["source"]["_target_"],
            data_root=raw.get("root"),
        )
        path = str(found.checkpoint)
        log.info("flow: newest trained flow for this data: %s", path)
    size = int(read_checkpoint(path)[CHECKPOINT_KEY]["net_config"]["image_size"])
    given = cfg.get("image_size")
    if given is not None and int(given) != size:
        raise ValueError(
            f"image_size={given} but the flow at {path} is {size} px: the refiner works on that "
            "flow's samples; drop image_size=..."
        )
    with open_dict(cfg):
        cfg.flow.ckpt_path = path
        cfg.image_size = size
    return cfg
