"""Randomized response on labels: exact flip probabilities, the posterior, validation, audits.

The audits follow test_audit.py: neighbouring label vectors at Hamming distance m (all zeros vs
all ones), n seeded draws of each in one vectorised call, Clopper-Pearson bounds with failure
probability 1e-6 per test. One label's output is a bit, and the event {bit = 1} has likelihood
ratio exactly e^eps_j, so the bound is tight up to sampling error. For the vector the statistic is
the log-likelihood ratio sum_j eps_j (2 z_j - 1) (the optimal test), whose top event {z = 1...1}
has ratio e^epsilon. The control samples with twice the epsilon it records and must be caught.
"""

from __future__ import annotations

import decimal
import logging
import math
from fractions import Fraction

import pytest
import torch

from dpglow.privacy import (
    MECHANISMS,
    OS_ENTROPY,
    SEEDED,
    UNVERIFIED,
    RandomizedResponse,
    noise_generator,
)
from dpglow.privacy.exact import bernoulli_dyadic
from dpglow.privacy.labels import _flip_numerator

from .audit import FAILURE_PROBABILITY, epsilon_lower_bound

N_AUDIT = 1_000_000
N_EXACT = 400_000
SIGMAS = 6.0  # binomial tolerance in standard deviations (two-sided p ~ 2e-9 per check)
WEIGHTS = (1.0, 2.0, 3.0)  # with epsilon = 3: eps_j = 0.5, 1.0, 1.5


def _keep(epsilon: float) -> float:
    return math.exp(epsilon) / (1.0 + math.exp(epsilon))


def _double_epsilon(rr: RandomizedResponse) -> RandomizedResponse:
    """The same mechanism sampling with 2 x each eps_j (recording the claim): must be caught."""

    def doubled(self):
        return [_flip_numerator(2.0 * eps) for eps in self.label_epsilons()]

    rr.__class__ = type("DoubleEpsilonRR", (RandomizedResponse,), {"flip_numerators": doubled})
    return rr


def _releases(rr: RandomizedResponse, value: float, n: int, generator) -> torch.Tensor:
    return rr(torch.full((n, rr.num_labels), value), generator=generator)[0]


def _llr(rr: RandomizedResponse, z: torch.Tensor) -> torch.Tensor:
    """log P[z | y = 1...1] - log P[z | y = 0...0] = sum_j eps_j (2 z_j - 1)."""
    return (2.0 * z.double() - 1.0) @ torch.tensor(rr.label_epsilons(), dtype=torch.float64)


def _bit_bound(rr: RandomizedResponse, label: int, seeded) -> float:
    generator = seeded(2024)
    ones = _releases(rr, 1.0, N_AUDIT, generator)[:, label]
    zeros = _releases(rr, 0.0, N_AUDIT, generator)[:, label]
    return epsilon_lower_bound(ones, zeros, (0.5,), failure_probability=FAILURE_PROBABILITY)


def _vector_bound(rr: RandomizedResponse, seeded) -> float:
    generator = seeded(2025)
    ones = _llr(rr, _releases(rr, 1.0, N_AUDIT, generator))
    zeros = _llr(rr, _releases(rr, 0.0, N_AUDIT, generator))
    thresholds = (-1.0, 0.0, 1.0, 2.0, 2.75)  # 2.75: only z = 111 (llr 3) lies above
    return epsilon_lower_bound(ones, zeros, thresholds, failure_probability=FAILURE_PROBABILITY)


# --- audits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [1.0, 3.0])
def test_audit_one_label(epsilon: float, seeded) -> None:
    rr = RandomizedResponse(epsilon=epsilon)
    bound = _bit_bound(rr, 0, seeded)
    assert rr.record().epsilon_per_image == rr.record().epsilon_per_element == epsilon
    assert bound <= epsilon
    assert bound > 0.8 * epsilon  # measured: 0.989 at epsilon 1, 2.979 at epsilon 3


@pytest.mark.parametrize("epsilon", [1.0, 3.0])
def test_audit_one_label_catches_double_epsilon(epsilon: float, seeded) -> None:
    bound = _bit_bound(_double_epsilon(RandomizedResponse(epsilon=epsilon)), 0, seeded)
    assert bound > 1.5 * epsilon  # measured: 1.99 and 5.93


