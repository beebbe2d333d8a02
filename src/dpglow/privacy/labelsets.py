"""The label vector released whole: one categorical value over a public domain of label sets.

Per-label randomized response splits epsilon m ways; chest X-ray label vectors are sparse and
correlated, so a randomizer over the joint label SET keeps far more. A label vector
y in {0, 1}^m is mapped to one of K + 1 outcomes (a set of the public ``domain``, or "other",
index K) and that index is released by :class:`~dpglow.privacy.GeneralizedRandomizedResponse`
(``subset_size=1``) or :class:`~dpglow.privacy.SubsetSelection`. The map is a fixed public
function, so the release is epsilon-LDP for any two label vectors.

:func:`fit_label_domain` fits the domain on PUBLIC labels by one of two rules:

- ``frequent``: the K most frequent public sets; a vector is its own set or "other";
- ``covering`` (the default): the empty set and the single-finding sets first, then the most
  frequent ones; a vector outside the domain becomes the domain set contained in it whose
  findings weigh most (``finding_weights``, the inverse public prevalence: rare findings count
  more), else "other". On NIH's public-validation patients it retains more at epsilon >= 3
  (``python src/evaluate_labels.py`` writes the comparison to ``label_level_validation.csv``).

Post-processing (free): :meth:`LabelSetResponse.posterior_findings` is the exact Bayes
P(finding | release) under the public frequency of each outcome (``prior``) and the public mean
label vector of each outcome's cell (``profiles``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from dpglow.privacy.accounting import PrivacyRecord
from dpglow.privacy.categorical import (
    GeneralizedRandomizedResponse,
    SubsetSelection,
    check_prior,
)
from dpglow.privacy.noise import OS_ENTROPY
from dpglow.privacy.validation import check_choice, check_epsilon, check_positive_int

log = logging.getLogger(__name__)

RULES = ("covering", "frequent")
MAX_FINDINGS = 62  # a label set is coded as the bits of an int64
_TO_BINARY = "map uncertain or blank labels to 0/1 first, e.g. with binarize_labels()"


def _check_binary(name: str, y: object, m: int | None = None) -> torch.Tensor:
    """A float [B, m] tensor of exactly 0 and 1, else an error that says what to do."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        kind = f"{y.dtype} tensor" if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"{name} must be a float tensor of 0s and 1s, got a {kind}")
    width = y.shape[-1] if y.dim() == 2 else None
    if y.dim() != 2 or y.shape[0] == 0 or (m is not None and width != m):
        raise ValueError(
            f"{name} must be a non-empty [B, {m or 'm'}] tensor (one row per label vector, "
            f"one column per finding), got {tuple(y.shape)}"
        )
    if not 1 <= y.shape[1] <= MAX_FINDINGS:
        raise ValueError(f"{name}: between 1 and {MAX_FINDINGS} findings, got {y.shape[1]}")
    if bool(torch.isnan(y).any()):
        raise ValueError(f"{name} holds NaN (unknown labels): {_TO_BINARY}")
    bad = (y != 0) & (y != 1)
    if bool(bad.any()):
        raise ValueError(
            f"{name} must hold exactly 0 or 1, got {float(y[bad][0])} "
            f"({int(bad.sum())} entries): {_TO_BINARY}"
        )
    return y


def _codes(y: torch.Tensor) -> torch.Tensor:
    """int64 [B]: bit j set where finding j is positive."""
    bits = torch.arange(y.shape[1], device=y.device)
    return (y.to(torch.int64) << bits).sum(1)


