"""``privacy=subspace`` and ``privacy=label_channel``: release k chosen directions and, optionally,
the pathology labels; draw everything else from the prior.

For an image x with standardised latent u (the basis' levels, flattened, d elements):

1. labels (``label_fraction`` f > 0): y = labeler(x) in {0, 1}^m, a fixed public function of the
   image (a probe on the latents or a classifier trained on the training split), released as
   y~ = RandomizedResponse(y) at epsilon_label = f * epsilon;
2. latents (f < 1): a = P u - c in R^k (P: the fitted :class:`~dpglow.privatization.basis.Basis`;
   c: the middle of the public training projections' range, (q_5% + q_95%) / 2 per direction, a
   public constant that centres the clipping ball on the data), released as a~ = mechanism(a)
   (``laplace_l1`` / ``gaussian_l2`` in R^k, sensitivity 2R) at epsilon_latent = (1 - f) * epsilon;
3. post-processing (free: it sees only y~, a~ and public data) estimates a from the release,
   ``postprocess``:
   - ``public_posterior_mean`` / ``public_posterior_sample``: the exact posterior under the public
     empirical prior, i.e. over the N public training points with projections A_i and labels Y_i,
     w_i ~ P(y~ | Y_i) p(a~ | bound(A_i - c)), the mean sum_i w_i A_i or a draw A_I, I ~ w
     (unknown training labels count as P = 1/2);
   - ``released_label_mean`` / ``released_label_sample``: the same, taking the released labels as
     the true ones (P(y~ | Y_i) = 1 if they agree, else ~0): it renders the released diagnosis
     instead of hedging towards the other class, which is what a classifier reading the image
     needs at small epsilon (the posterior mean of a near the decision boundary renders neither);
   - ``posterior_mean`` / ``posterior_sample``: per coordinate under a N(0, 1) prior;
   - ``none``: a~ + c itself;
4. the released latent is u' = P^T a^ + (I - P^T P) v with v ~ N(0, T^2 I_d) fresh, the other
   levels fresh N(0, T_o^2) draws (T_o = ``other_levels_temperature``, by default T), decoded
   (a conditional flow decodes with y~).

Per-image epsilon = epsilon_label + epsilon_latent = epsilon (basic composition; the record holds
both parts). ``max_label_epsilon`` caps epsilon_label (the rest goes to the latents): beyond a few
units randomized response flips fewer labels than the labeler gets wrong, so more label budget
buys nothing. The temperatures apply to the fresh draws only: whatever they are, the release
depends on the image only through y~ and a~, so they are post-processing and cost no privacy.
A low T renders the released diagnosis clearly but smooths the image; the levels the basis does
not span (by default all but the coarsest: the fine detail) can be drawn at another T_o.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dpglow.flow import Glow, flatten_latents, to_flow_input, to_uint8
from dpglow.privacy import OS_ENTROPY, PrivacyRecord, compose, posterior_mean, posterior_sample
from dpglow.privatization.base import Privatizer, check_images
from dpglow.privatization.basis import Basis, BasisError, load_basis
from dpglow.privatization.labelers import build_labeler
from dpglow.privatization.privatizer import (
    assemble_latents,
    check_temperature,
    expected_norm,
    levels_label,
    resolve_levels,
)

POSTPROCESS = (
    "none",
    "posterior_mean",
    "posterior_sample",
    "public_posterior_mean",
    "public_posterior_sample",
    "released_label_mean",
    "released_label_sample",
)


def run_folder(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint (the parent of its ``checkpoints/`` folder)."""
    ckpt = Path(ckpt_path)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def basis_file(flow_path: str | Path, *, kind: str, k: int, levels: list[int]) -> Path:
    """Where ``fit_basis.py`` saves a basis for a flow: ``<run>/bases/<ckpt>-<kind>-k<k>-l<levels>
    .pt`` in the flow's run folder, named by the checkpoint file."""
    tag = "-".join(map(str, levels))
    return run_folder(flow_path) / "bases" / f"{Path(flow_path).stem}-{kind}-k{k}-l{tag}.pt"


def check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"label_fraction must be a number in [0, 1], got {value!r}")
    return float(value)