@pytest.mark.parametrize("label", [0, 1, 2])
def test_audit_weighted_label_marginals(label: int, seeded) -> None:
    rr = RandomizedResponse(epsilon=3.0, num_labels=3, weights=WEIGHTS)
    claim = rr.label_epsilons()[label]
    assert claim == pytest.approx((0.5, 1.0, 1.5)[label], rel=1e-15)
    bound = _bit_bound(rr, label, seeded)
    assert claim * 0.8 < bound <= claim  # measured: 0.488, 0.990, 1.489


def test_audit_weighted_vector(seeded) -> None:
    rr = RandomizedResponse(epsilon=3.0, num_labels=3, weights=WEIGHTS)
    bound = _vector_bound(rr, seeded)
    record = rr.record()
    assert record.epsilon_per_image == 3.0 and record.epsilon_per_element == 1.5
    assert bound <= record.epsilon_per_image
    # Sharp, and well above any single label's figure: the vector really spends all of epsilon
    # (measured: 2.952).
    assert bound > 0.8 * record.epsilon_per_image and bound > record.epsilon_per_element + 1.0


def test_audit_weighted_vector_catches_double_epsilon(seeded) -> None:
    rr = _double_epsilon(RandomizedResponse(epsilon=3.0, num_labels=3, weights=WEIGHTS))
    assert _vector_bound(rr, seeded) > 1.5 * 3.0  # true epsilon 6 (measured: 5.84)


# --- exact behaviour ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"epsilon": 1.0}, [1.0]),
        ({"epsilon": 2.0, "num_labels": 4}, [0.5] * 4),
        ({"epsilon": 3.0, "num_labels": 3, "weights": WEIGHTS}, [0.5, 1.0, 1.5]),
        ({"epsilon": 1.0, "num_labels": 2, "weights": [3, 1]}, [0.75, 0.25]),
        ({"epsilon": 1.0, "weights": [0.2]}, [1.0]),
    ],
)
def test_label_epsilons_and_flip_probabilities(kwargs, expected) -> None:
    rr = RandomizedResponse(**kwargs)
    assert rr.label_epsilons() == pytest.approx(expected, rel=1e-15)
    assert math.fsum(rr.label_epsilons()) == pytest.approx(kwargs["epsilon"], rel=1e-15)
    flips = rr.flip_probabilities()
    assert flips == pytest.approx([1.0 / (1.0 + math.exp(e)) for e in expected], rel=1e-15)
    assert [1.0 - f for f in flips] == pytest.approx([_keep(e) for e in expected], rel=1e-15)


def test_flip_probability_does_not_overflow() -> None:
    """A dyadic flip probability rounded up bottoms out at 2^-62 (1 / (1 + e^eps) < 2^-62 beyond
    eps ~ 43): the sampled mechanism is then ln(2^62 - 1) ~ 43-LDP, within any larger claim."""
    for epsilon in (45.0, 700.0, 2000.0, 1e300):
        assert RandomizedResponse(epsilon=epsilon).flip_probabilities() == [2.0**-62]
    assert RandomizedResponse(epsilon=30.0).flip_probabilities()[0] == pytest.approx(
        math.exp(-30.0), rel=1e-5
    )


@pytest.mark.parametrize(
    "epsilon", [1e-12, 1e-3, 0.1, 1 / 3, 0.5, 1.0, 2.0, math.log(3), 5.0, 10.0, 20.0, 44.0, 45.5]
)
def test_flip_probability_is_the_dyadic_just_above(epsilon: float) -> None:
    """f = m / 2^62 >= 1 / (1 + e^eps), so (1 - f) / f <= e^eps (checked with 80-digit decimals,
    independently of the library's 40); m is the smallest such with 53 significant bits; the float
    flip_probabilities() states is f exactly; the record states it too."""
    rr = RandomizedResponse(epsilon=epsilon)
    (flip,) = rr.flip_probabilities()
    m = _flip_numerator(epsilon)
    assert Fraction(flip) == Fraction(m, 2**62)  # exact, no rounding in the statement
    assert rr.record().noise_scale == flip
    with decimal.localcontext() as context:
        context.prec = 80
        e_eps = decimal.Decimal(epsilon).exp()
        ulp = decimal.Decimal(10) ** (e_eps.adjusted() - 79)
        upper, lower = Fraction(e_eps + ulp), Fraction(e_eps - ulp)
    f = Fraction(m, 2**62)
    assert f >= 1 / (1 + lower)  # rounded up: the ratio (1 - f) / f is at most e^eps
    assert (1 - f) / f <= lower
    step = 1 << max(m.bit_length() - 53, 0)
    if m > 1:  # one 53-bit step less would be below the true probability
        assert Fraction(m - step, 2**62) < 1 / (1 + upper)
    if epsilon <= 10:  # and barely above it
        assert f * (1 + upper) - 1 < Fraction(1, 2**50)


