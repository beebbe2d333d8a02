"""Renamed config keys: the deprecated spelling still works, says the new one, and never
silently loses to it."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from dpglow.utils.deprecation import renamed_key


def test_old_key_moves_to_the_new_one_with_a_warning(caplog) -> None:
    cfg = OmegaConf.create({"ckpt_path": "a.ckpt", "flow": {"ckpt_path": None}})
    OmegaConf.set_struct(cfg, True)  # as Hydra composes it
    with caplog.at_level(logging.WARNING, logger="dpglow"):
        assert renamed_key(cfg, "ckpt_path", "flow.ckpt_path") == "a.ckpt"
    assert cfg.flow.ckpt_path == "a.ckpt" and cfg.ckpt_path is None
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "ckpt_path= is deprecated" in record.message
    assert "pass flow.ckpt_path=a.ckpt instead" in record.message


def test_new_key_alone_is_returned_silently(caplog) -> None:
    cfg = OmegaConf.create({"ckpt_path": None, "resume_from": "b.ckpt"})
    with caplog.at_level(logging.WARNING, logger="dpglow"):
        assert renamed_key(cfg, "ckpt_path", "resume_from") == "b.ckpt"
        assert renamed_key(OmegaConf.create({}), "ckpt_path", "resume_from") is None
    assert not caplog.records


def test_both_keys_disagreeing_is_an_error() -> None:
    cfg = OmegaConf.create({"ckpt_path": "a.ckpt", "resume_from": "b.ckpt"})
    with pytest.raises(ValueError, match="pass only resume_from="):
        renamed_key(cfg, "ckpt_path", "resume_from")
    same = OmegaConf.create({"ckpt_path": "a.ckpt", "resume_from": "a.ckpt"})
    assert renamed_key(same, "ckpt_path", "resume_from") == "a.ckpt"
