"""The label channel of docs/method.md: binary randomized response on a label vector y in {0, 1}^m.

Label j is kept with probability e^eps_j / (1 + e^eps_j) and flipped otherwise, independently per
label and per row, where eps_j = epsilon * w_j / sum(w) (equal weights by default, epsilon / m
each). For one label the likelihood ratio of any output under y_j = 1 and y_j = 0 is e^{+-eps_j},
so label j is eps_j-LDP (Warner 1965; the optimal binary mechanism), and by basic composition the
vector is epsilon-LDP for any two images, whatever labels they carry.

Exact sampling: 1 / (1 + e^eps_j) is irrational, so label j is flipped with the dyadic probability
f_j = m_j / 2^62 just above it (m_j from :func:`_flip_numerator`, the smallest such value with at
most 53 significant bits, so that the float :meth:`RandomizedResponse.flip_probabilities` states is
exactly f_j), by comparing one integer uniform on {0, ..., 2^62 - 1} with m_j
(:func:`~dpglow.privacy.exact.bernoulli_dyadic`). A flip probability rounded UP can only lower the
likelihood ratio: (1 - f_j) / f_j <= e^eps_j, so the sampled mechanism is eps_j-LDP with no
floating-point residue (up to torch's generator; see docs/method.md, "Exact sampling"). Its true
epsilon, ln((1 - f_j) / f_j), is below eps_j by less than 1e-15 for eps_j <= 10 and 1e-10 for
eps_j <= 20; the flip probability bottoms out at 2^-62 (a true epsilon of ln(2^62 - 1) ~ 43).

:class:`RandomizedResponse` is not a :class:`~dpglow.privacy.Mechanism`: that class adds
continuous noise to a bounded statistic and its records feed the continuous post-processing
(:func:`~dpglow.privacy.posterior_mean`); flipping bits fits neither. It keeps the same calling
convention (``rr(y, *, generator=None, noise_source=None) -> (noisy, record)``) and the same
generator handling, and its free post-processing is :meth:`RandomizedResponse.posterior_positive`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch

from dpglow.privacy.accounting import PrivacyRecord
from dpglow.privacy.exact import BITS, bernoulli_dyadic, other_outcome_numerator
from dpglow.privacy.noise import OS_ENTROPY, resolve_generator, work_dtype
from dpglow.privacy.validation import (
    check_epsilon,
    check_positive,
    check_positive_int,
    check_probability,
)


def _flip_numerator(epsilon: float) -> int:
    """m with m / 2^62 >= 1 / (1 + e^epsilon): binary randomized response is k-ary randomized
    response over 2 outcomes, its flip probability the probability of the other outcome
    (:func:`~dpglow.privacy.exact.other_outcome_numerator`: rounded UP from a rigorous lower bound
    of e^epsilon to at most 53 significant bits; 0 for epsilon = inf). Rounding the flip
    probability f up can only lower the likelihood ratio (1 - f) / f, so the sampled mechanism is
    at most epsilon-LDP."""
    return other_outcome_numerator(epsilon, 2)


def _flip_probability(epsilon: float) -> float:
    """The flip probability randomized response samples at ``epsilon``: m / 2^62, exactly."""
    return _flip_numerator(epsilon) / (1 << BITS)


def _reals(name: str, values: object, length: int, check: Any) -> tuple[float, ...]:
    """``values`` as a tuple of ``length`` floats, each passed through ``check(name, value)``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of real numbers, got {type(values).__name__}")
    numbers = tuple(check(f"{name}[{i}]", value) for i, value in enumerate(values))
    if len(numbers) != length:
        raise ValueError(f"{name} needs one entry per label ({length}), got {len(numbers)}")
    return numbers


