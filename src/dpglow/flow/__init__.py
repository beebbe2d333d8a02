"""The Glow normalizing flow: invertible layers, the multi-scale model, latent and bit helpers,
and its checkpoint format."""

from dpglow.flow.actnorm import ActNorm
from dpglow.flow.checkpoint import (
    CHECKPOINT_KEY,
    CheckpointError,
    architecture,
    check_architecture,
    file_sha256,
    load_dequantizer,
    load_flow,
    read_checkpoint,
)
from dpglow.flow.conditioning import LabelPrior, flow_labels
from dpglow.flow.coupling import AffineCoupling, ZeroConv2d
from dpglow.flow.dequantization import VariationalDequantizer, dequantize
from dpglow.flow.glow import Glow
from dpglow.flow.invconv import InvConv2dLU
from dpglow.flow.latents import flatten_latents, level_slices, unflatten_latents
from dpglow.flow.level import FlowStep, Level, squeeze, unsqueeze
from dpglow.flow.quantize import bits_per_dim, to_flow_input, to_uint8

__all__ = [
    "CHECKPOINT_KEY",
    "ActNorm",
    "AffineCoupling",
    "CheckpointError",
    "FlowStep",
    "Glow",
    "InvConv2dLU",
    "LabelPrior",
    "Level",
    "VariationalDequantizer",
    "ZeroConv2d",
    "architecture",
    "bits_per_dim",
    "check_architecture",
    "dequantize",
    "file_sha256",
    "flatten_latents",
    "flow_labels",
    "level_slices",
    "load_dequantizer",
    "load_flow",
    "read_checkpoint",
    "squeeze",
    "to_flow_input",
    "to_uint8",
    "unflatten_latents",
    "unsqueeze",
]
