"""The label channel's mechanism, picked from the number of labels (docs/method.md).

- One label: binary randomized response (:class:`~dpglow.privacy.RandomizedResponse`), the
  optimal eps-LDP mechanism for a bit.
- Several labels (e.g. NIH's 14 findings): the label vector is released whole, as one value of a
  public domain of label sets (:class:`~dpglow.privacy.LabelSetResponse`), whose domain, prior
  and cell profiles are fitted on PUBLIC labels (the flow's training split); the domain size and
  the subset size follow ``schedule``, chosen per epsilon on NIH's public-validation patients
  (``python src/evaluate_labels.py``).

Either way the renderer gets a released label vector ``[B, m]`` of 0 and 1: randomized
response's output itself, or the released label set (for "other", or a subset release, the
findings whose posterior under the public prior exceeds 1/2).

Public labels that are unknown (CheXpert's uncertain and blank) count as ``unknown`` says
(``negative`` or ``positive``): the rule the dataset labeler applies to the private ones; a
public image with no known label at all is left out of the prior.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from dpglow.privacy import LabelSetResponse, PrivacyRecord, fit_label_domain

# (epsilon from, domain size, subset size) rows, chosen on NIH's public-validation patients.
DEFAULT_SCHEDULE = ((0.0, 16, 6), (2.0, 16, 3), (4.0, 16, 1), (8.0, 128, 1))


def scheduled(epsilon: float, schedule: Sequence[Sequence[float]]) -> tuple[int, int]:
    """(domain size, subset size) of the last schedule row whose epsilon is <= ``epsilon``."""
    rows = sorted((float(e), int(k), int(s)) for e, k, s in schedule)
    chosen = rows[0]
    for row in rows:
        if row[0] <= epsilon:
            chosen = row
    return chosen[1], chosen[2]


class LabelRelease:
    """``release(y, generator=..., noise_source=...) -> (labels [B, m] in {0, 1}, record)`` for
    the labeler's ``y`` [B, m]; see the module docstring."""

    def __init__(
        self,
        *,
        epsilon: float,
        names: Sequence[str],
        public_labels: torch.Tensor,
        one_label: Callable[..., Any],
        label_sets: Mapping[str, Any] | None = None,
        unknown: str = "negative",
    ) -> None:
        if unknown not in ("negative", "positive"):
            raise ValueError(f"unknown must be 'negative' or 'positive', got {unknown!r}")
        self.names, self.epsilon = list(names), float(epsilon)
        self.domain = None
        if len(self.names) == 1:
            self.mechanism = one_label(epsilon=self.epsilon, num_labels=1)
            return
        spec = dict(label_sets or {})
        size, subset = scheduled(self.epsilon, spec.get("schedule") or DEFAULT_SCHEDULE)
        labelled = (
            public_labels[~torch.isnan(public_labels).all(dim=1)]
            if public_labels is not None
            else torch.empty(0, len(self.names))
        )
        if len(labelled) < 10:
            raise ValueError(
                f"{len(labelled)} public label vectors with a known entry for {self.names}: the "
                "label-set mechanism needs the flow's training split to be labelled"
            )
        known = torch.nan_to_num(labelled.float(), nan=1.0 if unknown == "positive" else 0.0)
        self.domain = fit_label_domain(known, size=size, rule=spec.get("rule", "covering"))
        self.mechanism = LabelSetResponse.from_domain(
            self.domain, epsilon=self.epsilon, subset_size=subset
        )

    @property
    def flip_probabilities(self) -> list[float] | None:
        """Per label, randomized response's flip probability (None for the label-set one)."""
        if self.domain is not None:
            return None
        return self.mechanism.flip_probabilities()

    def record(self, *, noise_source: str) -> PrivacyRecord:
        return self.mechanism.record(noise_source=noise_source)

    def describe(self) -> dict[str, Any]:
        if self.domain is None:
            return {"label_mechanism": self.mechanism.name}
        return {
            "label_mechanism": self.mechanism.name,
            "label_domain_size": self.domain.size,
            "label_subset_size": getattr(self.mechanism, "subset_size", 1),
            "label_domain_sha256": self.mechanism.domain_sha256,
        }

    def __call__(
        self, y: torch.Tensor, *, generator: torch.Generator, noise_source: str
    ) -> tuple[torch.Tensor, PrivacyRecord]:
        noisy, record = self.mechanism(y, generator=generator, noise_source=noise_source)
        if self.domain is None:
            return noisy, record
        sets = self.mechanism.released_sets(noisy).to(y)
        fallback = (self.mechanism.posterior_findings(noisy) > 0.5).to(y)
        return torch.where(torch.isnan(sets), fallback, sets), record
