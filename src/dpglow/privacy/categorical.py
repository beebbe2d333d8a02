"""Local randomizers of one categorical value x in {0, ..., k - 1}, sampled exactly.

:class:`GeneralizedRandomizedResponse` (k-ary randomized response; Kairouz, Bonawitz & Ramage
2016) reports x with probability p and each other value with probability q, p / q <= e^epsilon.
:class:`SubsetSelection` (Wang et al. 2016; Ye & Barg 2018) reports a set of s values that holds
x with a boosted probability; with s = 1 it would be the former, which is why it takes s >= 2.

Both are sampled from integer uniforms (:mod:`dpglow.privacy.exact`) with dyadic probabilities
m / 2^62 rounded towards less privacy loss, and check the ratio they actually sample against a
lower bound of e^epsilon in exact rational arithmetic at construction. Both keep the calling
convention of :class:`~dpglow.privacy.RandomizedResponse`
(``mech(index, *, generator=None, noise_source=None) -> (noisy, record)``); their free
post-processing is ``posterior(noisy, *, prior)``, the exact Bayes posterior over x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, ClassVar

import torch

from dpglow.privacy.accounting import PrivacyRecord
from dpglow.privacy.exact import (
    ONE,
    ceil_to_float,
    dyadic_at_least,
    exp_lower,
    other_outcome_numerator,
    uniform_below,
    uniform_bits,
)
from dpglow.privacy.noise import OS_ENTROPY, resolve_generator
from dpglow.privacy.validation import check_epsilon, check_positive_int


def check_outcomes(num_outcomes: object) -> int:
    """``num_outcomes >= 2`` (one possible value needs no mechanism)."""
    k = check_positive_int("num_outcomes", num_outcomes)
    if k < 2:
        raise ValueError(f"num_outcomes must be >= 2, got {k}")
    return k


def check_prior(prior: object, k: int, *, device: torch.device) -> torch.Tensor:
    """``prior`` as a float64 tensor [k] summing to 1: k finite weights >= 0, not all 0."""
    try:
        weights = torch.as_tensor(prior, dtype=torch.float64, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"prior must be {k} non-negative numbers, got {prior!r}") from exc
    if weights.shape != (k,):
        raise ValueError(f"prior needs one weight per outcome ({k}), got shape {weights.shape}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("prior weights must be finite and >= 0")
    total = float(weights.sum())
    if total <= 0:
        raise ValueError("prior weights must not all be 0")
    return weights / total


class _Categorical:
    """What the k-ary mechanisms share: validation, generators, records, repr."""

    name: ClassVar[str]
    noise: ClassVar[str]
    space: ClassVar[str] = "label"
    norm: ClassVar[str] = "hamming"

    epsilon: float
    num_outcomes: int

    def _noise_scale(self) -> float:
        raise NotImplementedError

    def record(self, *, noise_source: str = OS_ENTROPY) -> PrivacyRecord:
        """One categorical value (``d`` 1), sensitivity 1 in the Hamming norm of that value,
        epsilon per image = per element = ``epsilon`` (the sampled ratio is at most e^epsilon),
        ``private`` iff the noise came from OS entropy; ``noise="none"`` for epsilon=inf."""
        infinite = math.isinf(self.epsilon)
        return PrivacyRecord(
            mechanism=self.name,
            d=1,
            clip=None,
            norm=None if infinite else self.norm,
            sensitivity=None if infinite else 1.0,
            epsilon_per_element=self.epsilon,
            epsilon_per_image=self.epsilon,
            delta=0.0,
            noise="none" if infinite else self.noise,
            noise_scale=0.0 if infinite else self._noise_scale(),
            noise_source=noise_source,
            accounting="per_image",
            private=not infinite and noise_source == OS_ENTROPY,
        )

    def _check_index(self, index: torch.Tensor) -> torch.Tensor:
        if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.is_complex():
            kind = f"{index.dtype} tensor" if isinstance(index, torch.Tensor) else type(index)
            raise TypeError(f"{self.name} expects an integer tensor of indices, got a {kind}")
        if index.dtype == torch.bool or index.dim() != 1 or index.numel() == 0:
            raise ValueError(
                f"{self.name} expects a non-empty [B] integer tensor, got {index.dtype} "
                f"{tuple(index.shape)}"
            )
        if int(index.min()) < 0 or int(index.max()) >= self.num_outcomes:
            raise ValueError(
                f"{self.name}: indices must lie in [0, {self.num_outcomes - 1}], got "
                f"[{int(index.min())}, {int(index.max())}]"
            )
        return index.to(torch.int64)

    def _start(
        self, index: torch.Tensor, generator: torch.Generator | None, noise_source: str | None
    ) -> tuple[torch.Tensor, torch.Generator, PrivacyRecord]:
        """The checked indices, the generator to draw from and the release's record."""
        index = self._check_index(index)
        generator, source = resolve_generator(generator, noise_source, index.device)
        return index, generator, self.record(noise_source=source)

    def check_release(self, noisy: torch.Tensor) -> torch.Tensor:
        """``noisy`` as int64 if it is a release (a [B] tensor of indices), else an error."""
        return self._check_index(noisy)

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "num_outcomes": self.num_outcomes}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({params})"


