"""The refiner's checkpoint section and :func:`load_refiner` (what evaluation and privatize use)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from dpglow.flow import CheckpointError, file_sha256
from dpglow.refiner.net import Refiner

#: The section a refiner checkpoint carries beside Lightning's ``state_dict``.
REFINER_KEY = "dpglow_refiner"
#: The prefix of the refiner's weights in the training module's ``state_dict``.
PREFIX = "net."


def load_refiner(path: str | Path, *, map_location: str = "cpu") -> tuple[Refiner, dict[str, Any]]:
    """The :class:`Refiner` (eval mode) a ``python src/train_refiner.py`` checkpoint holds, and
    ``{"path", "sha256", "net_config", "image_size", "n_bits", "flow_sha256", "temperature"}``
    (the resolution it was trained at, and the flow and temperature of the samples it refined).

    Loaded with ``weights_only=True``; a missing file, pickled code, or a checkpoint of another
    kind raise :class:`~dpglow.flow.CheckpointError` saying what to pass instead.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"refiner checkpoint {str(path)!r} does not exist: train one with "
            "`python src/train_refiner.py` and pass refiner.ckpt_path=<run>/checkpoints/<best>.ckpt"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a torch file at all
            raise CheckpointError(f"cannot read refiner checkpoint {path}: {err}") from err
        raise CheckpointError(
            f"refusing {path}: it holds pickled objects beyond tensors and plain data"
        ) from err
    except Exception as err:  # truncated or not a torch file
        raise CheckpointError(f"cannot read refiner checkpoint {path}: {err}") from err
    meta = ckpt.get(REFINER_KEY) if isinstance(ckpt, dict) else None
    if not meta or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a dpglow refiner checkpoint (no '{REFINER_KEY}' section): train one "
            "with `python src/train_refiner.py`"
        )
    refiner = Refiner(**meta["net_config"])
    state = {k[len(PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    refiner.load_state_dict(state)
    info = {
        "path": str(path.resolve()),
        "sha256": file_sha256(path),
        "net_config": dict(meta["net_config"]),
        "image_size": int(meta["image_size"]),
        "n_bits": int(meta["n_bits"]),
        "flow_sha256": meta["flow_sha256"],
        "temperature": float(meta["temperature"]),
    }
    return refiner.eval(), info
