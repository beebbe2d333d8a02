"""The detail channel: what a per-image budget above the label cap buys (docs/method.md).

Past ``max_label_epsilon`` randomized response flips fewer labels than the labeler gets wrong, so
more label budget buys nothing; the rest, epsilon_detail, goes to the image itself. The channel
releases a = P u, the projections of the standardised latents u (``levels``) on the first
k = clamp(ceil(directions_per_epsilon * epsilon_detail), 1, K) rows of the ``energy`` basis (the
directions that move the decoded image most, :mod:`dpglow.privatizers.energy`), orthogonalised
against the label channel's own directions; through an L1-ball mechanism in R^k (by default the
exact :class:`~dpglow.privacy.DiscreteLaplaceL1`, sensitivity 2R). Post-processing (free):
a^ = E[a | release] per coordinate under the N(0, 1) prior of the projections and the Laplace
noise density (:func:`~dpglow.privacy.posterior_mean`; the grid of the discrete mechanism is a
millionth of its noise scale, so the continuous density is its posterior up to that). A rendering
u' keeps everything outside span(P) and puts a^ inside: u' = u' - P^T P u' + P^T a^.

More epsilon means more directions and less noise on each, so fidelity to the original rises
with epsilon (k grows about linearly: a direction is worth releasing once its noise is below
its prior spread).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from dpglow.privacy import OS_ENTROPY, PrivacyRecord, posterior_mean
from dpglow.privatizers.basis import Basis, configured_basis


def detail_directions(epsilon: float, *, per_epsilon: float, available: int) -> int:
    """k = clamp(ceil(per_epsilon * epsilon), 1, available)."""
    if not per_epsilon > 0:
        raise ValueError(f"detail.directions_per_epsilon must be > 0, got {per_epsilon!r}")
    wanted = available if math.isinf(epsilon) else math.ceil(per_epsilon * epsilon)
    return max(1, min(available, wanted))


def orthogonal_rows(rows: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    """``rows`` [k, d] made orthogonal to the rows of ``exclude`` [j, d] (orthonormal) and
    re-orthonormalised in their order (QR), each keeping the sign of its original."""
    rows = rows.double()
    if exclude is not None and len(exclude):
        exclude = exclude.double()
        rows = rows - (rows @ exclude.T) @ exclude
    q, r = torch.linalg.qr(rows.T)
    return (q * torch.sign(torch.diagonal(r))).T.contiguous()


class DetailChannel:
    """See the module docstring. ``basis``: an ``energy`` :class:`Basis` whose levels are the
    channel's; ``mechanism``: a partial taking ``epsilon``; ``exclude``: the label channel's
    rows in the same coordinates (None: none)."""

    def __init__(
        self,
        *,
        basis: Basis,
        mechanism: Callable[..., Any],
        epsilon: float,
        directions_per_epsilon: float,
        exclude: torch.Tensor | None = None,
    ) -> None:
        if basis.kind != "energy":
            raise ValueError(f"the detail channel needs an energy basis, got {basis.kind!r}")
        self.basis, self.epsilon = basis, float(epsilon)
        self.per_epsilon = float(directions_per_epsilon)
        self.k = detail_directions(self.epsilon, per_epsilon=self.per_epsilon, available=basis.k)
        self.rows = orthogonal_rows(basis.matrix[: self.k], exclude).float()
        self.mechanism = mechanism(epsilon=self.epsilon)
        self.levels = basis.levels
        self._record = self.mechanism.record((self.k,))

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        return self.mechanism.record((self.k,), noise_source=noise_source)

    def describe(self) -> dict[str, Any]:
        return {
            "detail_k": self.k,
            "detail_directions_per_epsilon": self.per_epsilon,
            "detail_basis_path": self.basis.path,
            "detail_basis_sha256": self.basis.sha256,
            "detail_levels": ",".join(map(str, self.levels)),
            "detail_mechanism": self.mechanism.name,
            "detail_radius": self._record.clip,
        }

    def release(
        self, flat: torch.Tensor, *, generator: torch.Generator, noise_source: str
    ) -> torch.Tensor:
        """a^ [B, k] from the flat latents of the channel's levels [B, d] (the image's)."""
        rows = self.rows.to(flat)
        noisy, record = self.mechanism(
            flat @ rows.T, generator=generator, noise_source=noise_source
        )
        if record.noise == "none":
            return noisy
        return posterior_mean(noisy, noise="laplace", scale=record.noise_scale)

    def apply(self, flat: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        """``flat`` [n, d] with its component in the channel's span replaced by ``estimate``."""
        rows = self.rows.to(flat)
        return flat - (flat @ rows.T) @ rows + estimate.to(flat) @ rows


def detail_spec(spec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The ``detail`` node of a privacy config, or None when it is absent or switched off."""
    if not spec or not spec.get("basis"):
        return None
    return spec


def detail_channel(
    spec: Mapping[str, Any], *, flow: Any, flow_info: Any, epsilon: float, label_basis: Basis
) -> DetailChannel:
    """The detail channel a privacy config's ``detail`` node describes, at ``epsilon``, its
    directions orthogonal to ``label_basis`` (the label channel's rendering directions) where
    that basis' levels are among the channel's."""
    basis = configured_basis(spec["basis"], flow, flow_info)
    layout = {}  # level -> its columns in the detail channel's flat latents
    offset = 0
    for level in basis.levels:
        size = math.prod(flow.latent_shapes[level])
        layout[level] = torch.arange(offset, offset + size)
        offset += size
    exclude = None
    if all(level in layout for level in label_basis.levels):
        exclude = torch.zeros(label_basis.k, basis.d)
        exclude[:, torch.cat([layout[level] for level in label_basis.levels])] = label_basis.matrix
    return DetailChannel(
        basis=basis,
        mechanism=spec["mechanism"],
        epsilon=epsilon,
        directions_per_epsilon=spec["directions_per_epsilon"],
        exclude=exclude,
    )
