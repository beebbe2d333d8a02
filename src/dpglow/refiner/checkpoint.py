"""The refiner's checkpoint section and :func:`load_refiner` (what evaluation and privatize use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpglow.flow import file_sha256, read_checkpoint
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
    ckpt = read_checkpoint(
        path,
        section=REFINER_KEY,
        what="refiner",
        make="python src/train_refiner.py",
        pass_key="refiner.ckpt_path",
        map_location=map_location,
    )
    meta = ckpt[REFINER_KEY]
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
