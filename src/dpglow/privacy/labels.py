"""The label channel of docs/method.md: binary randomized response on a label vector y in {0, 1}^m.

Label j is kept with probability e^eps_j / (1 + e^eps_j) and flipped otherwise, independently per
label and per row, where eps_j = epsilon * w_j / sum(w) (equal weights by default, epsilon / m
each). For one label the likelihood ratio of any output under y_j = 1 and y_j = 0 is e^{+-eps_j},
so label j is eps_j-LDP (Warner 1965; the optimal binary mechanism), and by basic composition the
vector is epsilon-LDP for any two images, whatever labels they carry.

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
from dpglow.privacy.noise import OS_ENTROPY, resolve_generator, work_dtype
from dpglow.privacy.validation import (
    check_epsilon,
    check_positive,
    check_positive_int,
    check_probability,
)


def _flip_probability(epsilon: float) -> float:
    """1 / (1 + e^epsilon), written so that no epsilon >= 0 overflows (0.0 for inf)."""
    tail = math.exp(-epsilon)
    return tail / (1.0 + tail)


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
    :class:`~dpglow.privacy.Mechanism`). The flips are drawn in float64 and ``noisy`` has y's
    dtype. ``epsilon=inf`` returns an unchanged copy of ``y``.
    """

    name: ClassVar[str] = "randomized_response"
    space: ClassVar[str] = "label"
    noise: ClassVar[str] = "randomized_response"
    norm: ClassVar[str] = "hamming"
    # Test-only hook: the negative-control audit multiplies every eps_j used for sampling (not the
    # record) by this, to show the audit can fail.
    _epsilon_factor: ClassVar[float] = 1.0

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

    def flip_probabilities(self) -> list[float]:
        """1 / (1 + e^eps_j), the probability that label j is flipped (0.0 for epsilon=inf)."""
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
        dtype = work_dtype(y.device)
        flip = torch.tensor(
            [_flip_probability(eps * self._epsilon_factor) for eps in self._label_epsilons],
            dtype=dtype,
            device=y.device,
        )
        draws = torch.rand(tuple(y.shape), generator=generator, device=y.device, dtype=dtype)
        return torch.where(draws < flip, 1.0 - y, y), record

    def record(
        self, shape: Sequence[int] | None = None, *, noise_source: str = OS_ENTROPY
    ) -> PrivacyRecord:
        """The record a call on label vectors of per-image ``shape`` ((num_labels,), the default)
        would return.

        ``d`` is the number of labels, ``sensitivity`` 1.0 (a label moves by at most 1, in the
        Hamming norm), ``epsilon_per_element`` the largest eps_j (the most exposed single label),
        ``epsilon_per_image`` epsilon, and ``noise_scale`` the flip probability when every label
        has the same eps_j, else NaN (see :meth:`flip_probabilities`).
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
        sigmoid(logit(prior_j) +- eps_j) (k_j / f_j = e^eps_j) so that nothing overflows.
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

    def _params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "num_labels": self.num_labels, "weights": self.weights}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        return f"{type(self).__name__}({params})"