class GeneralizedRandomizedResponse(_Categorical):
    """``generalized_randomized_response``: k-ary randomized response over {0, ..., k - 1}.

    The other values are each reported with the dyadic probability q = m / 2^62,
    m = ceil(2^62 / (e + k - 1)) rounded up to 53 significant bits (:func:`ceil_to_float`), where
    e <= e^epsilon is :func:`exp_lower`; so q is at least the ideal 1 / (e^epsilon + k - 1), the
    true value is reported with p = 1 - (k - 1) q, and p / q <= e^epsilon exactly.
    ``q_numerator`` is m, :meth:`probabilities` gives p and q as fractions, and the record's
    ``noise_scale`` is q exactly. One draw U uniform on [0, 2^62): if
    U < (k - 1) m the output is the (U // m)-th value other than the true one, else the true one.
    ``mech(index, *, generator=None, noise_source=None) -> (noisy, record)`` takes a [B] integer
    tensor and returns int64 [B]; ``epsilon=inf`` returns a copy of the input.
    """

    name: ClassVar[str] = "generalized_randomized_response"
    noise: ClassVar[str] = "randomized_response"

    def __init__(self, *, epsilon: float, num_outcomes: int) -> None:
        self.epsilon = check_epsilon(epsilon)
        self.num_outcomes = check_outcomes(num_outcomes)
        k = self.num_outcomes
        if math.isinf(self.epsilon):
            self.q_numerator = 0
        else:
            e = exp_lower(self.epsilon)
            self.q_numerator = other_outcome_numerator(self.epsilon, k)
            p_numerator = ONE - (k - 1) * self.q_numerator
            if not self.q_numerator <= p_numerator <= e * self.q_numerator:
                raise ValueError(
                    f"epsilon={self.epsilon} with {k} outcomes cannot be sampled with "
                    "62-bit probabilities; use a larger epsilon or fewer outcomes"
                )

    def probabilities(self) -> tuple[Fraction, Fraction]:
        """(p, q): the exact probabilities of reporting the true value and each other value."""
        q = Fraction(self.q_numerator, ONE)
        return 1 - (self.num_outcomes - 1) * q, q

    def _noise_scale(self) -> float:
        return self.q_numerator / ONE

    def __call__(
        self,
        index: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        noise_source: str | None = None,
    ) -> tuple[torch.Tensor, PrivacyRecord]:
        index, generator, record = self._start(index, generator, noise_source)
        if record.noise == "none":
            return index.clone(), record
        draw = uniform_bits(tuple(index.shape), generator=generator, device=index.device)
        lie = draw < (self.num_outcomes - 1) * self.q_numerator
        other = draw // self.q_numerator  # uniform on {0, ..., k - 2} where lie holds
        other = other + (other >= index).to(torch.int64)  # skip the true value
        return torch.where(lie, other, index), record

    def posterior(self, noisy: torch.Tensor, *, prior: Sequence[float] | torch.Tensor):
        """[B, k] float64: P(x = i | noisy) for x ~ ``prior`` (k weights >= 0, normalised).

        Bayes' rule with the sampled p and q: prior_i p / Z at i = noisy, prior_i q / Z
        elsewhere. Free post-processing; with ``epsilon=inf`` the one-hot of ``noisy``.
        """
        noisy = self.check_release(noisy)
        weights = check_prior(prior, self.num_outcomes, device=noisy.device)
        hit = torch.nn.functional.one_hot(noisy, self.num_outcomes).bool()
        if math.isinf(self.epsilon):
            return hit.double()
        p, q = (float(v) for v in self.probabilities())
        joint = weights * torch.where(hit, weights.new_tensor(p), weights.new_tensor(q))
        return joint / joint.sum(1, keepdim=True)