def test_flips_are_integer_comparisons(seeded) -> None:
    """Each flip is bernoulli_dyadic(m_j): an integer uniform below m_j, nothing in float."""
    rr = RandomizedResponse(epsilon=3.0, num_labels=3, weights=WEIGHTS)
    y = torch.zeros(1000, 3)
    z, _ = rr(y, generator=seeded(21))
    numerators = torch.tensor([_flip_numerator(e) for e in rr.label_epsilons()])
    expected = bernoulli_dyadic(numerators, (1000, 3), generator=seeded(21))
    assert torch.equal(z, expected.float())


def test_keep_probabilities_empirically(seeded) -> None:
    """Each label is kept with e^eps_j / (1 + e^eps_j), whatever its value, independently."""
    rr = RandomizedResponse(epsilon=3.0, num_labels=3, weights=WEIGHTS)
    generator = seeded(7)
    y = (torch.rand(N_EXACT, 3, generator=generator) < 0.5).float()
    z, _ = rr(y, generator=generator)
    kept = z == y
    keeps = [_keep(e) for e in rr.label_epsilons()]
    for j, k in enumerate(keeps):
        for value in (0.0, 1.0):
            rows = kept[y[:, j] == value, j]
            tolerance = SIGMAS * math.sqrt(k * (1 - k) / rows.numel())
            assert abs(rows.double().mean().item() - k) < tolerance, (j, value)
    # Independence across labels: all three kept with the product of the probabilities.
    joint = math.prod(keeps)
    tolerance = SIGMAS * math.sqrt(joint * (1 - joint) / N_EXACT)
    assert abs(kept.all(1).double().mean().item() - joint) < tolerance


def test_output_dtype_values_and_reproducibility(seeded) -> None:
    rr = RandomizedResponse(epsilon=1.0, num_labels=2)
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    first, _ = rr(y, generator=seeded(3))
    second, _ = rr(y, generator=seeded(3))
    assert torch.equal(first, second) and first.dtype == torch.float64
    assert bool(((first == 0) | (first == 1)).all())
    half, _ = rr(y.half(), generator=seeded(3))
    assert half.dtype == torch.float16 and torch.equal(half.double(), first)


def test_posterior_positive_is_bayes_rule() -> None:
    rr = RandomizedResponse(epsilon=3.0, num_labels=3, weights=WEIGHTS)
    keeps = [_keep(e) for e in rr.label_epsilons()]
    priors = [0.1, 0.5, 0.8]
    noisy = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    by_hand = torch.empty_like(noisy)
    for i in range(3):
        for j in range(3):
            p, k = priors[j], keeps[j]
            seen = (k, 1 - k) if noisy[i, j] == 1 else (1 - k, k)  # P[z | y=1], P[z | y=0]
            by_hand[i, j] = p * seen[0] / (p * seen[0] + (1 - p) * seen[1])
    post = rr.posterior_positive(noisy, prior=priors)
    torch.testing.assert_close(post, by_hand, rtol=1e-13, atol=0)
    # A scalar prior applies to every label; float32 in, float32 out.
    single = rr.posterior_positive(noisy.float(), prior=0.3)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single, rr.posterior_positive(noisy, prior=[0.3] * 3).float())


