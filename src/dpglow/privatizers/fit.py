"""Fitting a basis on a flow's training split and saving it beside the flow (:func:`fit_and_save`;
``src/fit_basis.py``'s task, :func:`~dpglow.privatizers.task.fit_basis`), and fitting the
bases a privacy config names when they are missing (:func:`ensure_basis`, which evaluate,
privatize and audit call).

Only the training split is used: the public data the flow was trained on. If the flow's run
folder has a ``splits.csv``, every image used must be listed there as ``train``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dpglow.data.subsets import LabelledImages, load_split, tensor_digest
from dpglow.flow import flatten_latents, flow_labels, to_flow_input
from dpglow.privatizers.basis import Basis, BasisError, basis_file, energy_basis
from dpglow.privatizers.basis import fit_basis as fit_basis_matrix
from dpglow.privatizers.budget import split_budget
from dpglow.privatizers.energy import decoder_energy, energy_directions
from dpglow.privatizers.latents import resolve_levels
from dpglow.utils.cache import cached, key_of
from dpglow.utils.discovery import run_folder

log = logging.getLogger(__name__)

# Public training images whose decoder Jacobians estimate the energy basis (8 probes each).
ENERGY_IMAGES = 512


def _check_training_split(train: LabelledImages, flow_path: str) -> None:
    ckpt = Path(flow_path)
    splits = run_folder(ckpt) / "splits.csv"
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
    device = next(flow.parameters()).device
    for start in range(0, len(train.images), batch_size):
        x = to_flow_input(train.images[start : start + batch_size].to(device))
        kwargs = {}
        if flow.num_conditions:
            kwargs = {"y": flow_labels(train.labels[start : start + batch_size]).to(device)}
        out.append(flatten_latents(flow.encode(x, **kwargs)).cpu())
    return torch.cat(out)


def _cached_latents(flow, info: dict, train: LabelledImages, cache: Path) -> torch.Tensor:
    """The training latents, cached beside the flow (keyed by its SHA-256 and the images)."""

    def encode() -> dict[str, torch.Tensor]:
        log.info("encoding %d training images for the basis", len(train.images))
        return {"latents": training_latents(flow, train)}

    key = key_of([info["sha256"], tensor_digest(train.images)])
    return cached(cache, "train-latents", key, encode)["latents"]


def fit_and_save(
    cfg: DictConfig, flow, info: dict, *, kind: str, k: int, levels: Any, min_count: int | None
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
    if kind == "energy":
        count = min(len(latents), ENERGY_IMAGES)
        energy = decoder_energy(flow, latents[:count], levels=chosen, labels=train.labels[:count])
        rows, values = energy_directions(energy, min(int(k), len(columns)))
        basis = energy_basis(
            rows,
            values,
            latents[:, columns],
            train.labels,
            pathologies=train.pathologies,
            levels=chosen,
            flow_sha256=info["sha256"],
            images=count,
        )
    else:
        basis = fit_basis_matrix(
            latents[:, columns],
            train.labels,
            kind=kind,
            k=int(k),
            pathologies=train.pathologies,
            levels=chosen,
            flow_sha256=info["sha256"],
            min_count=int(min_count),
        )
    basis.meta["split"] = "train"
    basis.meta["data"] = OmegaConf.to_container(cfg.data, resolve=True).get("root")
    basis.save(target)
    log.info(
        "basis %s k=%d levels=%s (%s) fitted on %d training images -> %s",
        kind, basis.k, chosen, ",".join(basis.directions), len(train.images), target,
    )  # fmt: skip
    return basis, target


def _detail_has_budget(cfg: DictConfig) -> bool:
    privacy = cfg.privacy
    if privacy.get("detail") is None or cfg.get("epsilon") is None:
        return False
    _, eps_latent = split_budget(
        float(cfg.epsilon),
        label_fraction=float(privacy.get("label_fraction", 1.0)),
        max_label_epsilon=privacy.get("max_label_epsilon"),
    )
    return eps_latent > 0


def ensure_basis(
    cfg: DictConfig, flow, info: dict, *, fit_config: Callable[[], DictConfig] | None = None
) -> None:
    """Fit the bases ``cfg.privacy`` names (``basis``, and ``detail.basis`` where the detail
    channel gets a share of ``cfg.epsilon``) that are not saved beside the flow yet.
    ``fit_config`` (default: ``cfg``) gives the config whose data settings read the flow's
    training split; it is called only when a basis must be fitted."""
    specs = [cfg.privacy.get("basis")]
    if _detail_has_budget(cfg):
        specs.append(cfg.privacy.detail.get("basis"))
    for spec in specs:
        if spec is None or spec.get("path"):
            continue
        levels = (
            OmegaConf.to_object(spec.levels) if OmegaConf.is_config(spec.levels) else spec.levels
        )
        chosen = resolve_levels(levels, len(flow.levels))
        if not basis_file(info["path"], kind=spec.kind, k=int(spec.k), levels=chosen).is_file():
            min_count = spec.get("min_count")  # supervised kinds only (YAML has it there)
            fit_and_save(
                fit_config() if fit_config is not None else cfg,
                flow,
                info,
                kind=spec.kind,
                k=spec.k,
                levels=chosen,
                min_count=min_count,
            )