def label_set_index(
    y: torch.Tensor, sets: torch.Tensor, finding_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """int64 [B]: the row of ``sets`` [K, m] equal to each y, else K ("other"). With
    ``finding_weights`` [m], a y outside ``sets`` takes the non-empty row contained in y whose
    weights sum highest (the first such row on ties) and is "other" only when there is none."""
    codes, domain = _codes(y), _codes(sets)
    equal = codes[:, None] == domain[None, :]
    index = torch.where(equal.any(1), equal.to(torch.int8).argmax(1), len(domain))
    if finding_weights is not None:
        inside = ((domain[None, :] & ~codes[:, None]) == 0) & (domain[None, :] != 0)
        weight = sets.to(finding_weights.dtype) @ finding_weights
        score = torch.where(inside, weight[None, :], -math.inf)
        best = score.argmax(1)
        covered = (index == len(domain)) & inside.any(1)
        index = torch.where(covered, best, index)
    return index


def domain_sha256(sets: torch.Tensor, finding_weights: torch.Tensor | None = None) -> str:
    """SHA-256 of what the mechanism depends on: the domain (shape and 0/1 rows, row-major) and
    the finding weights of the covering map (float64, or nothing for exact matching)."""
    digest = hashlib.sha256(f"{tuple(sets.shape)}".encode())
    digest.update(sets.to(torch.uint8).cpu().contiguous().numpy().tobytes())
    if finding_weights is not None:
        digest.update(finding_weights.to(torch.float64).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class LabelDomain:
    """A fitted domain: ``sets`` [K, m], ``prior`` [K + 1] (public frequency of each outcome),
    ``profiles`` [K + 1, m] (public mean label vector of each outcome's cell), the covering map's
    ``finding_weights`` [m] (None for exact matching), the ``rule``, and how many public rows
    were used and dropped (rows with NaN)."""

    sets: torch.Tensor
    prior: torch.Tensor
    profiles: torch.Tensor
    finding_weights: torch.Tensor | None
    rule: str
    num_public: int
    num_dropped: int

    @property
    def size(self) -> int:
        return self.sets.shape[0]

    @property
    def other_profile(self) -> torch.Tensor:
        """[m]: the public mean label vector of the vectors released as "other"."""
        return self.profiles[-1]

    @property
    def domain_sha256(self) -> str:
        return domain_sha256(self.sets, self.finding_weights)


def fit_label_domain(labels: torch.Tensor, *, size: int, rule: str = "covering") -> LabelDomain:
    """Fit a domain of at most ``size`` label sets on a PUBLIC [N, m] 0/1 label matrix.

    Rows holding NaN (unknown labels) are dropped, with a log line saying how many: map
    CheXpert-style uncertain or blank labels with :func:`binarize_labels` first to keep them.
    Sets are ranked by public count (ties by their bit code); ``rule="covering"`` puts the
    empty set and every single-finding set before the others and weighs finding j by
    N / max(n_j, 1) (n_j its public positives). Fewer distinct sets than ``size``: all of them.
    """
    size = check_positive_int("size", size)
    rule = check_choice("rule", rule, RULES)
    labels = torch.as_tensor(labels, dtype=torch.float64)
    dropped = 0
    if labels.dim() == 2:
        known = ~torch.isnan(labels).any(1)
        dropped = int((~known).sum())
        if dropped:
            log.info(
                "fit_label_domain: dropped %d of %d rows with unknown labels", dropped, len(known)
            )
        labels = labels[known]
    y = _check_binary("labels", labels)
    codes, counts = torch.unique(_codes(y), return_counts=True)
    several = (codes & (codes - 1)) != 0  # more than one finding
    simple = torch.zeros_like(codes) if rule == "frequent" else several.long()
    # Rank by (simple sets first for "covering", count descending, code): two stable sorts.
    order = torch.argsort(-counts, stable=True)
    order = order[torch.argsort(simple[order], stable=True)][:size]
    if len(order) < size:
        log.info("fit_label_domain: %d distinct public sets, fewer than size=%d", len(order), size)
    bits = torch.arange(y.shape[1])
    sets = ((codes[order][:, None] >> bits) & 1).to(torch.float64)
    weights = None
    if rule == "covering":
        weights = len(y) / y.sum(0).clamp(min=1.0)
    cells = label_set_index(y, sets, weights)
    k = len(sets) + 1
    count = torch.bincount(cells, minlength=k).to(torch.float64)
    sums = torch.zeros(k, y.shape[1], dtype=torch.float64).index_add_(0, cells, y)
    profiles = torch.where(count[:, None] > 0, sums / count.clamp(min=1)[:, None], y.mean(0))
    return LabelDomain(sets, count / len(y), profiles, weights, rule, len(y), dropped)


def binarize_labels(
    labels: torch.Tensor, *, uncertain: str = "negative", blank: str = "negative"
) -> torch.Tensor:
    """CheXpert-style labels (1 positive, 0 negative, -1 uncertain, NaN blank) as 0/1 floats.

    ``uncertain``: "negative" (U-Zeros) or "positive" (U-Ones; Irvin et al. 2019). ``blank``:
    "negative" (a finding the report does not mention is absent: CheXpert's reading) or
    "uncertain" (as ``uncertain`` says: for sources that already turned -1 into NaN, as
    :class:`~dpglow.data.CheXpertSource` does). Any other value is refused.
    """
    uncertain = check_choice("uncertain", uncertain, ("negative", "positive"))
    blank = check_choice("blank", blank, ("negative", "uncertain"))
    labels = torch.as_tensor(labels)
    if not labels.is_floating_point():
        labels = labels.to(torch.float32)
    unsure = 1.0 if uncertain == "positive" else 0.0
    blank_value = unsure if blank == "uncertain" else 0.0
    bad = ~(torch.isnan(labels) | (labels == 0) | (labels == 1) | (labels == -1))
    if bool(bad.any()):
        raise ValueError(
            f"labels must be 1, 0, -1 (uncertain) or NaN (blank), got {float(labels[bad][0])}"
        )
    out = torch.where(labels == -1, unsure, labels)
    return torch.where(torch.isnan(out), blank_value, out)


class LabelSetResponse:
    """``label_set_response``: y in {0, 1}^m released as one outcome of K + 1 (see the module).

    ``domain`` [K, m]: distinct public 0/1 label sets (:func:`fit_label_domain`, or
    :meth:`from_domain`); ``prior`` [K + 1]: the public weight of each outcome (default
    uniform); ``profiles`` [K + 1, m]: P(finding | outcome's cell) in [0, 1] (default: the
    domain rows, and 1/2 for "other"); ``finding_weights`` [m] > 0: the covering map (None:
    exact matching); ``subset_size`` s: 1 releases the index by generalized randomized response
    (int64 [B]), s >= 2 a set of s outcomes by subset selection (bool [B, K + 1]).
    ``mech(y, *, generator=None, noise_source=None) -> (noisy, record)`` takes a float [B, m]
    tensor of exactly 0 and 1.
    """

    name: ClassVar[str] = "label_set_response"

    def __init__(
        self,
        *,
        epsilon: float,
        domain: torch.Tensor,
        prior: torch.Tensor | None = None,
        profiles: torch.Tensor | None = None,
        finding_weights: torch.Tensor | None = None,
        subset_size: int = 1,
    ) -> None:
        self.epsilon = check_epsilon(epsilon)
        self.domain = _check_binary("domain", domain).to(torch.float64)
        k, m = self.domain.shape[0] + 1, self.domain.shape[1]
        if len(torch.unique(_codes(self.domain))) != k - 1:
            raise ValueError("domain rows must be distinct label sets")
        self.subset_size = check_positive_int("subset_size", subset_size)
        self.mechanism: GeneralizedRandomizedResponse | SubsetSelection
        if self.subset_size == 1:
            self.mechanism = GeneralizedRandomizedResponse(epsilon=self.epsilon, num_outcomes=k)
        else:
            self.mechanism = SubsetSelection(
                epsilon=self.epsilon, num_outcomes=k, subset_size=self.subset_size
            )
        cpu = torch.device("cpu")
        self.prior = check_prior(torch.ones(k) if prior is None else prior, k, device=cpu)
        if profiles is None:
            profiles = torch.cat([self.domain, torch.full((1, m), 0.5, dtype=torch.float64)])
        self.profiles = torch.as_tensor(profiles, dtype=torch.float64)
        if self.profiles.shape != (k, m) or not bool(
            ((self.profiles >= 0) & (self.profiles <= 1)).all()
        ):
            raise ValueError(f"profiles must be a [{k}, {m}] tensor of probabilities in [0, 1]")
        self.finding_weights = None
        if finding_weights is not None:
            weights = torch.as_tensor(finding_weights, dtype=torch.float64)
            if weights.shape != (m,) or not bool((torch.isfinite(weights) & (weights > 0)).all()):
                raise ValueError(
                    f"finding_weights must be {m} finite numbers > 0 (one per finding)"
                )
            self.finding_weights = weights

    @classmethod
    def from_domain(
        cls, fitted: LabelDomain, *, epsilon: float, subset_size: int = 1
    ) -> LabelSetResponse:
        """The mechanism of a :func:`fit_label_domain` result, its prior and profiles."""
        return cls(
            epsilon=epsilon,
            domain=fitted.sets,
            prior=fitted.prior,
            profiles=fitted.profiles,
            finding_weights=fitted.finding_weights,
            subset_size=subset_size,
        )

    @property
    def num_findings(self) -> int:
        return self.domain.shape[1]

    @property
    def domain_sha256(self) -> str:
        return domain_sha256(self.domain, self.finding_weights)

    def index(self, y: torch.Tensor) -> torch.Tensor:
        """int64 [B]: the outcome each label vector is released as (before the noise)."""
        y = _check_binary("y", y, self.num_findings)
        weights = None if self.finding_weights is None else self.finding_weights.to(y.device)
        return label_set_index(y, self.domain.to(y.device), weights)

    def __call__(
        self,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        noise_source: str | None = None,
    ) -> tuple[torch.Tensor, PrivacyRecord]:
        noisy, inner = self.mechanism(self.index(y), generator=generator, noise_source=noise_source)
        return noisy, self._wrap(inner)

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        """The inner mechanism's record (its noise, noise scale and epsilon) under this name,
        with ``d`` the number of findings, as for randomized response."""
        return self._wrap(self.mechanism.record(noise_source=noise_source))

    def _wrap(self, inner: PrivacyRecord) -> PrivacyRecord:
        return replace(inner, mechanism=self.name, d=self.num_findings)

    def posterior_outcomes(self, noisy: torch.Tensor) -> torch.Tensor:
        """[B, K + 1] float64: P(outcome | release) under ``prior`` (free post-processing)."""
        return self.mechanism.posterior(noisy, prior=self.prior.to(noisy.device))

    def posterior_findings(self, noisy: torch.Tensor) -> torch.Tensor:
        """[B, m] float64: P(finding j = 1 | release) = sum over outcomes of
        P(outcome | release) ``profiles``[outcome, j] (exact when the profiles are the public
        means of the cells and the prior their public frequencies)."""
        return self.posterior_outcomes(noisy) @ self.profiles.to(noisy.device)

    def released_sets(self, noisy: torch.Tensor) -> torch.Tensor:
        """[B, m] float64: the released label set; a row of NaN where it is "other". A subset
        release names the outcome of the reported set with the largest ``prior`` (the first on
        ties): the most likely one, since every reported outcome has the same likelihood."""
        noisy = self.mechanism.check_release(noisy)
        if self.subset_size == 1:
            index = noisy
        else:
            prior = self.prior.to(noisy.device)
            index = torch.where(noisy, prior, prior.new_tensor(-1.0)).argmax(1)
        table = torch.cat([self.domain, torch.full((1, self.num_findings), math.nan)])
        return table.to(noisy.device)[index]

    def params(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "domain_size": self.domain.shape[0],
            "num_findings": self.num_findings,
            "covering": self.finding_weights is not None,
            "subset_size": self.subset_size,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({params})"