def test_posterior_positive_edges() -> None:
    rr = RandomizedResponse(epsilon=1.0, num_labels=2)
    noisy = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(
        rr.posterior_positive(noisy, prior=[0.0, 1.0]), torch.tensor([[0.0, 1.0]] * 2)
    )
    torch.testing.assert_close(
        rr.posterior_positive(noisy, prior=0.5), torch.sigmoid(0.5 * (2 * noisy - 1))
    )
    huge = RandomizedResponse(epsilon=5000.0).posterior_positive(
        torch.tensor([[1.0], [0.0]]), prior=0.01
    )
    assert torch.equal(huge, torch.tensor([[1.0], [0.0]]))
    exact = RandomizedResponse(epsilon=math.inf).posterior_positive(noisy[:, :1], prior=0.0)
    assert torch.equal(exact, noisy[:, :1])


def test_posterior_positive_is_calibrated(seeded) -> None:
    """Monte Carlo: the fraction of true positives among rows released as 1 (or 0)."""
    rr = RandomizedResponse(epsilon=1.0)
    generator = seeded(11)
    y = (torch.rand(N_EXACT, 1, generator=generator, dtype=torch.float64) < 0.2).double()
    z, _ = rr(y, generator=generator)
    for value in (0.0, 1.0):
        rows = z[:, 0] == value
        claim = float(rr.posterior_positive(torch.tensor([[value]]), prior=0.2))
        tolerance = SIGMAS * math.sqrt(claim * (1 - claim) / int(rows.sum()))
        assert abs(y[rows, 0].mean().item() - claim) < tolerance


def test_records(seeded) -> None:
    rr = RandomizedResponse(epsilon=2.0, num_labels=4)
    _, record = rr(torch.zeros(5, 4), generator=seeded(0))
    assert (record.mechanism, record.d, record.clip, record.norm) == (
        "randomized_response",
        4,
        None,
        "hamming",
    )
    assert (record.sensitivity, record.delta, record.noise) == (1.0, 0.0, "randomized_response")
    assert record.epsilon_per_image == 2.0 and record.epsilon_per_element == 0.5
    assert record.noise_scale == pytest.approx(1.0 / (1.0 + math.exp(0.5)), rel=1e-15)
    assert record.accounting == "per_image" and record.parts == {}
    assert record.noise_source == SEEDED and not record.private
    assert rr.record() == rr.record((4,)) and rr.record().private
    weighted = RandomizedResponse(epsilon=3.0, num_labels=3, weights=WEIGHTS).record()
    assert math.isnan(weighted.noise_scale) and weighted.epsilon_per_element == 1.5
    # Equal weights are the default split, noise scale included.
    equal = RandomizedResponse(epsilon=3.0, num_labels=3, weights=[2, 2, 2]).record()
    assert equal == RandomizedResponse(epsilon=3.0, num_labels=3).record()
    with pytest.raises(ValueError, match="shape"):
        rr.record((3,))


def test_generator_handling(caplog) -> None:
    rr = RandomizedResponse(epsilon=1.0, num_labels=8)
    y = torch.zeros(4, 8)
    first, record = rr(y)
    assert record.noise_source == OS_ENTROPY and record.private
    second, _ = rr(y, generator=noise_generator()[0])
    assert not torch.equal(first, second)  # 32 flips each at p = 0.47: equal w.p. ~2^-32
    plain = torch.Generator().manual_seed(0)
    with caplog.at_level(logging.WARNING):
        _, unverified = rr(y, generator=plain)
    assert unverified.noise_source == UNVERIFIED and not unverified.private
    _, stated = rr(y, generator=plain, noise_source=OS_ENTROPY)
    assert stated.private
    with pytest.raises(ValueError, match="os_entropy"):
        rr(y, generator=noise_generator(noise_seed=1)[0], noise_source=OS_ENTROPY)
    with pytest.raises(TypeError):
        rr(y, generator=0)  # type: ignore[arg-type]


