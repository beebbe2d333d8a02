"""Build callbacks and loggers from their config groups (lightning-hydra-template style)."""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def wandb_logged_in() -> bool:
    """True when W&B credentials are available (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in auth.hosts)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Each entry may carry ``_requires_: <module>``; it is skipped with a note when that module is
    not installed (TensorBoard is optional). A W&B logger with ``offline: null`` goes online only
    when the user is logged in, and respects ``WANDB_MODE``."""
    loggers: list[Logger] = []
    if not cfg:
        return loggers
    for name, conf in cfg.items():
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            continue
        conf = OmegaConf.to_container(conf, resolve=True)
        required = conf.pop("_requires_", None)
        if required and importlib.util.find_spec(required) is None:
            log.info("logger %s skipped: %s is not installed", name, required)
            continue
        if conf["_target_"].endswith("WandbLogger") and conf.get("offline") is None:
            mode = os.environ.get("WANDB_MODE")
            conf["offline"] = mode in ("offline", "dryrun") or (
                mode is None and not wandb_logged_in()
            )
            if conf["offline"]:
                log.info("W&B runs offline (no login found); `wandb sync` uploads them later")
        loggers.append(instantiate(conf))
    return loggers
