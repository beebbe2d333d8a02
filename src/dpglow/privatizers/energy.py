"""Directions of a flow's latent space ordered by how much they move the decoded image.

For the detail channel (:mod:`dpglow.privatizers.detail`) the budget above the label cap buys
the latent directions that matter most for the image itself. With x = decode(u) and J its
Jacobian with respect to the latents of the chosen levels, a unit step along a direction v moves
the image by ||J v||; averaged over public images that is v^T E[J^T J] v. The energy basis is the
top eigenvectors of M = E[J^T J], estimated with random image-space probes r ~ N(0, I):
E_r[(J^T r)(J^T r)^T] = J^T J, one vector-Jacobian product (a backward pass) per probe, at the
public training images' own latents. Everything here is a function of public data.
"""

from __future__ import annotations

import logging

import torch

from dpglow.flow import Glow, flow_labels, unflatten_latents

log = logging.getLogger(__name__)


def decoder_energy(
    flow: Glow,
    latents: torch.Tensor,
    *,
    levels: list[int],
    probes: int = 8,
    batch_size: int = 32,
    seed: int = 0,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """M = mean over the images and probes of (J^T r)(J^T r)^T, float64 [d, d].

    ``latents`` [N, D]: every level's flattened latents of public images (as
    :func:`~dpglow.privatizers.fit.training_latents` returns them); J is taken with respect to
    the flattened latents of ``levels`` (d of the D elements), the other levels held at the
    images' own values. A conditional flow decodes each image with its own ``labels``
    ([N, m], unknown = 0), the labels its latents were encoded with.
    """
    shapes = flow.latent_shapes
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    device = next(flow.parameters()).device
    columns = torch.cat([torch.arange(starts[i], starts[i] + sizes[i]) for i in levels]).to(device)
    d = len(columns)
    generator = torch.Generator(device=device).manual_seed(seed)
    energy = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for start in range(0, len(latents), batch_size):
        chunk = latents[start : start + batch_size].to(device)
        given = {}
        if flow.num_conditions:
            if labels is None:
                raise ValueError("a conditional flow's decoder energy needs the images' labels")
            given = {"y": flow_labels(labels[start : start + batch_size]).to(device)}
        for _ in range(probes):
            chosen = chunk[:, columns].clone().requires_grad_(True)
            u = unflatten_latents(chunk.index_copy(1, columns, chosen), shapes)
            x = flow.decode(u, **given)
            r = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
            (grad,) = torch.autograd.grad((x * r).sum(), chosen)
            g = grad.double().cpu()
            energy += g.T @ g
            count += len(chunk)
    log.info("decoder energy from %d vector-Jacobian products (%d latents each)", count, d)
    return energy / count


def energy_directions(energy: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` eigenvectors of the symmetric ``energy`` [d, d] as rows [k, d] (orthonormal,
    each signed so that its largest entry is positive) and their eigenvalues, largest first."""
    values, vectors = torch.linalg.eigh(energy.double())
    order = values.argsort(descending=True)[:k]
    rows = vectors[:, order].T.contiguous()
    sign = torch.sign(rows.gather(1, rows.abs().argmax(dim=1, keepdim=True)))
    return rows * sign, values[order]
