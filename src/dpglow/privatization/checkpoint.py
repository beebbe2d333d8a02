"""Load a flow from an (untrusted) training checkpoint without executing pickled code."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpglow.flow import Glow
from dpglow.training.module import CHECKPOINT_KEY

# What makes two flows "the same model": a checkpoint must match these keys of a model config.
ARCH_KEYS = (
    "in_channels", "image_size", "num_levels", "depth", "hidden_channels", "affine",
    "scale_floor", "split_prior", "num_conditions", "condition_split_priors",
)  # fmt: skip


def architecture(model: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture keys of a model config or a checkpoint's ``net_config``.

    The conditioning keys count only for a conditional flow: an unconditional ``net_config``
    has neither (see :class:`~dpglow.flow.Glow`), and a model config has no ``num_conditions``
    (``train()`` derives it from the data), so ``condition_split_priors`` is dropped unless
    ``num_conditions > 0``. An unconditional flow's architecture is thus what it always was, and
    a conditional checkpoint never matches a model config.
    """
    arch = {k: model[k] for k in ARCH_KEYS if k in model}
    if not arch.get("num_conditions"):
        arch.pop("num_conditions", None)
        arch.pop("condition_split_priors", None)
    return arch


class CheckpointError(ValueError):
    """The checkpoint is missing, unsafe, not a dpglow flow, or not the configured architecture."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_flow(
    path: str | Path, *, expected: Mapping[str, Any] | None = None, map_location: str = "cpu"
) -> tuple[Glow, dict[str, Any]]:
    """Rebuild the Glow stored in a ``GlowModule`` checkpoint.

    ``weights_only=True`` loading refuses pickled code, so a checkpoint from elsewhere cannot run
    anything. ``expected`` (architecture keys, e.g. from ``model=glow_64``) must match the stored
    architecture, else a :class:`CheckpointError` lists the differences.
    Returns the flow (eval mode) and ``{"sha256", "n_bits", "net_config", "path",
    "condition_pathologies"}``; ``condition_pathologies`` names, in order, the labels of a
    conditional flow's label vector ``y`` (``flow.num_conditions`` of them; empty for an
    unconditional flow).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist: pass ckpt_path=<...>/checkpoints/last.ckpt "
            "of a run of `python src/train.py`"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing {path}: it holds pickled objects beyond tensors and plain data, which could "
            f"execute code when loaded ({str(err).splitlines()[0]}). Use a checkpoint written by "
            "dpglow's training."
        ) from err
    except Exception as err:  # truncated or not a torch file at all
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not meta or "net_config" not in meta or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a dpglow flow checkpoint (no '{CHECKPOINT_KEY}' section): train one "
            "with `python src/train.py`"
        )
    config = dict(meta["net_config"])
    if expected:
        diff = {k: (config.get(k), v) for k, v in expected.items() if config.get(k) != v}
        if diff:
            shown = ", ".join(
                f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items()
            )
            raise CheckpointError(
                f"checkpoint {path} does not match the configured model ({shown}). Drop the "
                "model=... override to use the checkpoint's own architecture, or pick the "
                "checkpoint trained with this model."
            )
    flow = Glow(**config)
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    flow.load_state_dict(state)
    if not flow.actnorm_initialized():
        raise CheckpointError(f"{path} holds an untrained flow (ActNorm never initialised)")
    pathologies = [str(p) for p in meta.get("condition_pathologies", [])]
    if len(pathologies) != flow.num_conditions:
        raise CheckpointError(
            f"{path} holds a flow conditioned on {flow.num_conditions} labels but names "
            f"{len(pathologies)} ({pathologies}): not a checkpoint written by dpglow's training"
        )
    info = {
        "path": str(path.resolve()),
        "sha256": file_sha256(path),
        "n_bits": int(meta.get("n_bits", 8)),
        "net_config": config,
        "condition_pathologies": pathologies,
    }
    return flow.eval(), info
