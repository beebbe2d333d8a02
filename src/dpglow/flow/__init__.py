"""The Glow normalizing flow: invertible layers, the multi-scale model, latent and bit helpers."""

from dpglow.flow.actnorm import ActNorm
from dpglow.flow.conditioning import LabelPrior
from dpglow.flow.coupling import AffineCoupling, ZeroConv2d
from dpglow.flow.glow import FlowStep, Glow, Level, squeeze, unsqueeze
from dpglow.flow.invconv import InvConv2dLU
from dpglow.flow.latents import flatten_latents, level_slices, unflatten_latents
from dpglow.flow.quantize import bits_per_dim, to_flow_input, to_uint8

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "FlowStep",
    "Glow",
    "InvConv2dLU",
    "LabelPrior",
    "Level",
    "ZeroConv2d",
    "bits_per_dim",
    "flatten_latents",
    "level_slices",
    "squeeze",
    "to_flow_input",
    "to_uint8",
    "unflatten_latents",
    "unsqueeze",
]
