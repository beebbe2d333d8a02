"""Step 3 of ``privacy=subspace`` / ``privacy=label_channel`` (:mod:`dpglow.privatizers.subspace`):
the estimate a^ of the released directions from the release alone, under the public empirical
prior (the training points' projections and labels) or an N(0, 1) prior per coordinate.
Post-processing: it sees the release and public data only."""

from __future__ import annotations

import math

import torch

from dpglow.privacy import posterior_mean, posterior_sample
from dpglow.privatizers.latents import expected_norm

POSTPROCESS = (
    "none",
    "posterior_mean",
    "posterior_sample",
    "public_posterior_mean",
    "public_posterior_sample",
    "released_label_mean",
    "released_label_sample",
)


class PublicEstimate:
    """The estimators of :class:`~dpglow.privatizers.subspace.SubspacePrivatizer` (its
    ``postprocess``), over the attributes it sets: ``basis``, ``center``, ``postprocess``,
    ``label_mechanism``, ``label_names``, ``_prior_labels``, ``mechanism``, ``_latent_record``
    and ``_bounded_train``."""

    def _log_weights(self, noisy_a, noisy_y, device) -> torch.Tensor:
        """log w_i (up to a constant) of each public training point, [B, N]."""
        batch = len(noisy_a if noisy_a is not None else noisy_y)
        points = len(self.basis.train_projections)
        logw = torch.zeros(batch, points, device=device, dtype=torch.float64)
        if noisy_y is not None:
            flips = self.label_mechanism.flip_probabilities
            if self.postprocess.startswith("released_label") or flips is None:
                flips = [0.0] * len(self.label_names)  # the released labels taken as true
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
