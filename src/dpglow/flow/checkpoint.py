"""The flow checkpoint format: the ``dpglow`` section of a training checkpoint, read back without
executing pickled code, and the architecture a config or a checkpoint describes."""

from __future__ import annotations

import hashlib
import inspect
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpglow.flow.dequantization import VariationalDequantizer
from dpglow.flow.glow import Glow

# The checkpoint section with the flow's constructor config ("net_config"), "n_bits" and, for a
# conditional flow, "condition_pathologies"; a flow trained with variational dequantisation adds
# "dequantizer_config" (its weights are the state dict's "dequantizer." entries). Written by
# dpglow.training.GlowModule.
CHECKPOINT_KEY = "dpglow"
# Hydra's keys of a model.net node, not arguments of the flow.
_HYDRA_KEYS = ("_target_", "_partial_")
_CONDITIONING_KEYS = ("num_conditions", "condition_split_priors")


class CheckpointError(ValueError):
    """The checkpoint is missing, unsafe, not a dpglow flow, or not the configured architecture."""


def architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~dpglow.flow.Glow` that ``config`` describes: every constructor argument, with
    Glow's default where ``config`` has none.

    ``config`` is a ``model.net`` node (its ``_target_``/``_partial_`` are dropped) or a
    checkpoint's ``net_config`` (:attr:`Glow.config`); any other key is a ValueError. The
    conditioning keys count only for a conditional flow: an unconditional ``net_config`` has
    neither, and a ``model.net`` node has no ``num_conditions`` (the training module derives it
    from the data), so ``num_conditions`` and ``condition_split_priors`` are dropped unless
    ``num_conditions > 0``. An unconditional flow's architecture is thus what it always was, and a
    conditional checkpoint never equals a ``model.net`` node. ``input_squeezes`` and
    ``spline_bins`` count only where they are not 0. A per-level ``depth`` or
    ``hidden_channels`` (a list, or Hydra's ListConfig) comes back as a plain list; an int stays
    an int, so ``depth=16`` and ``depth=[16, 16, 16, 16]`` build the same model but are different
    architectures here.
    """
    params = inspect.signature(Glow).parameters
    unknown = sorted(k for k in config if k not in params and k not in _HYDRA_KEYS)
    if unknown:
        raise ValueError(
            f"{unknown} are not arguments of dpglow.flow.Glow ({', '.join(params)}): pass the "
            "model.net node (e.g. cfg.model.net), not the whole model config"
        )
    arch = {name: config.get(name, param.default) for name, param in params.items()}
    for key in ("depth", "hidden_channels"):  # per-level values: a ListConfig or a list
        if not isinstance(arch[key], int):
            arch[key] = list(arch[key])
    if not arch["num_conditions"]:
        del arch["num_conditions"], arch["condition_split_priors"]
    for key in ("input_squeezes", "spline_bins"):  # likewise: only a flow that has one has it
        if not arch[key]:
            del arch[key]
    return arch


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(
    path: str | Path,
    *,
    section: str = CHECKPOINT_KEY,
    what: str = "flow",
    make: str = "python src/train.py",
    pass_key: str = "flow.ckpt_path",
    map_location: str = "cpu",
) -> dict[str, Any]:
    """The one checkpoint reader: a file written by dpglow's training, loaded with
    ``weights_only=True`` (pickled code is refused, so a checkpoint from elsewhere cannot run
    anything), that must hold ``section`` beside Lightning's ``state_dict``. ``what`` (the kind
    of model), ``make`` (the command that trains one) and ``pass_key`` (the key that names one)
    word the :class:`CheckpointError` raised otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"{what} checkpoint {str(path)!r} does not exist: train one with `{make}` and pass "
            f"{pass_key}=<run>/checkpoints/<name>.ckpt"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" not in str(err).lower():  # junk bytes fail the unpickler too
            raise CheckpointError(f"cannot read {what} checkpoint {path}: {err}") from err
        raise CheckpointError(
            f"refusing {path}: it holds pickled objects beyond tensors and plain data, which could "
            f"execute code when loaded ({str(err).splitlines()[0]}). Use a checkpoint written by "
            "dpglow's training."
        ) from err
    except Exception as err:  # truncated or not a torch file at all
        raise CheckpointError(f"cannot read {what} checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or not ckpt.get(section) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a dpglow {what} checkpoint (no '{section}' section): train one with "
            f"`{make}`"
        )
    return ckpt


def check_architecture(
    net_config: Mapping[str, Any], expected: Mapping[str, Any], *, what: str, advice: str
) -> None:
    """Raise a :class:`CheckpointError` listing every key where the :func:`architecture` of a
    checkpoint's ``net_config`` differs from ``expected`` (``what`` names the checkpoint,
    ``advice`` says what to do). A key that only the checkpoint has (``input_squeezes``,
    ``spline_bins``) differs from its default, which ``expected`` then means; the conditioning
    keys count only where ``expected`` has them (a ``model.net`` node never does)."""
    stored = architecture(net_config)
    defaults = {k: p.default for k, p in inspect.signature(Glow).parameters.items()}
    expected = dict(expected) | {
        k: defaults[k] for k in stored.keys() - expected.keys() - set(_CONDITIONING_KEYS)
    }
    diff = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{what} does not match the configured model ({shown}). {advice}")


def load_flow(
    path: str | Path, *, expected: Mapping[str, Any] | None = None, map_location: str = "cpu"
) -> tuple[Glow, dict[str, Any]]:
    """Rebuild the Glow stored in a training checkpoint (its ``net.`` weights and the
    ``CHECKPOINT_KEY`` section), read by :func:`read_checkpoint`.

    ``expected`` (architecture keys, e.g. ``architecture(cfg.model.net)``) must match the stored
    :func:`architecture`, else a :class:`CheckpointError` lists the differences.
    Returns the flow (eval mode) and ``{"sha256", "n_bits", "net_config", "path",
    "condition_pathologies"}``; ``condition_pathologies`` names, in order, the labels of a
    conditional flow's label vector ``y`` (``flow.num_conditions`` of them; empty for an
    unconditional flow).
    """
    path = Path(path).expanduser()
    ckpt = read_checkpoint(path, map_location=map_location)
    meta = ckpt[CHECKPOINT_KEY]
    if "net_config" not in meta:
        raise CheckpointError(f"{path} is not a dpglow flow checkpoint (no net_config)")
    config = dict(meta["net_config"])
    if expected:
        check_architecture(
            config,
            expected,
            what=f"checkpoint {path}",
            advice="Drop the model=... override to use the checkpoint's own architecture, or "
            "pick the checkpoint trained with this model.",
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


def load_dequantizer(
    path: str | Path, *, map_location: str = "cpu"
) -> VariationalDequantizer | None:
    """The :class:`~dpglow.flow.dequantization.VariationalDequantizer` a training checkpoint
    holds (eval mode), or ``None`` for a flow trained with uniform dequantisation. Only bits/dim
    need it: encoding and decoding use the bin centres."""
    ckpt = read_checkpoint(path, map_location=map_location)
    config = ckpt[CHECKPOINT_KEY].get("dequantizer_config")
    if config is None:
        return None
    dequantizer = VariationalDequantizer(**config)
    prefix = "dequantizer."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    dequantizer.load_state_dict(state)
    return dequantizer.eval()
