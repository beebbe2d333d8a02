"""default_data_dir, the ${dpglow_data_dir:} resolver and the error types."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import dpglow.data.paths as paths_module
from dpglow.data import DataFormatError, DatasetNotFoundError, default_data_dir


def test_env_var_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DPGLOW_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    cfg = OmegaConf.create({"data_dir": "${dpglow_data_dir:}", "root": "${data_dir}/nih"})
    assert cfg.root == f"{tmp_path}/nih"


def test_search_order_and_sentinel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DPGLOW_DATA_DIR", raising=False)
    fake_repo = tmp_path / "checkout"
    monkeypatch.setattr(paths_module, "REPO_ROOT", fake_repo)
    work = tmp_path / "elsewhere" / "cwd"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert default_data_dir() is None
    cfg = OmegaConf.create({"d": "${dpglow_data_dir:}"})
    assert cfg.d == "<no-data-dir>"

    (work / "shared" / "data").mkdir(parents=True)  # <cwd>/shared/data
    assert default_data_dir() == work / "shared" / "data"
    (work.parent / "shared" / "data").mkdir(parents=True)  # <cwd>/../shared/data wins
    assert default_data_dir() == work.parent / "shared" / "data"
    (tmp_path / "shared" / "data").mkdir(parents=True)  # <repo>/../shared/data wins
    assert default_data_dir() == tmp_path / "shared" / "data"
    assert OmegaConf.create({"d": "${dpglow_data_dir:}"}).d == str(tmp_path / "shared" / "data")


def test_error_types() -> None:
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    assert issubclass(DataFormatError, ValueError)
