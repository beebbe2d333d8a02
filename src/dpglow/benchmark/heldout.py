"""Held-out bits/dim of a trained flow: find the checkpoint of a model, read its run's test
images, and evaluate them with the training module's protocol, beside PNG and WebP on the very
same 8-bit images."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.utils import instantiate

from dpglow.data import read_image
from dpglow.data.codecs import codec_bits_per_dim
from dpglow.data.splits import SPLITS
from dpglow.flow import (
    CHECKPOINT_KEY,
    architecture,
    bits_per_dim,
    dequantize,
    load_dequantizer,
    load_flow,
    to_flow_input,
)
from dpglow.training.module import eval_noise_generator
from dpglow.utils.discovery import data_of, run_folder

log = logging.getLogger(__name__)

NO_CHECKPOINT = "no trained checkpoint"


def _stored_architecture(path: Path) -> dict[str, Any] | None:
    """The architecture a dpglow checkpoint stores, without loading its tensors (memory-mapped,
    ``weights_only``); ``None`` for anything else."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # unreadable, truncated or holding pickled code
        log.info("skipping %s: %s", path, str(err).splitlines()[0] if str(err) else err)
        return None
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not meta or "net_config" not in meta:
        return None
    return architecture(meta["net_config"])


def find_checkpoint(
    runs_dir: str | os.PathLike[str], model: Mapping[str, Any], *, data_target: str | None = None
) -> Path | None:
    """The newest ``<runs_dir>/*/checkpoints/last.ckpt`` whose stored architecture is that of
    ``model`` (a ``model.net`` node, compared by :func:`~dpglow.flow.architecture`) and, with
    ``data_target``, whose run trained on that data source (a run whose
    ``.hydra/config.yaml`` does not say is not ruled out).

    Files that are not dpglow flow checkpoints are skipped.
    """
    wanted = architecture(model)
    candidates = sorted(Path(runs_dir).glob("*/checkpoints/last.ckpt"), reverse=True)
    for path in candidates:  # run folders are named <date>_<time>: newest first
        source = data_of(run_folder(path))[0]
        if data_target is not None and source is not None and source != data_target:
            continue
        if _stored_architecture(path) == wanted:
            return path
    return None


def heldout_bits_per_dim(
    flow: torch.nn.Module,
    images: torch.Tensor,
    *,
    n_bits: int = 8,
    batch_size: int = 16,
    dequantizer: torch.nn.Module | None = None,
    draws: int = 1,
) -> float:
    """Mean test bits/dim, with the training module's evaluation protocol: the dequantisation
    noise of :func:`~dpglow.training.module.eval_noise_generator` per batch, uniform or through
    the run's ``dequantizer`` (:func:`~dpglow.flow.load_dequantizer`), so with the run's
    evaluation batch size and one draw it reproduces its ``test/bpd``.

    With ``draws = K > 1`` every image gets ``K`` dequantisations (the first one is the
    single-draw protocol's, the others follow from the same generator) and the bits are those of
    the importance-weighted bound (Burda et al. 2016; Hoogeboom et al. 2021 for dequantisation)

        log P(x) >= E [ log (1/K) sum_k p(x + u_k) / q(u_k | x) ],   u_k ~ q(. | x) independent,

    which is the single-draw bound at ``K = 1``, tightens as ``K`` grows and tends to the flow's
    own probability of the discrete image ``P(x)``, the integral of its density over the bins.
    """
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    device = next(flow.parameters()).device
    total = 0.0
    with torch.no_grad():
        for i, chunk in enumerate(images.split(batch_size)):
            gen = eval_noise_generator(i, device)
            chunk = chunk.to(device)
            log_w = []
            for _ in range(draws):
                x, log_q = dequantize(chunk, n_bits=n_bits, generator=gen, dequantizer=dequantizer)
                log_w.append((flow.log_prob(x) - log_q).double())
            log_px = torch.logsumexp(torch.stack(log_w), dim=0) - math.log(draws)
            bpd = bits_per_dim(log_px, num_dims=flow.num_dims, n_bits=n_bits)
            total += bpd.sum().item()
    return total / len(images)


