"""Config keys renamed since 0.1.0 (CHANGELOG.md): the old spelling works until 0.3.0, with a
warning in the run's log that names the new one."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def renamed_key(cfg: DictConfig, old: str, new: str) -> Any:
    """The value of ``new`` in ``cfg``, taken from the deprecated key ``old`` when that is set.

    A value under ``old`` is moved to ``new`` (``old`` becomes null, so the saved config names
    one key) and logged as deprecated. Both set to different values: ``ValueError``.
    """
    old_value = OmegaConf.select(cfg, old)
    new_value = OmegaConf.select(cfg, new)
    if old_value is None:
        return new_value
    if new_value is not None and new_value != old_value:
        raise ValueError(
            f"{old}={old_value} and {new}={new_value} are both set: {old}= is the deprecated "
            f"spelling of {new}=; pass only {new}="
        )
    log.warning(
        "%s= is deprecated and will be removed in 0.3.0: pass %s=%s instead",
        old,
        new,
        old_value,
    )
    with open_dict(cfg):
        OmegaConf.update(cfg, new, old_value, force_add=True)
        OmegaConf.update(cfg, old, None)
    return old_value