class SubsetSelection(_Categorical):
    """``subset_selection``: report a set of ``subset_size`` s of the k values (2 <= s < k).

    The true value is in the set with the dyadic probability
    a = 1 - ceil(2^62 (k - s) / (s e + k - s)) / 2^62, the ceil rounded up to 53 significant
    bits and e <= e^epsilon as in :class:`GeneralizedRandomizedResponse` (``include_numerator``
    is 2^62 a; the record's ``noise_scale`` is 1 - a, exactly), and the rest of the set is a
    uniform draw from the other values (partial Fisher-Yates with exact uniform integers).
    Every set holding x has probability a / C(k - 1, s - 1), every other set
    (1 - a) / C(k - 1, s), and their ratio a (k - s) / ((1 - a) s) is checked to lie in
    [1, e^epsilon] exactly. Output: bool [B, k], True on the reported values. ``epsilon=inf``
    reports the one-hot set {x} (nothing random).
    """

    name: ClassVar[str] = "subset_selection"
    noise: ClassVar[str] = "subset_selection"

    def __init__(self, *, epsilon: float, num_outcomes: int, subset_size: int) -> None:
        self.epsilon = check_epsilon(epsilon)
        self.num_outcomes = check_outcomes(num_outcomes)
        self.subset_size = check_positive_int("subset_size", subset_size)
        k, s = self.num_outcomes, self.subset_size
        if not 2 <= s < k:
            raise ValueError(
                f"subset_size must lie in [2, num_outcomes - 1] = [2, {k - 1}], got {s} "
                "(subset_size=1 is GeneralizedRandomizedResponse)"
            )
        if math.isinf(self.epsilon):
            self.include_numerator = ONE
        else:
            e = exp_lower(self.epsilon)
            left_out = ceil_to_float(dyadic_at_least(1 - s * e / (s * e + k - s)))
            self.include_numerator = ONE - left_out
            ratio = self.likelihood_ratio()
            if not 1 <= ratio <= e:
                raise ValueError(
                    f"epsilon={self.epsilon} with {k} outcomes and subset_size={s} cannot be "
                    "sampled with 62-bit probabilities; use a larger epsilon"
                )

    def likelihood_ratio(self) -> Fraction:
        """P(S | x in S) / P(S | x not in S), exactly, for the sampled inclusion probability."""
        a = Fraction(self.include_numerator, ONE)
        k, s = self.num_outcomes, self.subset_size
        return a * (k - s) / ((1 - a) * s) if a < 1 else Fraction(math.inf)

    def _noise_scale(self) -> float:
        # The probability that the true value is left out of the reported set.
        return (ONE - self.include_numerator) / ONE

    def params(self) -> dict[str, Any]:
        return {**super().params(), "subset_size": self.subset_size}

    def __call__(
        self,
        index: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        noise_source: str | None = None,
    ) -> tuple[torch.Tensor, PrivacyRecord]:
        index, generator, record = self._start(index, generator, noise_source)
        k, s, rows = self.num_outcomes, self.subset_size, index.shape[0]
        reported = torch.zeros(rows, k, dtype=torch.bool, device=index.device)
        if record.noise == "none":
            return reported.scatter_(1, index[:, None], True), record
        include = uniform_bits((rows,), generator=generator, device=index.device) < (
            self.include_numerator
        )
        # The first s places of a partial Fisher-Yates shuffle of the k - 1 other values.
        order = torch.arange(k - 1, device=index.device).expand(rows, k - 1).clone()
        for t in range(s):
            pick = t + uniform_below(
                torch.full((rows,), k - 1 - t, dtype=torch.int64, device=index.device),
                generator=generator,
            )
            chosen = order.gather(1, pick[:, None])
            order.scatter_(1, pick[:, None], order[:, t : t + 1])
            order[:, t : t + 1] = chosen
        others = order[:, :s]
        others = others + (others >= index[:, None]).to(torch.int64)
        needed = s - include.to(torch.int64)  # s - 1 others when x is in the set
        keep = torch.arange(s, device=index.device)[None, :] < needed[:, None]
        reported.scatter_(1, others, keep)
        reported[torch.arange(rows, device=index.device), index] = include
        return reported, record

    def check_release(self, noisy: torch.Tensor) -> torch.Tensor:
        """``noisy`` if it is a reported set (bool [B, k], s values each), else an error."""
        k, s = self.num_outcomes, self.subset_size
        if not isinstance(noisy, torch.Tensor) or noisy.dtype != torch.bool:
            raise TypeError(f"{self.name}: noisy must be the bool [B, {k}] set a call returned")
        if noisy.dim() != 2 or noisy.shape[1] != k or noisy.shape[0] == 0:
            raise ValueError(f"{self.name}: noisy must be a non-empty [B, {k}] bool tensor")
        size = noisy.sum(1)
        wanted = 1 if math.isinf(self.epsilon) else s
        if bool((size != wanted).any()):
            raise ValueError(f"{self.name}: every reported set holds {wanted} values")
        return noisy

    def posterior(self, noisy: torch.Tensor, *, prior: Sequence[float] | torch.Tensor):
        """[B, k] float64: P(x = i | reported set) for x ~ ``prior``: proportional to
        prior_i times the likelihood ratio where i is in the set, prior_i elsewhere."""
        noisy = self.check_release(noisy)
        weights = check_prior(prior, self.num_outcomes, device=noisy.device)
        if math.isinf(self.epsilon):  # the set is {x} itself
            return noisy.double() / noisy.sum(1, keepdim=True)
        ratio = weights.new_tensor(float(self.likelihood_ratio()))
        joint = weights * torch.where(noisy, ratio, weights.new_tensor(1.0))
        return joint / joint.sum(1, keepdim=True)
