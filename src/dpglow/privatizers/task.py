"""``fit_basis(cfg)``: the task behind ``src/fit_basis.py``."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from dpglow.flow import load_flow
from dpglow.privatizers.fit import fit_and_save


def fit_basis(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``python src/fit_basis.py flow.ckpt_path=... basis.kind=supervised basis.k=1``."""
    if not cfg.flow.get("ckpt_path"):
        raise ValueError("flow.ckpt_path is required: the flow checkpoint the basis is fitted for")
    flow, info = load_flow(cfg.flow.ckpt_path)
    spec = cfg.basis
    basis, path = fit_and_save(
        cfg, flow, info, kind=spec.kind, k=spec.k, levels=spec.levels, min_count=spec.min_count
    )
    summary = {
        "path": str(path),
        "sha256": basis.sha256,
        "directions": basis.directions,
        "probe_train_auc": basis.meta["probe_train_auc"],
    }
    return summary, {"basis": basis}