def test_infinite_epsilon_is_identity(seeded) -> None:
    rr = RandomizedResponse(epsilon=math.inf, num_labels=2, weights=(1.0, 3.0))
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    out, record = rr(y, generator=seeded(0))
    assert torch.equal(out, y) and out is not y
    assert record.noise == "none" and record.noise_scale == 0.0 and not record.private
    assert record.epsilon_per_image == record.epsilon_per_element == math.inf
    assert record.norm is None and record.sensitivity is None
    assert rr.flip_probabilities() == [0.0, 0.0]
    assert not rr.record().private  # no noise, whatever the source


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epsilon", "error"),
    [
        *[("1", TypeError), (None, TypeError), (True, TypeError), (torch.tensor(1.0), TypeError)],
        *[(math.nan, ValueError), (0.0, ValueError), (-1.0, ValueError), (-math.inf, ValueError)],
    ],
)
def test_bad_epsilon(epsilon, error) -> None:
    with pytest.raises(error):
        RandomizedResponse(epsilon=epsilon)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"num_labels": 0}, ValueError),
        ({"num_labels": 2.0}, TypeError),
        ({"num_labels": True}, TypeError),
        ({"num_labels": 2, "weights": [1.0]}, ValueError),
        ({"num_labels": 2, "weights": [1.0, 2.0, 3.0]}, ValueError),
        ({"num_labels": 2, "weights": [1.0, -1.0]}, ValueError),
        ({"num_labels": 2, "weights": [1.0, 0.0]}, ValueError),
        ({"num_labels": 2, "weights": [1.0, math.nan]}, ValueError),
        ({"num_labels": 2, "weights": [1.0, math.inf]}, ValueError),
        ({"num_labels": 2, "weights": [1.0, True]}, TypeError),
        ({"num_labels": 2, "weights": [1.0, "2"]}, TypeError),
        ({"num_labels": 2, "weights": "12"}, TypeError),
        ({"num_labels": 1, "weights": 1.0}, TypeError),
    ],
)
def test_bad_arguments(kwargs, error) -> None:
    with pytest.raises(error):
        RandomizedResponse(epsilon=1.0, **kwargs)


def test_keyword_only_and_repr() -> None:
    with pytest.raises(TypeError):
        RandomizedResponse(1.0)  # type: ignore[misc]
    assert repr(RandomizedResponse(epsilon=2)) == (
        "RandomizedResponse(epsilon=2.0, num_labels=1, weights=None)"
    )
    assert repr(RandomizedResponse(epsilon=1.0, num_labels=2, weights=[1, 3])) == (
        "RandomizedResponse(epsilon=1.0, num_labels=2, weights=(1.0, 3.0))"
    )


@pytest.mark.parametrize(
    ("y", "error", "match"),
    [
        (torch.tensor([[0.0, 0.5]]), ValueError, "exactly 0 or 1, got 0.5"),
        (torch.tensor([[1.0, math.nan]]), ValueError, "exactly 0 or 1, got nan"),
        (torch.tensor([[math.inf, 0.0]]), ValueError, "exactly 0 or 1, got inf"),
        (torch.tensor([[2.0, -1.0]]), ValueError, r"got 2.0 \(2 entries"),
        (torch.tensor([[0, 1]]), TypeError, "float tensor"),
        (torch.tensor([[True, False]]), TypeError, "float tensor"),
        ([[0.0, 1.0]], TypeError, "float tensor"),
        (torch.tensor([0.0, 1.0]), ValueError, r"\[B, 2\]"),
        (torch.zeros(2, 3), ValueError, r"\[B, 2\]"),
        (torch.zeros(0, 2), ValueError, "non-empty"),
    ],
)
def test_bad_labels(y, error, match, seeded) -> None:
    rr = RandomizedResponse(epsilon=1.0, num_labels=2)
    with pytest.raises(error, match=match):
        rr(y, generator=seeded(0))
    with pytest.raises(error, match=match):
        rr.posterior_positive(y, prior=0.5)


@pytest.mark.parametrize(
    ("prior", "error"),
    [
        (1.5, ValueError),
        (-0.1, ValueError),
        (math.nan, ValueError),
        (True, TypeError),
        ("0.5", TypeError),
        ([0.5], ValueError),
        ([0.5, 0.5, 0.5], ValueError),
        ([0.5, 2.0], ValueError),
        (None, TypeError),
    ],
)
def test_bad_prior(prior, error) -> None:
    with pytest.raises(error):
        RandomizedResponse(epsilon=1.0, num_labels=2).posterior_positive(
            torch.zeros(1, 2), prior=prior
        )


def test_not_a_continuous_noise_mechanism() -> None:
    """MECHANISMS maps config groups to continuous-noise mechanisms; the label channel is apart."""
    assert RandomizedResponse.name not in MECHANISMS
    assert RandomizedResponse not in MECHANISMS.values()
