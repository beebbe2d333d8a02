"""``fit_basis(cfg)``: fit a subspace basis on a flow's training split and save it beside the flow
(the plain function behind ``src/fit_basis.py``; ``evaluate.py`` calls :func:`ensure_basis`).

Only the training split is used: the public data the flow was trained on. If the flow's run
folder has a ``splits.csv``, every image used must be listed there as ``train``.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dpglow.data.subsets import LabelledImages, load_split, tensor_digest
from dpglow.flow import flatten_latents, load_flow, to_flow_input
from dpglow.privatization.basis import Basis, BasisError
from dpglow.privatization.basis import fit_basis as fit_basis_matrix
from dpglow.privatization.privatizer import resolve_levels
from dpglow.privatization.subspace import basis_file

log = logging.getLogger(__name__)


def _check_training_split(train: LabelledImages, flow_path: str) -> None:
    ckpt = Path(flow_path)
    splits = (
        ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    ) / "splits.csv"
    if not splits.is_file():
        log.warning(
            "no splits.csv beside %s: cannot verify the basis uses its training split", ckpt
        )
        return
    with open(splits, newline="") as fh:
        seen = {str(Path(r["path"]).resolve()) for r in csv.DictReader(fh) if r["split"] == "train"}
    outside = [p for p in train.paths if p not in seen]
    if outside:
        raise BasisError(
            f"{len(outside)} of the {len(train.paths)} images are not in the flow's training "
            f"split (e.g. {outside[0]}): fit with the data settings (data=, seed) the flow was "
            "trained with"
        )


@torch.no_grad()
def training_latents(flow, train: LabelledImages, *, batch_size: int = 64) -> torch.Tensor:
    """Every level's standardised latents of the training images, flattened: [N, D] float32.

    A conditional flow encodes each image with its own training labels (unknown = 0)."""
    out = []
    conditional = int(getattr(flow, "num_conditions", 0) or 0) > 0
    device = next(flow.parameters()).device
    for start in range(0, len(train.images), batch_size):
        x = to_flow_input(train.images[start : start + batch_size].to(device))
        kwargs = {}
        if conditional:
            y = train.labels[start : start + batch_size].nan_to_num(0.0).to(device)
            kwargs = {"y": y}
        out.append(flatten_latents(flow.encode(x, **kwargs)).cpu())
    return torch.cat(out)


def _cached_latents(flow, info: dict, train: LabelledImages, cache: Path) -> torch.Tensor:
    """The training latents, cached beside the flow (keyed by its SHA-256 and the images)."""
    key = f"{info['sha256'][:16]}-{tensor_digest(train.images)[:16]}"
    path = cache / f"train-latents-{key}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    log.info("encoding %d training images for the basis", len(train.images))
    latents = training_latents(flow, train)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(latents, tmp)
    tmp.replace(path)
    return latents


def fit_and_save(
    cfg: DictConfig, flow, info: dict, *, kind: str, k: int, levels: Any
) -> tuple[Basis, Path]:
    """Fit the basis (kind, k, levels) on ``flow``'s training split and save it beside the flow."""
    chosen = resolve_levels(levels, len(flow.levels))
    train = load_split(cfg, image_size=flow.image_size, split="train")
    _check_training_split(train, info["path"])
    target = basis_file(info["path"], kind=kind, k=int(k), levels=chosen)
    latents = _cached_latents(flow, info, train, target.parent)
    offsets = [0]
    for shape in flow.latent_shapes:
        offsets.append(offsets[-1] + int(torch.Size(shape).numel()))
    columns = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in chosen])
    basis = fit_basis_matrix(
        latents[:, columns],
        train.labels,
        kind=kind,
        k=int(k),
        pathologies=train.pathologies,
        levels=chosen,
        flow_sha256=info["sha256"],
        min_count=int(cfg.get("basis_min_count", 20)),
    )
    basis.meta["split"] = "train"
    basis.meta["data"] = OmegaConf.to_container(cfg.data, resolve=True).get("root")
    basis.save(target)
    log.info(
        "basis %s k=%d levels=%s (%s) fitted on %d training images -> %s",
        kind, basis.k, chosen, ",".join(basis.directions), len(train.images), target,
    )  # fmt: skip
    return basis, target


def fit_basis(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``python src/fit_basis.py flow.ckpt_path=... basis.kind=supervised basis.k=1``."""
    if not cfg.flow.get("ckpt_path"):
        raise ValueError("flow.ckpt_path is required: the flow checkpoint the basis is fitted for")
    flow, info = load_flow(cfg.flow.ckpt_path)
    spec = cfg.basis
    basis, path = fit_and_save(cfg, flow, info, kind=spec.kind, k=spec.k, levels=spec.levels)
    summary = {
        "path": str(path),
        "sha256": basis.sha256,
        "directions": basis.directions,
        "probe_train_auc": basis.meta["probe_train_auc"],
    }
    return summary, {"basis": basis}


def ensure_basis(cfg: DictConfig, flow, info: dict) -> None:
    """Fit the basis ``cfg.privacy.basis`` names if it is not saved beside the flow yet."""
    spec = cfg.privacy.get("basis")
    if spec is None or spec.get("path"):
        return
    chosen = resolve_levels(
        OmegaConf.to_object(spec.levels) if OmegaConf.is_config(spec.levels) else spec.levels,
        len(flow.levels),
    )
    if not basis_file(info["path"], kind=spec.kind, k=int(spec.k), levels=chosen).is_file():
        fit_and_save(cfg, flow, info, kind=spec.kind, k=spec.k, levels=chosen)