def check_cap(max_label_epsilon: float | None) -> float | None:
    """``max_label_epsilon`` as a float (None: no cap); it must be positive."""
    if max_label_epsilon is None:
        return None
    if isinstance(max_label_epsilon, bool) or not max_label_epsilon > 0:
        raise ValueError(f"max_label_epsilon must be > 0, got {max_label_epsilon!r}")
    return float(max_label_epsilon)


def split_budget(
    epsilon: float, *, label_fraction: float, max_label_epsilon: float | None
) -> tuple[float, float]:
    """(epsilon for the labels, epsilon for the latent directions), summing to ``epsilon``: the
    labels get ``label_fraction`` of it, at most ``max_label_epsilon`` (past that the labels'
    randomized response is below the labeler's own error, so the rest goes to the latents)."""
    f = label_fraction
    eps_label = epsilon * f if f > 0 else 0.0  # (never inf * 0)
    eps_latent = epsilon * (1 - f) if f < 1 else 0.0
    cap = check_cap(max_label_epsilon)
    if cap is not None and math.isfinite(eps_label) and eps_label > cap:
        eps_latent += eps_label - cap
        eps_label = cap
    return eps_label, eps_latent


class SubspacePrivatizer(Privatizer):
    """See the module docstring. ``basis``: ``{kind, k, levels, path}`` (``path`` null: the file
    ``fit_basis.py`` saved beside the flow for these settings). ``mechanism`` and ``labels`` are
    partials that take ``epsilon`` (the task's per-image epsilon is split by ``label_fraction``).
    ``labeler``: ``{kind: probe}`` or ``{kind: classifier, ckpt_path: ...}``."""

    # Chosen on the pediatric validation split (README, Results): low temperatures render the
    # released diagnosis clearly; the fidelity columns show what it costs in diversity.
    default_temperature = 0.1

    def __init__(
        self,
        *,
        flow: Glow,
        flow_info: Mapping[str, Any] | None = None,
        epsilon: float,
        basis: Mapping[str, Any],
        mechanism: Callable[..., Any] | None = None,
        labels: Callable[..., Any] | None = None,
        label_fraction: float = 0.0,
        max_label_epsilon: float | None = None,
        labeler: Mapping[str, Any] | None = None,
        postprocess: str = "public_posterior_mean",
        temperature: float = 1.0,
        other_levels_temperature: float | None = None,
        n_bits: int = 8,
    ) -> None:
        if postprocess not in POSTPROCESS:
            raise ValueError(f"postprocess must be one of {POSTPROCESS}, got {postprocess!r}")
        self.flow, self.n_bits = flow.eval(), n_bits
        self.temperature = check_temperature(temperature)
        self.other_levels_temperature = (
            self.temperature
            if other_levels_temperature is None
            else check_temperature(other_levels_temperature)
        )
        self.postprocess = postprocess
        self.label_fraction = check_fraction(label_fraction)
        self.epsilon = float(epsilon)
        self.conditional = int(getattr(flow, "num_conditions", 0) or 0) > 0
        self.basis = self._load_basis(basis, flow_info)
        self.levels = self.basis.levels
        self.matrix = self.basis.matrix  # [k, d]
        train = self.basis.train_projections
        q = torch.quantile(train.double(), torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
        self.center = ((q[0] + q[1]) / 2).float()  # [k], public
        self.max_label_epsilon = check_cap(max_label_epsilon)
        eps_label, eps_latent = split_budget(
            self.epsilon, label_fraction=self.label_fraction, max_label_epsilon=max_label_epsilon
        )
        self.mechanism = None
        if eps_latent > 0:
            if mechanism is None:
                raise ValueError("label_fraction < 1 needs a latent mechanism (privacy.mechanism)")
            self.mechanism = mechanism(epsilon=eps_latent)
            self._latent_record = self.mechanism.record((self.basis.k,))
            # What the mechanism would see for each public training point (its likelihood term).
            self._bounded_train = self.mechanism.statistic(train.double() - self.center.double())
        self.labeler, self.label_mechanism, self.label_names = None, None, []
        if self.label_fraction > 0:
            if labels is None or labeler is None:
                raise ValueError("label_fraction > 0 needs privacy.labels and privacy.labeler")
            self.label_names = self._label_names(flow_info)
            self.labeler = build_labeler(labeler, basis=self.basis, names=self.label_names)
            self.label_mechanism = labels(epsilon=eps_label, num_labels=len(self.label_names))
        elif self.conditional:
            raise ValueError(
                "a label-conditioned flow decodes with a released label: use privacy=label_channel "
                "(privacy.label_fraction > 0)"
            )
        self._prior_labels = self._training_labels()

    # ------------------------------------------------------------------ set-up

    def _load_basis(self, spec: Mapping[str, Any], flow_info: Mapping[str, Any] | None) -> Basis:
        levels = resolve_levels(spec.get("levels", "coarsest"), len(self.flow.levels))
        path = spec.get("path")
        sha = (flow_info or {}).get("sha256")
        if not path:
            if not flow_info or not flow_info.get("path"):
                raise BasisError("privacy.basis.path is required without a flow checkpoint path")
            path = basis_file(flow_info["path"], kind=spec["kind"], k=int(spec["k"]), levels=levels)
        if not Path(path).is_file():
            raise BasisError(
                f"no fitted basis at {path}: fit it on the flow's training split with `python "
                f"src/fit_basis.py flow.ckpt_path={(flow_info or {}).get('path', '<ckpt>')} "
                f"basis.kind={spec['kind']} basis.k={spec['k']} basis.levels={spec.get('levels')}`"
            )
        basis = load_basis(path, flow_sha256=sha)
        if basis.levels != levels or basis.kind != spec["kind"] or basis.k != int(spec["k"]):
            raise BasisError(
                f"{path} holds kind={basis.kind} k={basis.k} levels={basis.levels}, not the "
                f"configured kind={spec['kind']} k={spec['k']} levels={levels}"
            )
        d = sum(math.prod(self.flow.latent_shapes[i]) for i in levels)
        if basis.d != d:
            raise BasisError(f"{path} spans d={basis.d} latent elements, these levels have {d}")
        return basis

    def _label_names(self, flow_info: Mapping[str, Any] | None) -> list[str]:
        if self.conditional:
            names = list((flow_info or {}).get("condition_pathologies") or [])
            if len(names) != self.flow.num_conditions:
                raise ValueError("the conditional flow's checkpoint does not name its conditions")
            return names
        if not self.basis.probe_pathologies:
            raise BasisError("the basis has no probed pathology to release as a label")
        return list(self.basis.probe_pathologies)

    def _training_labels(self) -> torch.Tensor | None:
        """The public training points' labels for the released label names ([N, m], NaN kept)."""
        if not self.label_names:
            return None
        cols = [self.basis.pathologies.index(n) for n in self.label_names]
        return self.basis.train_labels[:, cols]

    # ------------------------------------------------------------------ protocol

    @property
    def name(self) -> str:  # type: ignore[override]
        if self.label_fraction == 0:
            return "subspace"
        return "label_only" if self.mechanism is None else "label_channel"

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        parts = {}
        if self.label_mechanism is not None:
            parts["labels"] = self.label_mechanism.record(noise_source=noise_source)
        if self.mechanism is not None:
            parts["latent"] = self.mechanism.record((self.basis.k,), noise_source=noise_source)
        if len(parts) == 1:  # one mechanism: its own record, calibration included
            return next(iter(parts.values()))
        return compose(parts=parts)

    def describe(self) -> dict[str, Any]:
        out = {
            "mechanism": self.name,
            "epsilon": self.epsilon,
            "levels": levels_label(self.levels, len(self.flow.levels)),
            "basis": self.basis.kind,
            "k": self.basis.k,
            "basis_sha256": self.basis.sha256,
            "label_fraction": self.label_fraction,
            "max_label_epsilon": self.max_label_epsilon,
            "postprocess": self.postprocess,
            "temperature": self.temperature,
            "other_levels_temperature": self.other_levels_temperature,
        }
        if self.mechanism is not None:
            out["latent_mechanism"] = self.mechanism.name
            out.update(self.mechanism._params())
        if self.labeler is not None:
            out["labeler"] = self.labeler.description
            out["labels"] = ",".join(self.label_names)
        return out

    def modules(self) -> dict[str, torch.nn.Module]:
        parts = {"flow": self.flow}
        if isinstance(self.labeler, torch.nn.Module):
            parts["labeler"] = self.labeler
        return parts

    # ------------------------------------------------------------------ release

    def _log_weights(self, noisy_a, noisy_y, device) -> torch.Tensor:
        """log w_i (up to a constant) of each public training point, [B, N]."""
        batch = len(noisy_a if noisy_a is not None else noisy_y)
        points = len(self.basis.train_projections)
        logw = torch.zeros(batch, points, device=device, dtype=torch.float64)
        if noisy_y is not None:
            flips = self.label_mechanism.flip_probabilities()
            if self.postprocess.startswith("released_label"):
                flips = [0.0] * len(flips)  # the released labels taken as true
            # Bounded away from 0 so that epsilon = inf cannot give log(0) for every point.
            flip = torch.tensor(flips, device=device, dtype=torch.float64).clamp(1e-12, 0.5)
            keep = 1 - flip
            y_train = self._prior_labels.to(device, torch.float64)  # [N, m]
            agree = noisy_y.double()[:, None, :] == y_train[None]  # [B, N, m]
            known = ~torch.isnan(y_train)[None]
            logp = torch.where(agree, keep.log(), flip.log())
            logw = logw + torch.where(known, logp, math.log(0.5)).sum(-1)
        if noisy_a is not None and self._latent_record.noise != "none":
            scale = self._latent_record.noise_scale
            bounded = self._bounded_train.to(device)
            diff = noisy_a.double()[:, None, :] - bounded[None]
            if self.mechanism.noise == "laplace":
                logw = logw - diff.abs().sum(-1) / scale
            else:
                logw = logw - diff.pow(2).sum(-1) / (2 * scale**2)
        return logw

    def _estimate(self, noisy_a, noisy_y, generator, device) -> torch.Tensor:
        """a^ from the release, [B, k] (see the module docstring, step 3)."""
        record = self._latent_record if self.mechanism else None
        center = self.center.to(device)
        if noisy_a is not None and (self.postprocess == "none" or record.noise == "none"):
            return noisy_a + center
        if self.postprocess in ("posterior_mean", "posterior_sample") and noisy_a is not None:
            prior_std = min(1.0, record.clip / expected_norm(record.d, record.norm))
            kwargs = dict(noise=record.noise, scale=record.noise_scale, prior_std=prior_std)
            if self.postprocess == "posterior_mean":
                return posterior_mean(noisy_a, **kwargs) / prior_std + center
            sample = posterior_sample(noisy_a, generator=generator, **kwargs)
            return sample / prior_std + center
        weights = torch.softmax(self._log_weights(noisy_a, noisy_y, device), dim=1)
        train = self.basis.train_projections.to(device, torch.float64)
        if self.postprocess.endswith("_sample"):
            index = torch.multinomial(weights, 1, generator=generator)[:, 0]
            return train[index].float()
        return (weights @ train).float()

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, *, generator: torch.Generator, noise_source: str
    ) -> torch.Tensor:
        check_images(images, self.flow.image_size)
        x = to_flow_input(images, n_bits=self.n_bits)
        # An unconditional flow encodes first (the probe labeler reads its latents); a conditional
        # one encodes with the released labels.
        latents = None if self.conditional else self.flow.encode(x)
        noisy_y = None
        if self.labeler is not None:
            y = self.labeler(images, latents)
            noisy_y, _ = self.label_mechanism(y, generator=generator, noise_source=noise_source)
        cond = {"y": noisy_y} if self.conditional else {}
        if latents is None:
            latents = self.flow.encode(x, **cond)
        device, dtype = x.device, latents[0].dtype
        matrix = self.matrix.to(device, dtype)
        noisy_a = None
        if self.mechanism is not None:
            a = flatten_latents([latents[i] for i in self.levels]) @ matrix.T
            a = a - self.center.to(device, dtype)
            noisy_a, _ = self.mechanism(a, generator=generator, noise_source=noise_source)
        a_hat = self._estimate(noisy_a, noisy_y, generator, device).to(dtype)
        batch, d = len(images), matrix.shape[1]
        v = self.temperature * torch.randn(
            (batch, d), generator=generator, device=device, dtype=dtype
        )
        u = a_hat @ matrix + v - (v @ matrix.T) @ matrix
        out = assemble_latents(
            self.flow,
            self.levels,
            u,
            temperature=self.other_levels_temperature,
            generator=generator,
        )
        return to_uint8(self.flow.decode(out, **cond), n_bits=self.n_bits)