class RandomizedResponse:
    """``randomized_response``: keep label j with probability e^eps_j / (1 + e^eps_j), else flip.

    ``epsilon`` is the guarantee for the whole label vector; label j gets
    eps_j = epsilon * w_j / sum(w) for ``weights`` w (finite, > 0, one per label; default equal,
    i.e. epsilon / ``num_labels`` each), so that the eps_j sum to epsilon (basic composition).
    ``rr(y, *, generator=None, noise_source=None) -> (noisy, record)`` takes ``y`` of shape
    ``[B, num_labels]``, a float tensor whose values are exactly 0 or 1, and flips each entry
    independently; the generator is handled as by every mechanism (see
    :class:`~dpglow.privacy.Mechanism`). Each flip is an exact Bernoulli(f_j) from an integer
    uniform, f_j the dyadic flip probability of the module note (at or just above
    1 / (1 + e^eps_j)), and ``noisy`` has y's dtype. ``epsilon=inf`` returns an unchanged copy
    of ``y``.
    """

    name: ClassVar[str] = "randomized_response"
    space: ClassVar[str] = "label"
    noise: ClassVar[str] = "randomized_response"
    norm: ClassVar[str] = "hamming"

    def __init__(
        self,
        *,
        epsilon: float,
        num_labels: int = 1,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.epsilon = check_epsilon(epsilon)
        self.num_labels = check_positive_int("num_labels", num_labels)
        if weights is None:
            self.weights = None
            self._label_epsilons = (self.epsilon / self.num_labels,) * self.num_labels
        else:
            self.weights = _reals("weights", weights, self.num_labels, check_positive)
            total = math.fsum(self.weights)
            self._label_epsilons = tuple(self.epsilon * w / total for w in self.weights)

    def label_epsilons(self) -> list[float]:
        """eps_j, the guarantee of label j on its own."""
        return list(self._label_epsilons)

    def flip_numerators(self) -> list[int]:
        """m_j: label j is flipped when an integer uniform on {0, ..., 2^62 - 1} is below it."""
        return [_flip_numerator(eps) for eps in self._label_epsilons]

    def flip_probabilities(self) -> list[float]:
        """f_j, the probability that label j is flipped, exactly as sampled: the dyadic m_j / 2^62
        at or just above 1 / (1 + e^eps_j) (a relative excess below 2^-51 for eps_j <= 10; at
        least 2^-62; 0.0 for epsilon=inf)."""
        return [_flip_probability(eps) for eps in self._label_epsilons]

    def __call__(
        self,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        noise_source: str | None = None,
    ) -> tuple[torch.Tensor, PrivacyRecord]:
        self._check_labels("y", y)
        generator, source = resolve_generator(generator, noise_source, y.device)
        record = self.record(noise_source=source)
        if record.noise == "none":
            return y.clone(), record
        numerators = torch.tensor(
            self.flip_numerators(),
            dtype=torch.int64,
            device=y.device,
        )
        flip = bernoulli_dyadic(numerators, tuple(y.shape), generator=generator, device=y.device)
        return torch.where(flip, 1.0 - y, y), record

    def record(
        self, shape: Sequence[int] | None = None, *, noise_source: str = OS_ENTROPY
    ) -> PrivacyRecord:
        """The record a call on label vectors of per-image ``shape`` ((num_labels,), the default)
        would return.

        ``d`` is the number of labels, ``sensitivity`` 1.0 (a label moves by at most 1, in the
        Hamming norm), ``epsilon_per_element`` the largest eps_j (the most exposed single label),
        ``epsilon_per_image`` epsilon, and ``noise_scale`` the flip probability actually sampled
        (the dyadic f_j of :meth:`flip_probabilities`) when every label has the same eps_j, else
        NaN.
        """
        if shape is not None and tuple(int(s) for s in shape) != (self.num_labels,):
            raise ValueError(
                f"{self.name}: bad per-image shape {tuple(shape)}, expected ({self.num_labels},)"
            )
        common = {
            "mechanism": self.name,
            "d": self.num_labels,
            "delta": 0.0,
            "epsilon_per_image": self.epsilon,
            "noise_source": noise_source,
            "accounting": "per_image",
        }
        if math.isinf(self.epsilon):
            return PrivacyRecord(
                **common,
                clip=None,
                norm=None,
                sensitivity=None,
                epsilon_per_element=math.inf,
                noise="none",
                noise_scale=0.0,
                private=False,
            )
        flips = self.flip_probabilities()
        return PrivacyRecord(
            **common,
            clip=None,
            norm=self.norm,
            sensitivity=1.0,
            epsilon_per_element=max(self._label_epsilons),
            noise=self.noise,
            noise_scale=flips[0] if len(set(self._label_epsilons)) == 1 else math.nan,
            private=noise_source == OS_ENTROPY,
        )

    def posterior_positive(
        self, noisy: torch.Tensor, *, prior: float | Sequence[float]
    ) -> torch.Tensor:
        """P(y_j = 1 | noisy_j) for y_j ~ Bernoulli(prior_j), in noisy's dtype and shape.

        Bayes' rule with keep / flip probabilities k_j = e^eps_j / (1 + e^eps_j), f_j = 1 - k_j:
        prior_j k_j / (prior_j k_j + (1 - prior_j) f_j) where noisy_j = 1 and
        prior_j f_j / (prior_j f_j + (1 - prior_j) k_j) where noisy_j = 0, evaluated as
        sigmoid(logit(prior_j) +- eps_j) (k_j / f_j = e^eps_j) so that nothing overflows. It uses
        e^eps_j, not the sampled f_j: the two differ by less than float64 rounding for
        eps_j <= 10, and past ~43 the sampled f_j stays at 2^-62.
        ``prior`` is one probability for every label or one per label; prior 0 or 1 gives back
        the prior. Free post-processing: it never looks at the true labels. With
        ``epsilon=inf`` the labels were released as they are, and ``noisy`` itself is returned
        (as a copy).
        """
        self._check_labels("noisy", noisy)
        if isinstance(prior, Iterable):  # a str is refused by _reals
            priors = _reals("prior", prior, self.num_labels, check_probability)
        else:
            priors = (check_probability("prior", prior),) * self.num_labels
        if math.isinf(self.epsilon):
            return noisy.clone()
        dtype = work_dtype(noisy.device)
        p = torch.tensor(priors, dtype=dtype, device=noisy.device)
        eps = torch.tensor(self._label_epsilons, dtype=dtype, device=noisy.device)
        log_odds = torch.log(p) - torch.log1p(-p)  # -inf / +inf at prior 0 / 1
        sign = 2.0 * noisy.to(dtype) - 1.0
        return torch.sigmoid(log_odds + sign * eps).to(noisy.dtype)

    def _check_labels(self, name: str, y: torch.Tensor) -> None:
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            kind = f"{y.dtype} tensor" if isinstance(y, torch.Tensor) else type(y).__name__
            raise TypeError(f"{self.name} expects a float tensor of 0s and 1s, got a {kind}")
        if y.dim() != 2 or y.shape[0] == 0 or y.shape[1] != self.num_labels:
            raise ValueError(
                f"{self.name} expects a non-empty [B, {self.num_labels}] tensor "
                f"(num_labels={self.num_labels}), got {tuple(y.shape)}"
            )
        bad = (y != 0) & (y != 1)  # NaN compares unequal to both
        if bool(bad.any()):
            value = float(y[bad][0])
            raise ValueError(
                f"{self.name}: {name} must hold exactly 0 or 1, got {value} "
                f"({int(bad.sum())} entries not in {{0, 1}})"
            )

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "num_labels": self.num_labels, "weights": self.weights}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({params})"