def heldout_images(
    checkpoint: Path,
    size: int,
    *,
    data: Mapping[str, Any] | None,
    max_images: int | None,
    split: str = "test",
) -> tuple[torch.Tensor, str]:
    """The images of the checkpoint run's ``split`` (``"test"``; ``"train"`` or ``"val"`` to
    compare, e.g. for the generalisation gap): its ``splits.csv`` when there, else the seeded
    split of the datamodule config ``data``, unaugmented. uint8 ``[N, 1, size, size]`` (the
    first ``max_images`` in the split's order) and where from."""
    if split not in SPLITS:
        raise ValueError(f"heldout_split must be one of {SPLITS}, got {split!r}")
    splits = run_folder(checkpoint) / "splits.csv"
    if splits.is_file():
        table = pd.read_csv(splits)
        paths = table.loc[table["split"] == split, "path"].tolist()[:max_images]
        images = torch.stack([torch.tensor(read_image(p, size))[None] for p in paths])
        return images, f"{split} split of {splits.parent.name}"
    if data is None:
        raise FileNotFoundError(
            f"{splits} is missing and no data config was given: cannot tell the {split} images"
        )
    datamodule = instantiate(dict(data, image_size=size, augment=None))
    datamodule.setup()
    images = datamodule.dataset(split).images[:max_images]
    return images, f"seeded {split} split (datamodule)"


def heldout_row(spec: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """The held-out columns of a benchmark row: bits/dim of the flow in ``spec["checkpoint"]``
    (whose architecture must be ``spec["model"]``'s) on its run's test images (or those of
    ``spec["heldout_split"]``; at most ``spec["heldout_images"]``, in batches of
    ``spec["heldout_batch_size"]``, with ``spec["heldout_draws"]`` dequantisations per image:
    :func:`heldout_bits_per_dim`), PNG and WebP on the same images, and the largest
    ``|decode(encode(x)) - x|`` on 64 of them. Without a checkpoint the bits/dim cell says so and
    the codec cells are blank."""
    checkpoint = spec.get("checkpoint")
    if not checkpoint:
        return {"heldout_bpd": NO_CHECKPOINT, "png_bpd": "", "webp_bpd": "", "checkpoint": ""}
    checkpoint = Path(checkpoint)
    flow, info = load_flow(checkpoint, expected=architecture(spec["model"]))
    flow = flow.to(device)
    images, where = heldout_images(
        checkpoint,
        flow.image_size,
        data=spec.get("data"),
        max_images=spec.get("heldout_images"),
        split=spec.get("heldout_split", "test"),
    )
    dequantizer = load_dequantizer(checkpoint)
    bpd = heldout_bits_per_dim(
        flow,
        images,
        n_bits=info["n_bits"],
        batch_size=spec.get("heldout_batch_size", 16),
        dequantizer=None if dequantizer is None else dequantizer.to(device),
        draws=spec.get("heldout_draws", 1),
    )
    codecs = codec_bits_per_dim(images.numpy())
    with torch.no_grad():
        x = to_flow_input(images[:64].to(device), n_bits=info["n_bits"])
        inverse_error = (flow.decode(flow.encode(x)) - x).abs().amax().item()
    return {
        "heldout_bpd": round(bpd, 4),
        "png_bpd": round(codecs["png_bpd"], 4),
        "webp_bpd": round(codecs["webp_bpd"], 4) if "webp_bpd" in codecs else "no WebP in Pillow",
        "heldout_images": len(images),
        "heldout_source": where,
        "dequantization": "uniform" if dequantizer is None else "variational",
        "heldout_draws": spec.get("heldout_draws", 1),
        "inverse_max_abs_error": float(f"{inverse_error:.3g}"),
        "checkpoint": str(checkpoint),
    }
